"""The fork `BN` layer (SegNet, ENet, PSPNet and their descendants) and SENet's Axpy:
shape function, weights, fresh weights and converter of each.

`BN` comes in families that share the type name; the bn_param fields tell them apart
(the blob count in the caffemodel must then agree):

- SegNet (alexgkendall/caffe-segnet, src/caffe/layers/bn_layer.cpp at 03d1e9f): bn_param
  { bn_mode, scale_filler, shift_filler }, blobs scale and shift (1, C, 1, 1).
  bn_mode INFERENCE (the statistics folded into scale and shift by SegNet's
  compute_bn_statistics.py): ``scale * x + shift`` in training and test alike, so it
  becomes our per-channel Scale with bias. bn_mode LEARN (the default): Caffe
  normalizes by the batch's own statistics in both phases (E[x^2] - E[x]^2, eps 1e-9;
  nothing is stored), so it becomes BatchStatNormalization, which does the same.
- PSPNet (hszhao/PSPNet, src/caffe/layers/bn_layer.cpp at c479f4f, from yjxiong/caffe):
  bn_param { slope_filler, bias_filler, momentum, eps, frozen }, blobs slope, bias,
  mean, variance (1, C, 1, 1). At test time ``slope * (x - mean) / sqrt(var + eps) +
  bias`` from the stored statistics; training uses batch statistics and updates the
  stored ones as ``momentum * stored + (1 - momentum) * batch``: exactly Keras's
  BatchNormalization (momentum, epsilon alike). ``frozen: true`` (fixed statistics and
  parameters in training too) makes it non-trainable.
- The PSPNet-era variant (the same file at 88d0b3e): bn_param { scale_filler,
  shift_filler, var_eps, moving_average, decay, axis }, the same four blobs. With
  moving_average, test time uses the stored statistics (BatchNormalization, epsilon
  var_eps, momentum 1 - decay); without, the batch's (BatchStatNormalization).

A BN layer with no bn_param field of either kind is read as SegNet's (LEARN mode).
"""
from __future__ import annotations

import numpy as np

from ...shapes import shape_fail
from ..registry import register_converter

SEGNET, PSPNET, VARIANT = "segnet", "pspnet", "pspnet-variant"
_PSPNET_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen")
_VARIANT_FIELDS = ("var_eps", "moving_average", "decay", "axis")
SEGNET_EPS = 1e-9   # hard-coded in SegNet's bn_layer.cpp


def bn_family(layer):
    """SEGNET, PSPNET or VARIANT, from the bn_param fields the layer sets."""
    p = layer.param("bn_param")
    variant = [f for f in _VARIANT_FIELDS if p.has(f)]
    psp = [f for f in _PSPNET_FIELDS if p.has(f)]
    segnet = [f for f in ("bn_mode",) if p.has(f)]
    if segnet and (psp or variant):
        shape_fail(layer, f"bn_param mixes SegNet's bn_mode with {', '.join(psp + variant)} "
                           f"of PSPNet's BN; no fork's BN layer takes both")
    if variant:
        return VARIANT
    return PSPNET if psp else SEGNET


def bn_shape(layer, bottoms):
    if len(bottoms) != 1:
        shape_fail(layer, f"BN takes 1 bottom, found {len(bottoms)}")
    shape = tuple(bottoms[0])
    if not 2 <= len(shape) <= 4:
        shape_fail(layer, f"BN needs a 2-D to 4-D input with channels on axis 1 (the "
                           f"forks read num/channels/height/width), found {list(shape)}")
    family = bn_family(layer)
    if family == VARIANT and layer.param("bn_param").axis != 1:
        shape_fail(layer, f"bn_param axis {layer.param('bn_param').axis} is not supported "
                           f"(only the channel axis 1)")
    c = shape[1]
    blob = (1, c, 1, 1)
    stats = [(1, c, 1, 1)] * 2
    tops = [shape]
    if family == SEGNET:
        if len(layer.tops) > 3:
            shape_fail(layer, f"SegNet's BN has at most 3 tops, found {len(layer.tops)}")
        tops += stats[:len(layer.tops) - 1]
        return tops, [blob, blob]
    if len(layer.tops) != 1:
        shape_fail(layer, f"PSPNet's BN has 1 top, found {len(layer.tops)}")
    return tops, [blob] * 4


def _learn_mode(layer):
    return layer.param("bn_param").bn_mode != "INFERENCE"


