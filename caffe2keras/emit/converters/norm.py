"""BatchNorm (alone, or fused with the Scale after it), Scale, Bias, LRN and MVN.

Axis rule: a 4-D Caffe blob is NHWC in Keras (Caffe axis 1 is Keras axis 3); other
ranks keep Caffe's axis order.
"""
from __future__ import annotations

import warnings

import numpy as np

from ... import layout
from ...errors import CaffeWarning
from ...shapes import (
    canonical_axis,
    check_bottoms,
    shape_fail,
)
from ..plan import FUSED_BN_SCALE
from ..registry import Fillers, Keras2H5, register_converter

# ---------------------------------------------------------------- shapes (Caffe NCHW)

def mvn_shape(layer, bottoms):
    # Caffe's MVN reshapes its top with the legacy 4-D accessors: (N, C, H, W), 1-padded.
    check_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    if not 1 <= len(shape) <= 4:
        shape_fail(layer, f"MVN takes 1-D to 4-D inputs (Caffe's legacy accessors), found "
                     f"{list(shape)}")
    return [shape + (1,) * (4 - len(shape))], []


def lrn_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    p = layer.param("lrn_param")
    if p.local_size % 2 == 0:
        shape_fail(layer, f"LRN local_size must be odd, found {p.local_size}")
    if len(bottoms[0]) != 4:
        shape_fail(layer, f"LRN needs a 4-D input, found {list(bottoms[0])}")
    return [tuple(bottoms[0])], []


def _channels(shape):
    return shape[1] if len(shape) > 1 else 1


def batch_norm_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    c = _channels(bottoms[0])
    return [tuple(bottoms[0])], [(c,), (c,), (1,)]


def _scale_shape(layer, p, shape, bottoms):
    if len(bottoms) == 2:
        other = tuple(bottoms[1])
        axis = 0 if not other else canonical_axis(layer, p.axis, len(shape))
        if tuple(shape[axis:axis + len(other)]) != other:
            shape_fail(layer, f"second bottom {list(other)} does not match input {list(shape)} "
                         f"from axis {axis}")
        return other
    axis = canonical_axis(layer, p.axis, len(shape)) if shape else 0
    num = p.num_axes
    if num < -1:
        shape_fail(layer, f"num_axes must be >= -1, found {num}")
    end = len(shape) if num == -1 else axis + num
    if end > len(shape):
        shape_fail(layer, f"axis {axis} + num_axes {num} exceeds the input's {len(shape)} axes")
    return tuple(shape[axis:end])


def scale_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1, 2)
    p = layer.param("scale_param")
    sshape = _scale_shape(layer, p, tuple(bottoms[0]), bottoms)
    params = [] if len(bottoms) == 2 else [sshape]
    if p.bias_term:
        params.append(sshape)
    return [tuple(bottoms[0])], params


def bias_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1, 2)
    p = layer.param("bias_param")
    bshape = _scale_shape(layer, p, tuple(bottoms[0]), bottoms)
    return [tuple(bottoms[0])], ([] if len(bottoms) == 2 else [bshape])


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
        ctx.fail(f"BatchNorm needs a channel axis; input is {list(shape)}")
    if p.has("use_global_stats") and not p.use_global_stats:
        warnings.warn(
            f"{ctx.graph.net.path}: layer '{ctx.layer.name}': use_global_stats is false, so "
            f"Caffe normalizes each test batch by its own statistics; the Keras model uses "
            f"the stored statistics at inference (as Caffe does by default), and batch "
            f"statistics when training", CaffeWarning, stacklevel=2)
    return keras.layers.BatchNormalization(
        axis=layout.channel_axis(len(shape)), momentum=p.moving_average_fraction, epsilon=p.eps,
        center=center, scale=scale, name=ctx.name)


def _batch_norm_check(layer):
    if layer.param("batch_norm_param").fused_relu:
        return ("batch_norm_param fused_relu is not supported; write a ReLU layer after "
                "the BatchNorm (and its Scale) instead")
    return None


def batch_norm_weights(ctx):
    return {ctx.name: list(_bn_stats(ctx))}


def _batch_norm_fresh(layer, param_shapes, rng):
    """Mean 0, variance 1, scale factor 1: Keras's own start."""
    c = param_shapes[0]
    return [np.zeros(c, np.float32), np.ones(c, np.float32), np.ones((1,), np.float32)]


def _batch_norm_k2(ctx):
    """Keras 2's BatchNormalization always holds gamma, beta, moving mean and variance:
    Caffe's stored sums divided by its scale factor (0 -> 0, in float32 as Caffe computes
    it), gamma and beta from the fused Scale (1 and 0 without one)."""
    mean, var, factor = ctx.blobs[:3]
    f = np.float32(np.asarray(factor).reshape(-1)[0])
    s = np.float32(0) if f == 0 else np.float32(1) / f
    mean = np.asarray(mean, np.float32).reshape(-1) * s
    var = np.asarray(var, np.float32).reshape(-1) * s
    if len(ctx.nodes) > 1:
        sc = ctx.nodes[1].layer.blobs
        gamma = np.asarray(sc[0], np.float32).reshape(-1)
        beta = np.asarray(sc[1], np.float32).reshape(-1) if len(sc) > 1 else \
            np.zeros_like(gamma)
    else:
        gamma, beta = np.ones_like(mean), np.zeros_like(mean)
    return {ctx.name: [gamma, beta, mean, var]}


