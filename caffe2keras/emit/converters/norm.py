"""BatchNorm (alone, or fused with the Scale after it), Scale, Bias, LRN and MVN.

Axis rule: a 4-D Caffe blob is NHWC in Keras (Caffe axis 1 is Keras axis 3); other
ranks keep Caffe's axis order.
"""
from __future__ import annotations

import warnings

import numpy as np

from ...errors import CaffeFormatError, CaffeWarning
from ..plan import FUSED_BN_SCALE
from ..registry import register_converter, register_weights


def _fail(ctx, msg):
    raise CaffeFormatError(msg, path=ctx.graph.net.path, layer=ctx.layer.name)


def keras_axis(caffe_axis, rank):
    """Keras axis of a Caffe axis of a rank-``rank`` blob."""
    return (0, 3, 1, 2)[caffe_axis] if rank == 4 else caffe_axis


def caffe_axis(keras_ax, rank):
    """Caffe axis held by a Keras axis of a rank-``rank`` blob."""
    return (0, 2, 3, 1)[keras_ax] if rank == 4 else keras_ax


def _channel_axis(rank):
    return -1 if rank == 4 else 1


# ---------------------------------------------------------------- BatchNorm (+ Scale)

def _bn_stats(ctx):
    """Caffe's global mean and variance: the stored sums divided by the scale factor
    (a factor of 0 gives 0, as in Caffe)."""
    mean, var, factor = ctx.blobs[:3]
    f = float(np.asarray(factor).reshape(-1)[0])
    scale = 0.0 if f == 0 else 1.0 / f
    mean = np.asarray(mean, dtype=np.float32).reshape(-1) * np.float32(scale)
    var = np.asarray(var, dtype=np.float32).reshape(-1) * np.float32(scale)
    return mean, var


def _batch_norm_layer(ctx, center, scale):
    import keras

    p = ctx.param("batch_norm_param")
    shape = ctx.in_shapes[0]
    if len(shape) < 2:
        _fail(ctx, f"BatchNorm needs a channel axis; input is {list(shape)}")
    if p.fused_relu:
        _fail(ctx, "batch_norm_param fused_relu is not supported; write a ReLU layer "
                   "after the BatchNorm (and its Scale) instead")
    if p.has("use_global_stats") and not p.use_global_stats:
        warnings.warn(
            f"{ctx.graph.net.path}: layer '{ctx.layer.name}': use_global_stats is false, so "
            f"Caffe normalizes each test batch by its own statistics; the Keras model uses "
            f"the stored statistics at inference (as Caffe does by default), and batch "
            f"statistics when training", CaffeWarning, stacklevel=2)
    return keras.layers.BatchNormalization(
        axis=_channel_axis(len(shape)), momentum=p.moving_average_fraction, epsilon=p.eps,
        center=center, scale=scale, name=ctx.name)


@register_weights("BatchNorm")
def batch_norm_weights(ctx):
    return {ctx.name: list(_bn_stats(ctx))}


@register_converter("BatchNorm")
def batch_norm(ctx):
    return [ctx.add(_batch_norm_layer(ctx, center=False, scale=False), ctx.inputs[0])]


@register_weights(FUSED_BN_SCALE)
def batch_norm_scale_weights(ctx):
    mean, var = _bn_stats(ctx)
    sc = ctx.nodes[1].layer.blobs
    gamma = np.asarray(sc[0], dtype=np.float32).reshape(-1)
    beta = np.asarray(sc[1], dtype=np.float32).reshape(-1) if len(sc) > 1 else \
        np.zeros_like(gamma)
    return {ctx.name: [gamma, beta, mean, var]}


@register_converter(FUSED_BN_SCALE)
def batch_norm_scale(ctx):
    # One BatchNormalization with gamma/beta: what Keras users expect to fine-tune.
    # Without a Scale bias, beta starts at 0 (the same output).
    return [ctx.add(_batch_norm_layer(ctx, center=True, scale=True), ctx.inputs[0])]


# ---------------------------------------------------------------- Scale and Bias

