"""Convolution (grouped, depthwise, dilated, rectangular) and Deconvolution."""
from __future__ import annotations

import math

from ... import layout
from ...shapes import (
    check_bottoms,
    conv_geometry,
    shape_fail,
)
from ..registry import Fillers, Keras2H5, register_converter

# ---------------------------------------------------------------- shapes (Caffe NCHW)

def _conv_common(layer, bottoms):
    check_bottoms(layer, bottoms, 1, 1 << 30)
    p = layer.param("convolution_param")
    shape = bottoms[0]
    if p.axis not in (1, 1 - len(shape)):
        shape_fail(layer, f"convolution axis {p.axis} is not supported (only the channel axis 1)")
    if len(shape) != 4:
        shape_fail(layer, f"only 2-D convolution (4-D NCHW input) is supported; input is "
                     f"{len(shape)}-D {list(shape)}")
    for b in bottoms[1:]:
        if tuple(b) != tuple(shape):
            shape_fail(layer, f"all bottoms must share one shape; found {list(shape)} and {list(b)}")
    if not p.has("num_output") or p.num_output <= 0:
        shape_fail(layer, "convolution_param needs num_output > 0")
    group = p.group
    c = shape[1]
    if group <= 0 or c % group or p.num_output % group:
        shape_fail(layer, f"group {group} must divide both the input channels ({c}) and "
                     f"num_output ({p.num_output})")
    return p, shape, group


