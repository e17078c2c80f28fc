"""Convolution (grouped, depthwise, dilated, rectangular) and Deconvolution."""
from __future__ import annotations

from ...shapes import conv_geometry
from ..registry import register_converter, register_weights

DEPTHWISE_TYPES = ("DepthwiseConvolution", "ConvolutionDepthwise")


def _groups(ctx):
    p = ctx.param("convolution_param")
    c_in = ctx.in_shapes[0][1]
    if ctx.layer.type in DEPTHWISE_TYPES and p.group == 1:
        return c_in  # fork depthwise types imply one group per channel
    return p.group


def _is_depthwise(ctx):
    c_in = ctx.in_shapes[0][1]
    return _groups(ctx) == c_in and c_in > 1


def _same_padding(k, s, pad, d):
    """Keras 'same' equals Caffe's symmetric pad only at stride 1 with an odd extent."""
    return all(ss == 1 and (dd * (kk - 1)) % 2 == 0 and pp == dd * (kk - 1) // 2
               for kk, ss, pp, dd in zip(k, s, pad, d))


@register_weights("Convolution", *DEPTHWISE_TYPES)
def convolution_weights(ctx):
    blobs = ctx.blobs
    kernel = blobs[0].transpose(2, 3, 1, 0)  # Caffe OIHW -> Keras HWIO (no flip)
    if _is_depthwise(ctx):
        c_in = ctx.in_shapes[0][1]
        kh, kw = kernel.shape[:2]
        # Caffe (C*m, 1, kh, kw): output c*m + j reads input c; Keras (kh, kw, C, m).
        kernel = blobs[0].reshape(c_in, -1, kh, kw).transpose(2, 3, 0, 1)
    return {ctx.name: [kernel, *blobs[1:2]]}


@register_converter("Convolution", *DEPTHWISE_TYPES)
def convolution(ctx):
    import keras

    p = ctx.param("convolution_param")
    k, s, pad, d = conv_geometry(ctx.layer)
    padding = "same" if _same_padding(k, s, pad, d) else "valid"
    common = dict(strides=s, dilation_rate=d, use_bias=p.bias_term, padding=padding,
                  name=ctx.name)
    if _is_depthwise(ctx):
        conv = keras.layers.DepthwiseConv2D(
            k, depth_multiplier=p.num_output // ctx.in_shapes[0][1], **common)
    else:
        conv = keras.layers.Conv2D(p.num_output, k, groups=_groups(ctx), **common)
    outs = []
    for x in ctx.inputs:  # several bottoms share one set of weights, as in Caffe
        if padding == "valid" and any(pad):
            x = ctx.add(keras.layers.ZeroPadding2D(pad, name=ctx.sub_name("pad")), x)
        outs.append(ctx.add(conv, x))
    return outs
