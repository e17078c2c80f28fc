"""Convolution (grouped, depthwise, dilated, rectangular) and Deconvolution."""
from __future__ import annotations

import math

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


def _split_stride(s, d):
    """Keras refuses stride > 1 with dilation > 1. Sampling the (padded) input every g =
    gcd(s, d) rows is exact and cuts both by g: (input step, conv stride, dilation,
    output step). If both still exceed 1, the conv runs at stride 1 and its output is
    sampled instead."""
    steps, strides, dils, after = [], [], [], []
    for ss, dd in zip(s, d):
        g = math.gcd(ss, dd) if ss > 1 and dd > 1 else 1
        steps.append(g)
        strides.append(ss // g)
        dils.append(dd // g)
    if max(strides) > 1 and max(dils) > 1:
        after, strides = strides, [1, 1]
    else:
        after = [1, 1]
    return tuple(steps), tuple(strides), tuple(dils), tuple(after)


@register_converter("Convolution", *DEPTHWISE_TYPES)
def convolution(ctx):
    import keras

    from ..layers.conv import DepthwiseConv2D, Subsample2D

    p = ctx.param("convolution_param")
    k, s, pad, d = conv_geometry(ctx.layer)
    step, s, d, after = _split_stride(s, d)
    split = max(step) > 1
    padding = "same" if not split and _same_padding(k, s, pad, d) else "valid"
    common = {"strides": s, "dilation_rate": d, "use_bias": p.bias_term,
              "padding": padding, "name": ctx.name}
    if _is_depthwise(ctx):
        conv = DepthwiseConv2D(
            k, depth_multiplier=p.num_output // ctx.in_shapes[0][1], **common)
    else:
        conv = keras.layers.Conv2D(p.num_output, k, groups=_groups(ctx), **common)
    pad_layer = keras.layers.ZeroPadding2D(pad, name=ctx.sub_name("pad")) \
        if padding == "valid" and any(pad) else None
    pre = Subsample2D(step, name=ctx.sub_name("subsample_in")) if split else None
    post = Subsample2D(after, name=ctx.sub_name("subsample")) if max(after) > 1 else None
    outs = []
    for x in ctx.inputs:  # several bottoms share one set of weights, as in Caffe
        for layer in (pad_layer, pre, conv, post):
            if layer is not None:
                x = ctx.add(layer, x)
        outs.append(x)
    return outs


def _deconv_geometry(ctx):
    p = ctx.param("convolution_param")
    k, s, pad, d = conv_geometry(ctx.layer)
    return p, k, s, pad, d


@register_weights("Deconvolution")
def deconvolution_weights(ctx):
    blobs = ctx.blobs
    # Caffe (Cin, Cout/G, kh, kw) -> Keras (kh, kw, Cout/G, Cin), no flip (both layers
    # define the same scatter of each input pixel through the kernel).
    return {ctx.name: [blobs[0].transpose(2, 3, 1, 0), *blobs[1:2]]}


@register_converter("Deconvolution")
def deconvolution(ctx):
    import keras

    from ..layers.conv import GroupedConv2DTranspose

    p, k, s, pad, d = _deconv_geometry(ctx)
    if p.group == 1 and d == (1, 1):
        # output_padding 0 keeps Keras's length at (H-1)*s + k, Caffe's full output,
        # also when k < s (Keras's own default would give H*s).
        deconv = keras.layers.Conv2DTranspose(
            p.num_output, k, strides=s, padding="valid", output_padding=(0, 0),
            use_bias=p.bias_term, name=ctx.name)
        crop = keras.layers.Cropping2D(((pad[0], pad[0]), (pad[1], pad[1])),
                                       name=ctx.sub_name("crop")) if any(pad) else None
    else:
        deconv = GroupedConv2DTranspose(
            p.num_output, k, strides=s, cropping=pad, dilation_rate=d, groups=p.group,
            use_bias=p.bias_term, name=ctx.name)
        crop = None
    outs = []
    for x in ctx.inputs:
        x = ctx.add(deconv, x)
        if crop is not None:
            x = ctx.add(crop, x)
        outs.append(x)
    return outs
