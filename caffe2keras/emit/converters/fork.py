"""Layer types of popular Caffe forks: ReLU6, Upsample (YOLO/brocolli nearest neighbour,
SegNet max-unpooling), Interp (DeepLab v2 / PSPNet), ShuffleChannel (ShuffleNet).

(DepthwiseConvolution / ConvolutionDepthwise are grouped convolutions: see conv.py.)
"""
from __future__ import annotations

from ...errors import CaffeFormatError
from ...shapes import interp_size
from ..registry import register_converter


def _fail(ctx, msg):
    raise CaffeFormatError(msg, path=ctx.graph.net.path, position=ctx.layer.position or None,
                           layer=ctx.layer.name)


def _channel_axis(shape):
    return -1 if len(shape) == 4 else 1   # 4-D blobs are NHWC in Keras


@register_converter("ReLU6")
def relu6(ctx):
    """min(max(x, 0) + negative_slope * min(x, 0), threshold) (brocolli's relu6_layer)."""
    import keras

    p = ctx.param("relu6_param")
    slope, cap = float(p.negative_slope), float(p.threshold)
    if slope < 0 or cap < 0:
        _fail(ctx, f"ReLU6 with negative_slope {slope} and threshold {cap} is not supported "
                   f"(both must be >= 0)")
    layer = keras.layers.ReLU(max_value=cap, negative_slope=slope, name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


@register_converter("Upsample")
def upsample(ctx):
    """One bottom: nearest neighbour by an integer scale (YOLO forks, brocolli-caffe:
    top[y, x] = bottom[y / scale, x / scale]). Two bottoms: SegNet's unpooling of the
    values into the positions of a MAX pooling mask."""
    import keras

    from ..layers.fork import MaxUnpool

    p = ctx.param("upsample_param")
    shape, out = ctx.in_shapes[0], ctx.out_shapes[0]
    if len(shape) != 4:
        _fail(ctx, f"Upsample needs a 4-D input, found {list(shape)}")
    if len(ctx.inputs) == 2:
        if tuple(ctx.in_shapes[1]) != tuple(shape):
            _fail(ctx, f"the mask bottom {list(ctx.in_shapes[1])} must match the data "
                       f"bottom {list(shape)}")
        layer = MaxUnpool(size_out=out[2:], name=ctx.name)
        return [ctx.add(layer, list(ctx.inputs))]
    if not (p.has("scale") or p.has("scale_h")):
        _fail(ctx, "a one-bottom Upsample needs scale: the forks disagree on its default "
                   "(YOLO/brocolli 1, SegNet 2)")
    sh, sw = out[2] // shape[2], out[3] // shape[3]
    if (shape[2] * sh, shape[3] * sw) != tuple(out[2:]) or min(sh, sw) < 1:
        _fail(ctx, f"a one-bottom (nearest neighbour) Upsample scales by whole factors; "
                   f"{shape[2]}x{shape[3]} -> {out[2]}x{out[3]} needs the SegNet form "
                   f"(a second, mask bottom)")
    layer = keras.layers.UpSampling2D(size=(sh, sw), interpolation="nearest", name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


@register_converter("Interp")
def interp(ctx):
    """Bilinear resize with aligned corners (DeepLab v2 / PSPNet interp_layer.cpp)."""
    from ..layers.fork import Interp

    p = ctx.param("interp_param")
    shape = ctx.in_shapes[0]
    if len(shape) != 4:
        _fail(ctx, f"Interp needs a 4-D input, found {list(shape)}")
    if p.pad_beg > 0 or p.pad_end > 0:
        _fail(ctx, f"Interp supports only non-positive pad_beg/pad_end (cropping), as "
                   f"Caffe does; found {p.pad_beg}, {p.pad_end}")
    specs = (p.has("zoom_factor") + p.has("shrink_factor")
             + (p.has("height") and p.has("width")) + (len(ctx.inputs) == 2))
    if specs == 0:
        _fail(ctx, "interp_param needs zoom_factor, shrink_factor, height and width, or a "
                   "second bottom")
    for name in ("zoom_factor", "shrink_factor"):
        if p.has(name) and getattr(p, name) < 1:
            _fail(ctx, f"{name} must be at least 1, found {getattr(p, name)}")
    h_eff = shape[2] + p.pad_beg + p.pad_end
    w_eff = shape[3] + p.pad_beg + p.pad_end
    size_out = interp_size(ctx.layer, ctx.in_shapes)
    layer = Interp(size_in=(h_eff, w_eff), size_out=size_out, crop=(-p.pad_beg, -p.pad_beg),
                   name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


@register_converter("ShuffleChannel")
def shuffle_channel(ctx):
    from ..layers.fork import ChannelShuffle

    shape = ctx.in_shapes[0]
    group = ctx.param("shuffle_channel_param").group
    if len(shape) < 2 or group <= 0 or shape[1] % group:
        _fail(ctx, f"group {group} must divide the channels of {list(shape)}")
    layer = ChannelShuffle(groups=group, axis=_channel_axis(shape), name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]