_BN_K2 = Keras2H5(_batch_norm_k2, lambda ctx, n: ["gamma", "beta", "moving_mean",
                                                 "moving_variance"], needs_shape=False)


@register_converter("BatchNorm", weights=batch_norm_weights, shape=batch_norm_shape,
                    check=_batch_norm_check, keras_classes="BatchNormalization",
                    fillers=_batch_norm_fresh, keras2_h5=_BN_K2)
def batch_norm(ctx):
    return [ctx.add(_batch_norm_layer(ctx, center=False, scale=False), ctx.inputs[0])]


def batch_norm_scale_weights(ctx):
    mean, var = _bn_stats(ctx)
    sc = ctx.nodes[1].layer.blobs
    gamma = np.asarray(sc[0], dtype=np.float32).reshape(-1)
    beta = np.asarray(sc[1], dtype=np.float32).reshape(-1) if len(sc) > 1 else \
        np.zeros_like(gamma)
    return {ctx.name: [gamma, beta, mean, var]}


# A step, not a Caffe type: a BatchNorm with the Scale after it (plan.py fuses them; its
# layers' shapes, checks and fillers are those of the BatchNorm and Scale records).
@register_converter(FUSED_BN_SCALE, weights=batch_norm_scale_weights,
                    keras_classes="BatchNormalization", keras2_h5=_BN_K2)
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
    return sorted(range(len(span)), key=lambda j: layout.keras_axis(span[j], rank))


def _keras_axes(ctx, p, second_input):
    """Keras input axes the factor runs along, in the factor's own axis order."""
    rank = len(ctx.in_shapes[0])
    span = _span(ctx, p)
    if not second_input:
        return sorted(layout.keras_axis(c, rank) for c in span)
    # The second input's Keras layout: NHWC if it is 4-D itself, else Caffe order.
    other_rank = len(span)
    return [layout.keras_axis(span[layout.caffe_axis(j, other_rank)], rank)
            for j in range(other_rank)]


def _learned(ctx, p, blob):
    return np.asarray(blob).reshape([ctx.in_shapes[0][c] for c in _span(ctx, p)]) \
        .transpose(_learned_order(ctx, p))


def _check_learned(ctx, p):
    if 0 in _span(ctx, p):
        ctx.fail(f"a learned {ctx.layer.type} along the batch axis (axis {p.axis}) would "
                 f"fix the batch size; a Keras model keeps it free")


def scale_weights(ctx):
    p = ctx.param("scale_param")
    return {ctx.name: [_learned(ctx, p, b) for b in ctx.blobs]}


@register_converter("Scale", weights=scale_weights, shape=scale_shape, keras_classes="Scale",
                    fillers=Fillers("scale_param", ("filler", "bias_filler"),
                                    unset=("one", "zero")))
def scale(ctx):
    from ..layers.scale import Scale

    p = ctx.param("scale_param")
    two = len(ctx.inputs) == 2
    if not two or p.bias_term:
        _check_learned(ctx, p)
    layer = Scale(axes=_keras_axes(ctx, p, two), use_bias=p.bias_term, name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs) if two else ctx.inputs[0])]


def bias_weights(ctx):
    p = ctx.param("bias_param")
    return {ctx.name: [_learned(ctx, p, b) for b in ctx.blobs]}


@register_converter("Bias", weights=bias_weights, shape=bias_shape, keras_classes="Bias",
                    fillers=Fillers("bias_param", ("filler",), unset=("zero",)))
def bias(ctx):
    from ..layers.scale import Bias

    p = ctx.param("bias_param")
    two = len(ctx.inputs) == 2
    if not two:
        _check_learned(ctx, p)
    layer = Bias(axes=_keras_axes(ctx, p, two), name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs) if two else ctx.inputs[0])]


# ---------------------------------------------------------------- LRN and MVN

@register_converter("LRN", shape=lrn_shape, keras_classes=())
def lrn(ctx):
    from ..layers.lrn import LRNAcrossChannels, LRNWithinChannel

    p = ctx.param("lrn_param")
    if p.norm_region == "WITHIN_CHANNEL":
        layer = LRNWithinChannel(p.local_size, alpha=p.alpha, beta=p.beta, name=ctx.name)
    else:
        layer = LRNAcrossChannels(p.local_size, alpha=p.alpha, beta=p.beta, k=p.k,
                                  axis=-1, name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


@register_converter("MVN", shape=mvn_shape, keras_classes=())
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