def bn_fresh(layer, param_shapes, rng):
    """SegNet: scale_filler, shift_filler; PSPNet: slope_filler, bias_filler, mean 0,
    variance 1 (Caffe starts a frozen layer there; a trainable one at 0, which Keras's
    BatchNormalization would divide by at inference before any training). Unset fillers:
    scale 1, shift 0, as Keras's BatchNormalization starts."""
    from ...fillers import fill

    p = layer.param("bn_param")
    family = bn_family(layer)
    names = ("slope_filler", "bias_filler") if family == PSPNET else \
        ("scale_filler", "shift_filler")
    blobs = []
    for field, start, shape in zip(names, (1.0, 0.0), param_shapes):
        blobs.append(fill(getattr(p, field), shape, rng, layer.name) if p.has(field)
                     else np.full(shape, start, np.float32))
    if family != SEGNET:
        blobs += [np.zeros(param_shapes[2], np.float32), np.ones(param_shapes[3], np.float32)]
    return blobs


def bn_weights(ctx):
    """Per-channel vectors: [scale, shift] (SegNet) or Keras BatchNormalization's [gamma,
    beta, moving_mean, moving_variance] (PSPNet), whatever Keras layer holds them."""
    return {ctx.name: [np.asarray(b, np.float32).reshape(-1) for b in ctx.blobs]}


def _channel_axis(shape):
    return 3 if len(shape) == 4 else 1


def bn(ctx):
    import keras

    from ..layers.scale import Scale
    from ..layers.zoo_bn import BatchStatNormalization

    p = ctx.param("bn_param")
    shape = ctx.in_shapes[0]
    axis = _channel_axis(shape)
    family = bn_family(ctx.layer)
    x = ctx.inputs[0]
    if family == SEGNET:
        if len(ctx.step.outputs) > 1:
            ctx.fail("SegNet BN's extra tops (the batch mean and variance) are not "
                     "supported; remove them from the deploy prototxt")
        if _learn_mode(ctx.layer):
            layer = BatchStatNormalization(axis=axis, epsilon=SEGNET_EPS, centered=False,
                                           name=ctx.name)
        else:
            layer = Scale(axes=[axis], use_bias=True, name=ctx.name)
        return [ctx.add(layer, x)]
    if family == VARIANT and not p.moving_average:
        return [ctx.add(BatchStatNormalization(axis=axis, epsilon=p.var_eps, centered=True,
                                               name=ctx.name), x)]
    momentum, eps = (p.momentum, p.eps) if family == PSPNET else (1.0 - p.decay, p.var_eps)
    layer = keras.layers.BatchNormalization(axis=axis, momentum=momentum, epsilon=eps,
                                            name=ctx.name)
    out = ctx.add(layer, x)
    if family == PSPNET and p.frozen:
        layer.trainable = False   # Caffe's frozen: stored statistics, no updates
    return [out]


def bn_classes(ctx):
    family = bn_family(ctx.layer)
    if family == SEGNET:
        cls = "BatchStatNormalization" if _learn_mode(ctx.layer) else "Scale"
    elif family == VARIANT and not ctx.param("bn_param").moving_average:
        cls = "BatchStatNormalization"
    else:
        cls = "BatchNormalization"
    return [(ctx.name, cls)]


def bn_note(layer):
    p = layer.param("bn_param")
    family = bn_family(layer)
    if family == SEGNET and _learn_mode(layer):
        return ("SegNet's BN in LEARN mode: Caffe normalizes by each batch's own "
                "statistics, at test time too (no stored ones); so does the converted model")
    if family == SEGNET:
        return "SegNet's BN in INFERENCE mode (statistics folded in): scale * x + shift"
    if family == VARIANT and not p.moving_average:
        return ("PSPNet-era BN without moving_average: normalizes by each batch's own "
                "statistics, at test time too")
    frozen = ", frozen: not trainable" if family == PSPNET and p.frozen else ""
    return f"PSPNet's BN (slope, bias, mean, variance): Keras BatchNormalization{frozen}"


register_converter("BN", weights=bn_weights, shape=bn_shape, fillers=bn_fresh,
                   keras_classes=bn_classes, note=bn_note)(bn)


# ---------------------------------------------------------------- Axpy (SENet)
# hujie-frank/SENet, src/caffe/layers/axpy_layer.cpp at 577864e: bottoms a (N, C, 1, 1),
# x and y (N, C, ...); top = a * x + y, a broadcast over x's spatial axes.

def axpy_shape(layer, bottoms):
    if len(bottoms) != 3:
        shape_fail(layer, f"Axpy takes 3 bottoms (a, x, y), found {len(bottoms)}")
    a, x, y = (tuple(b) for b in bottoms)
    if len(x) < 2 or a[:2] != x[:2] or (len(a) == 4 and a[2:] != (1, 1)) or len(a) not in (2, 4):
        shape_fail(layer, f"a must be (N, C, 1, 1) (or (N, C)) for x {list(x)}, found "
                           f"{list(a)}")
    if x != y:
        shape_fail(layer, f"x {list(x)} and y {list(y)} must have one shape")
    return [x], []


@register_converter("Axpy", shape=axpy_shape, keras_classes=())
def axpy(ctx):
    from ..layers.zoo_bn import Axpy

    layer = Axpy(x_nhwc=len(ctx.in_shapes[1]) == 4, name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs))]
