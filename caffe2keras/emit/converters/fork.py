"""Layer types of popular Caffe forks: ReLU6, Upsample (YOLO/brocolli nearest neighbour,
SegNet max-unpooling), Interp (DeepLab v2 / PSPNet), ShuffleChannel (ShuffleNet).

(DepthwiseConvolution / ConvolutionDepthwise are grouped convolutions: see conv.py.)
"""
from __future__ import annotations

from ... import layout
from ...shapes import (
    check_bottoms,
    check_rank,
    interp_size,
    same_shape,
    shape_fail,
)
from ..registry import register_converter

# ---------------------------------------------------------------- shapes (Caffe NCHW)

def upsample_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1, 2)
    p = layer.param("upsample_param")
    check_rank(layer, bottoms[0], 4)
    n, c, h, w = bottoms[0]
    sh = p.scale_h if p.has("scale_h") else p.scale
    sw = p.scale_w if p.has("scale_w") else p.scale
    if sh <= 0 or sw <= 0:
        shape_fail(layer, f"upsample scale must be positive, found {sh}x{sw}")
    oh = p.upsample_h if p.has("upsample_h") else h * sh - (1 if p.pad_out_h else 0)
    ow = p.upsample_w if p.has("upsample_w") else w * sw - (1 if p.pad_out_w else 0)
    return [(n, c, oh, ow)], []


def interp_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1, 2)
    check_rank(layer, bottoms[0], 4)
    n, c = bottoms[0][:2]
    return [(n, c, *interp_size(layer, bottoms))], []


def shuffle_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    g = layer.param("shuffle_channel_param").group
    if len(bottoms[0]) < 2:
        shape_fail(layer, f"ShuffleChannel needs an input with a channel axis, found "
                     f"{list(bottoms[0])}")
    if g <= 0 or bottoms[0][1] % g:
        shape_fail(layer, f"group {g} must divide the {bottoms[0][1]} channels")
    return [tuple(bottoms[0])], []


def _relu6_check(layer):
    p = layer.param("relu6_param")
    slope, cap = float(p.negative_slope), float(p.threshold)
    if slope < 0 or cap < 0:
        return (f"ReLU6 with negative_slope {slope} and threshold {cap} is not supported "
                f"(both must be >= 0)")
    return None


@register_converter("ReLU6", shape=same_shape, check=_relu6_check, keras_classes=())
def relu6(ctx):
    """min(max(x, 0) + negative_slope * min(x, 0), threshold) (brocolli's relu6_layer)."""
    import keras

    p = ctx.param("relu6_param")
    slope, cap = float(p.negative_slope), float(p.threshold)
    layer = keras.layers.ReLU(max_value=cap, negative_slope=slope, name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


@register_converter("Upsample", shape=upsample_shape, keras_classes=())
def upsample(ctx):
    """One bottom: nearest neighbour by an integer scale (YOLO forks, brocolli-caffe:
    top[y, x] = bottom[y / scale, x / scale]). Two bottoms: SegNet's unpooling of the
    values into the positions of a MAX pooling mask."""
    import keras

    from ..layers.fork import MaxUnpool

    p = ctx.param("upsample_param")
    shape, out = ctx.in_shapes[0], ctx.out_shapes[0]
    if len(shape) != 4:
        ctx.fail(f"Upsample needs a 4-D input, found {list(shape)}")
    if len(ctx.inputs) == 2:
        if tuple(ctx.in_shapes[1]) != tuple(shape):
            ctx.fail(f"the mask bottom {list(ctx.in_shapes[1])} must match the data "
                     f"bottom {list(shape)}")
        layer = MaxUnpool(size_out=out[2:], name=ctx.name)
        return [ctx.add(layer, list(ctx.inputs))]
    if not (p.has("scale") or p.has("scale_h")):
        ctx.fail("a one-bottom Upsample needs scale: the forks disagree on its default "
                 "(YOLO/brocolli 1, SegNet 2)")
    sh, sw = out[2] // shape[2], out[3] // shape[3]
    if (shape[2] * sh, shape[3] * sw) != tuple(out[2:]) or min(sh, sw) < 1:
        ctx.fail(f"a one-bottom (nearest neighbour) Upsample scales by whole factors; "
                 f"{shape[2]}x{shape[3]} -> {out[2]}x{out[3]} needs the SegNet form "
                 f"(a second, mask bottom)")
    layer = keras.layers.UpSampling2D(size=(sh, sw), interpolation="nearest", name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


@register_converter("Interp", shape=interp_shape, keras_classes=())
def interp(ctx):
    """Bilinear resize with aligned corners (DeepLab v2 / PSPNet interp_layer.cpp)."""
    from ..layers.fork import Interp

    p = ctx.param("interp_param")
    shape = ctx.in_shapes[0]
    if len(shape) != 4:
        ctx.fail(f"Interp needs a 4-D input, found {list(shape)}")
    if p.pad_beg > 0 or p.pad_end > 0:
        ctx.fail(f"Interp supports only non-positive pad_beg/pad_end (cropping), as "
                 f"Caffe does; found {p.pad_beg}, {p.pad_end}")
    specs = (p.has("zoom_factor") + p.has("shrink_factor")
             + (p.has("height") and p.has("width")) + (len(ctx.inputs) == 2))
    if specs == 0:
        ctx.fail("interp_param needs zoom_factor, shrink_factor, height and width, or a "
                 "second bottom")
    for name in ("zoom_factor", "shrink_factor"):
        if p.has(name) and getattr(p, name) < 1:
            ctx.fail(f"{name} must be at least 1, found {getattr(p, name)}")
    h_eff = shape[2] + p.pad_beg + p.pad_end
    w_eff = shape[3] + p.pad_beg + p.pad_end
    size_out = interp_size(ctx.layer, ctx.in_shapes)
    layer = Interp(size_in=(h_eff, w_eff), size_out=size_out, crop=(-p.pad_beg, -p.pad_beg),
                   name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


@register_converter("ShuffleChannel", shape=shuffle_shape, keras_classes=())
def shuffle_channel(ctx):
    from ..layers.fork import ChannelShuffle

    shape = ctx.in_shapes[0]
    group = ctx.param("shuffle_channel_param").group
    if len(shape) < 2 or group <= 0 or shape[1] % group:
        ctx.fail(f"group {group} must divide the channels of {list(shape)}")
    layer = ChannelShuffle(groups=group, axis=layout.channel_axis(len(shape)), name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]
