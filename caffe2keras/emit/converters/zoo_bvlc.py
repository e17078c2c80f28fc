"""BVLC's rarer layers: SPP, Im2col, Parameter, BatchReindex, Filter (shape function,
weights and converter of each). All are checked against real Caffe
(tests/data/make_layers_goldens.py).

- SPP (spp_layer.cpp): pyramid level l pools with 2^l bins per side: kernel
  ceil(H / bins), stride = kernel, pad (kernel * bins - H + 1) / 2, through Caffe's own
  Pooling (ceil rounding); each level is flattened in C,H,W order and concatenated,
  (N, C * sum 4^l). One level gives the pooled (N, C, 1, 1) blob itself.
- Im2col: convolution_param's kernel, stride, pad, dilation; (N, C*kh*kw, oh, ow).
- Parameter: the learned blob as a top; it keeps its own first axis (no batch).
- BatchReindex: top[i] = bottom[index[i]]; the top's batch is the index's length.
- Filter: Caffe's top holds only the items whose selector is nonzero, so its batch size
  depends on the data. The Keras model keeps static shapes: each top has the bottom's
  batch size, the selected items first (Caffe's top) and zero rows after them.
"""
from __future__ import annotations

import math

import numpy as np

from ... import layout
from ...shapes import conv_geometry, pooled_size, shape_fail
from ..registry import register_converter


def _bottoms(layer, bottoms, n):
    if len(bottoms) != n:
        shape_fail(layer, f"{layer.type} takes {n} bottom(s), found {len(bottoms)}")


# ---------------------------------------------------------------- SPP