def convolution_shape(layer, bottoms):
    p, (n, c, h, w), group = _conv_common(layer, bottoms)
    if layer.type in DEPTHWISE_TYPES and group == 1:
        if c <= 0:
            shape_fail(layer, f"depthwise convolution needs input channels, found {c}")
        group = c  # fork depthwise types: one filter group per input channel
        if p.num_output % c:
            shape_fail(layer, f"depthwise num_output {p.num_output} must be a multiple of the "
                         f"input channels {c}")
    k, s, pad, d = conv_geometry(layer)
    out = []
    for size, kk, ss, pp, dd in zip((h, w), k, s, pad, d):
        ext = dd * (kk - 1) + 1
        o = (size + 2 * pp - ext) // ss + 1
        if o <= 0:
            shape_fail(layer, f"kernel extent {ext} does not fit the padded input "
                         f"{size}+2*{pp}: output would be empty")
        out.append(o)
    params = [(p.num_output, c // group, *k)]
    if p.bias_term:
        params.append((p.num_output,))
    return [(n, p.num_output, *out)] * len(bottoms), params


def deconvolution_shape(layer, bottoms):
    p, (n, c, h, w), group = _conv_common(layer, bottoms)
    k, s, pad, d = conv_geometry(layer)
    out = []
    for size, kk, ss, pp, dd in zip((h, w), k, s, pad, d):
        o = ss * (size - 1) + dd * (kk - 1) + 1 - 2 * pp
        if o <= 0:
            shape_fail(layer, f"padding {pp} removes the whole output")
        out.append(o)
    params = [(c, p.num_output // group, *k)]
    if p.bias_term:
        params.append((p.num_output,))
    return [(n, p.num_output, *out)] * len(bottoms), params


DEPTHWISE_TYPES = ("DepthwiseConvolution", "ConvolutionDepthwise")


def _in_channels(ctx):
    """C_in: from the inferred shape, else (keras2-h5 export of a net whose shapes are
    unknown) from the weight blob and the group count."""
    shapes = ctx.in_shapes
    if shapes and shapes[0] is not None:
        return shapes[0][1]
    p = ctx.param("convolution_param")
    w = ctx.layer.blobs[0]
    if ctx.layer.type in DEPTHWISE_TYPES and p.group == 1:
        return w.shape[0] if w.shape[1] == 1 else w.shape[1]
    return w.shape[1] * p.group


def _groups(ctx):
    p = ctx.param("convolution_param")
    if ctx.layer.type in DEPTHWISE_TYPES and p.group == 1:
        return _in_channels(ctx)  # fork depthwise types imply one group per channel
    return p.group


def _is_depthwise(ctx):
    c_in = _in_channels(ctx)
    return _groups(ctx) == c_in and c_in > 1


def _same_padding(k, s, pad, d):
    """Keras 'same' equals Caffe's symmetric pad only at stride 1 with an odd extent."""
    return all(ss == 1 and (dd * (kk - 1)) % 2 == 0 and pp == dd * (kk - 1) // 2
               for kk, ss, pp, dd in zip(k, s, pad, d))


def convolution_weights(ctx):
    blobs = ctx.blobs
    if _is_depthwise(ctx):
        kernel = layout.depthwise_kernel(blobs[0], _in_channels(ctx))
    else:
        kernel = layout.conv_kernel(blobs[0])
    return {ctx.name: [kernel, *blobs[1:2]]}


def _convolution_classes(ctx):
    if len(ctx.step.inputs) != 1:
        return None  # one layer shared by several bottoms: depth decides its order
    return [(ctx.name, "DepthwiseConv2D" if _is_depthwise(ctx) else "Conv2D")]


def _convolution_k2_names(ctx, n):
    return ["depthwise_kernel" if _is_depthwise(ctx) else "kernel", "bias"][:n]


_CONV_FILLERS = Fillers("convolution_param", ("weight_filler", "bias_filler"))


def _always(layer):
    return True


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


@register_converter(
    "Convolution", "HoleConvolution", *DEPTHWISE_TYPES, weights=convolution_weights,
    shape=convolution_shape,
    keras_classes=_convolution_classes, fillers=_CONV_FILLERS, takes_activation=_always,
    keras2_h5=Keras2H5(convolution_weights, _convolution_k2_names, needs_shape=False))
def convolution(ctx):
    import keras

    from ..layers.conv import DepthwiseConv2D, Subsample2D

    p = ctx.param("convolution_param")
    k, s, pad, d = conv_geometry(ctx.layer)
    step, s, d, after = _split_stride(s, d)
    split = max(step) > 1
    padding = "same" if not split and _same_padding(k, s, pad, d) else "valid"
    # a fused activation (emit/plan.py) commutes with the output subsampling below
    common = {"strides": s, "dilation_rate": d, "use_bias": p.bias_term,
              "padding": padding, "activation": ctx.activation, "name": ctx.name}
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


def _plain_deconvolution(layer):
    """Keras's own Conv2DTranspose computes it (no groups, no dilation)."""
    p = layer.param("convolution_param")
    return p.group == 1 and tuple(conv_geometry(layer)[3]) == (1, 1)


def deconvolution_weights(ctx):
    blobs = ctx.blobs
    return {ctx.name: [layout.deconv_kernel(blobs[0]), *blobs[1:2]]}


def _deconvolution_classes(ctx):
    if len(ctx.step.inputs) != 1:
        return None
    plain = _plain_deconvolution(ctx.layer)
    return [(ctx.name, "Conv2DTranspose" if plain else "GroupedConv2DTranspose")]


def _deconvolution_k2(ctx):
    """Keras 2's Conv2DTranspose has no groups: a grouped kernel becomes the equivalent
    full one, zero between groups."""
    g = ctx.param("convolution_param").group
    return {ctx.name: [layout.deconv_kernel_ungrouped(ctx.blobs[0], g), *ctx.blobs[1:2]]}


@register_converter(
    "Deconvolution", weights=deconvolution_weights, shape=deconvolution_shape,
    keras_classes=_deconvolution_classes, fillers=_CONV_FILLERS,
    takes_activation=_plain_deconvolution,
    keras2_h5=Keras2H5(_deconvolution_k2, lambda ctx, n: ["kernel", "bias"][:n],
                       needs_shape=False))
def deconvolution(ctx):
    import keras

    from ..layers.conv import GroupedConv2DTranspose

    p, k, s, pad, d = _deconv_geometry(ctx)
    if _plain_deconvolution(ctx.layer):
        # output_padding 0 keeps Keras's length at (H-1)*s + k, Caffe's full output,
        # also when k < s (Keras's own default would give H*s).
        deconv = keras.layers.Conv2DTranspose(
            p.num_output, k, strides=s, padding="valid", output_padding=(0, 0),
            use_bias=p.bias_term, activation=ctx.activation, name=ctx.name)
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