def _span(ctx, p):
    """Caffe axes the factor covers (axis .. axis + its rank)."""
    shape = ctx.in_shapes[0]
    rank = len(shape)
    if len(ctx.in_shapes) == 2:
        other = ctx.in_shapes[1]
        axis = 0 if not other else (p.axis + rank if p.axis < 0 else p.axis)
        return list(range(axis, axis + len(other)))
    axis = p.axis + rank if p.axis < 0 else p.axis
    end = rank if p.num_axes == -1 else axis + p.num_axes
    return list(range(axis, end))


def _learned_order(ctx, p):
    """Transpose from a Caffe-layout parameter to the Keras layer's (input axis order)."""
    rank = len(ctx.in_shapes[0])
    span = _span(ctx, p)
    return sorted(range(len(span)), key=lambda j: keras_axis(span[j], rank))


def _keras_axes(ctx, p, second_input):
    """Keras input axes the factor runs along, in the factor's own axis order."""
    rank = len(ctx.in_shapes[0])
    span = _span(ctx, p)
    if not second_input:
        return sorted(keras_axis(c, rank) for c in span)
    # The second input's Keras layout: NHWC if it is 4-D itself, else Caffe order.
    other_rank = len(span)
    return [keras_axis(span[caffe_axis(j, other_rank)], rank)
            for j in range(other_rank)]


def _learned(ctx, p, blob):
    return np.asarray(blob).reshape([ctx.in_shapes[0][c] for c in _span(ctx, p)]) \
        .transpose(_learned_order(ctx, p))


def _check_learned(ctx, p):
    if 0 in _span(ctx, p):
        _fail(ctx, f"a learned {ctx.layer.type} along the batch axis (axis {p.axis}) would "
                   f"fix the batch size; a Keras model keeps it free")


@register_weights("Scale")
def scale_weights(ctx):
    p = ctx.param("scale_param")
    return {ctx.name: [_learned(ctx, p, b) for b in ctx.blobs]}


@register_converter("Scale")
def scale(ctx):
    from ..layers.scale import Scale

    p = ctx.param("scale_param")
    two = len(ctx.inputs) == 2
    if not two or p.bias_term:
        _check_learned(ctx, p)
    layer = Scale(axes=_keras_axes(ctx, p, two), use_bias=p.bias_term, name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs) if two else ctx.inputs[0])]


@register_weights("Bias")
def bias_weights(ctx):
    p = ctx.param("bias_param")
    return {ctx.name: [_learned(ctx, p, b) for b in ctx.blobs]}


@register_converter("Bias")
def bias(ctx):
    from ..layers.scale import Bias

    p = ctx.param("bias_param")
    two = len(ctx.inputs) == 2
    if not two:
        _check_learned(ctx, p)
    layer = Bias(axes=_keras_axes(ctx, p, two), name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs) if two else ctx.inputs[0])]


# ---------------------------------------------------------------- LRN and MVN

@register_converter("LRN")
def lrn(ctx):
    from ..layers.lrn import LRNAcrossChannels, LRNWithinChannel

    p = ctx.param("lrn_param")
    if p.norm_region == "WITHIN_CHANNEL":
        layer = LRNWithinChannel(p.local_size, alpha=p.alpha, beta=p.beta, name=ctx.name)
    else:
        layer = LRNAcrossChannels(p.local_size, alpha=p.alpha, beta=p.beta, k=p.k,
                                  axis=-1, name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


@register_converter("MVN")
def mvn(ctx):
    import keras

    from ..layers.lrn import MVN

    p = ctx.param("mvn_param")
    shape = ctx.in_shapes[0]
    x = ctx.inputs[0]
    if len(shape) < 4:
        # Caffe's top is the legacy 4-D (N, C, H, W) with 1s padded; as NHWC that is
        # (N, L, 1, C) for a (N, C, L) bottom.
        if len(shape) == 3:
            x = ctx.add(keras.layers.Permute((2, 1), name=ctx.sub_name("to_nhwc")), x)
        _, c, h, w = ctx.out_shapes[0]
        x = ctx.add(keras.layers.Reshape((h, w, c), name=ctx.sub_name("to_4d")), x)
    axes = [1, 2, 3] if p.across_channels else [1, 2]
    layer = MVN(axes=axes, normalize_variance=p.normalize_variance, epsilon=p.eps,
                name=ctx.name)
    return [ctx.add(layer, x)]