def spp_levels(layer, shape):
    """[(kernel, pad, out)] per pyramid level, each an (h, w) pair, for an NCHW shape."""
    p = layer.param("spp_param")
    if not p.has("pyramid_height") or p.pyramid_height < 1:
        shape_fail(layer, "spp_param needs pyramid_height >= 1")
    h, w = shape[2], shape[3]
    levels = []
    for level in range(p.pyramid_height):
        bins = 2 ** level
        kernel, pad, out = [], [], []
        for size in (h, w):
            k = -(-size // bins)
            pd = (k * bins - size + 1) // 2
            if pd >= k:
                shape_fail(layer, f"pyramid level {level} ({bins} bins) on a {h}x{w} input "
                                   f"needs pad {pd} with kernel {k}; Caffe's pooling "
                                   f"refuses pad >= kernel for this input size")
            if pd and p.pool == "STOCHASTIC":
                shape_fail(layer, f"STOCHASTIC pyramid level {level} needs padding {pd} on "
                                   f"a {h}x{w} input, which Caffe's pooling refuses")
            kernel.append(k)
            pad.append(pd)
            out.append(pooled_size(size, k, k, pd, True))
        levels.append((tuple(kernel), tuple(pad), tuple(out)))
    return levels


def spp_shape(layer, bottoms):
    _bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    if len(shape) != 4:
        shape_fail(layer, f"SPP needs a 4-D NCHW input, found {list(shape)}")
    n, c = shape[:2]
    levels = spp_levels(layer, shape)
    if len(levels) == 1:
        return [(n, c, *levels[0][2])], []
    return [(n, sum(c * oh * ow for _, _, (oh, ow) in levels))], []


@register_converter("SPP", shape=spp_shape, keras_classes=())
def spp(ctx):
    import keras

    from ..layers.pooling import CaffePooling2D

    p = ctx.param("spp_param")
    method = {"MAX": "max", "AVE": "ave", "STOCHASTIC": "stochastic"}[p.pool]
    levels = spp_levels(ctx.layer, ctx.in_shapes[0])
    x = ctx.inputs[0]
    single = len(levels) == 1
    flat = []
    for level, (k, pad, _) in enumerate(levels):
        name = ctx.name if single else ctx.sub_name(f"level{level}")
        pooled = ctx.add(CaffePooling2D(method, pool_size=k, strides=k, pad=pad,
                                        ceil_mode=True, name=name), x)
        if single:
            return [pooled]
        # Caffe flattens each level in C, H, W order
        nchw = ctx.add(keras.layers.Permute((3, 1, 2), name=ctx.sub_name(f"level{level}_nchw")),
                       pooled)
        flat.append(ctx.add(keras.layers.Flatten(name=ctx.sub_name(f"level{level}_flat")),
                            nchw))
    return [ctx.add(keras.layers.Concatenate(axis=1, name=ctx.name), flat)]


# ---------------------------------------------------------------- Im2col

def im2col_shape(layer, bottoms):
    _bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    p = layer.param("convolution_param")
    if len(shape) != 4 or p.axis not in (1, -3):
        shape_fail(layer, f"only 2-D Im2col (a 4-D NCHW input, axis 1) is supported; "
                           f"input is {list(shape)}, axis {p.axis}")
    if p.force_nd_im2col:
        shape_fail(layer, "force_nd_im2col is not supported (only 2-D Im2col)")
    k, s, pad, d = conv_geometry(layer)
    out = []
    for size, kk, ss, pp, dd in zip(shape[2:], k, s, pad, d):
        o = (size + 2 * pp - (dd * (kk - 1) + 1)) // ss + 1
        if o <= 0:
            shape_fail(layer, f"kernel {kk} (dilation {dd}) does not fit the padded "
                               f"input {size}+2*{pp}")
        out.append(o)
    n, c = shape[:2]
    return [(n, c * k[0] * k[1], *out)], []


@register_converter("Im2col", shape=im2col_shape, keras_classes=())
def im2col(ctx):
    from ..layers.zoo_bvlc import Im2col

    k, s, pad, d = conv_geometry(ctx.layer)
    layer = Im2col(k, strides=s, pad=pad, dilation=d, name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


# ---------------------------------------------------------------- Parameter

def parameter_shape(layer, bottoms):
    _bottoms(layer, bottoms, 0)
    shape = tuple(int(d) for d in layer.param("parameter_param").shape.dim)
    if any(d <= 0 for d in shape):
        shape_fail(layer, f"parameter_param shape {list(shape)} needs positive dims")
    return [shape], [shape]


def parameter_weights(ctx):
    blob = np.asarray(ctx.blobs[0], dtype=np.float32)
    return {ctx.name: [blob.transpose(0, 2, 3, 1) if blob.ndim == 4 else blob]}


@register_converter("Parameter", weights=parameter_weights, shape=parameter_shape,
                    keras_classes="LearnedBlob")
def parameter(ctx):
    from ..layers.zoo_bvlc import LearnedBlob

    if not ctx.net_inputs:
        ctx.fail("a Parameter layer needs the net to have an input (a Keras layer is "
                 "called on a tensor)")
    layer = LearnedBlob(layout.keras_shape(ctx.out_shapes[0]), name=ctx.name)
    return [ctx.add(layer, ctx.net_inputs[0])]


# ---------------------------------------------------------------- BatchReindex

def batch_reindex_shape(layer, bottoms):
    _bottoms(layer, bottoms, 2)
    shape, index = tuple(bottoms[0]), tuple(bottoms[1])
    if len(index) != 1:
        shape_fail(layer, f"the index bottom must be 1-D, found {list(index)}")
    if not shape:
        shape_fail(layer, "the data bottom needs a batch axis")
    return [(index[0], *shape[1:])], []


@register_converter("BatchReindex", shape=batch_reindex_shape, keras_classes=())
def batch_reindex(ctx):
    from ..layers.zoo_bvlc import BatchReindex

    return [ctx.add(BatchReindex(name=ctx.name), list(ctx.inputs))]


# ---------------------------------------------------------------- Filter

def filter_shape(layer, bottoms):
    if len(bottoms) < 2:
        shape_fail(layer, f"Filter takes the blobs to filter and a selector (at least 2 "
                           f"bottoms), found {len(bottoms)}")
    if len(layer.tops) != len(bottoms) - 1:
        shape_fail(layer, f"Filter has one top per filtered bottom ({len(bottoms) - 1}), "
                           f"found {len(layer.tops)}")
    sel = tuple(bottoms[-1])
    if not sel or math.prod(sel[1:]) != 1:
        shape_fail(layer, f"the selector (last bottom) must be (N,) or (N, 1, ...), found "
                           f"{list(sel)}")
    for b in bottoms[:-1]:
        if not b or b[0] != sel[0]:
            shape_fail(layer, f"each filtered bottom must have the selector's {sel[0]} "
                               f"items on axis 0, found {list(b)}")
    # Caffe's batch here is the count of selected items (data-dependent); the Keras
    # model pads to the bottom's batch (see the module docstring)
    return [tuple(b) for b in bottoms[:-1]], []


def filter_note(layer):
    return ("Caffe's top holds only the items whose selector is nonzero; the converted model "
            "keeps the batch size: those items first, then zero rows")


@register_converter("Filter", shape=filter_shape, keras_classes=(), note=filter_note)
def filter_(ctx):
    from ..layers.zoo_bvlc import FilterItems

    out = ctx.add(FilterItems(name=ctx.name), list(ctx.inputs))
    return list(out) if isinstance(out, (list, tuple)) else [out]

