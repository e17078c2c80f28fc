"""InnerProduct (any axis, transpose, bias) and Embed.

InnerProduct contracts the input's axes from ``axis`` on, flattened in Caffe's order.
- After a 4-D blob at axis 1 (the usual conv -> fc): Flatten + Dense, the kernel rows
  permuted from C,H,W to H,W,C order, so the NHWC tensor needs no transpose.
- Other ranks (Caffe axis order kept): Dense on the last axis, after a Reshape when
  several trailing axes are contracted.
- Where the input or the output is 4-D otherwise (their Keras layout is NHWC): one
  EinsumDense that reads and writes the NHWC layouts directly.
"""
from __future__ import annotations

import math
import string

from ... import layout
from ...shapes import (
    canonical_axis,
    check_bottoms,
    shape_fail,
)
from ..registry import Fillers, Keras2H5, register_converter

# ---------------------------------------------------------------- shapes (Caffe NCHW)

def inner_product_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    p = layer.param("inner_product_param")
    shape = bottoms[0]
    axis = canonical_axis(layer, p.axis, len(shape))
    k = math.prod(shape[axis:])
    if not p.has("num_output") or p.num_output <= 0:
        shape_fail(layer, "inner_product_param needs num_output > 0")
    params = [(k, p.num_output) if p.transpose else (p.num_output, k)]
    if p.bias_term:
        params.append((p.num_output,))
    return [tuple(shape[:axis]) + (p.num_output,)], params


def embed_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    p = layer.param("embed_param")
    params = [(p.input_dim, p.num_output)] + ([(p.num_output,)] if p.bias_term else [])
    return [tuple(bottoms[0]) + (p.num_output,)], params


_OUT = "z"  # the einsum letter of the output features


_AXIS0 = ("InnerProduct with axis 0 folds the batch into the features; a Keras model "
          "keeps a batch axis, so this is not supported")


def _inner_product_check(layer):
    if layer.param("inner_product_param").axis == 0:
        return _AXIS0
    return None


def _ip_plan(ctx):
    """How InnerProduct maps to Keras: ("flatten"|"dense"|"einsum", axis, extra)."""
    p = ctx.param("inner_product_param")
    shape = ctx.in_shapes[0]
    rank = len(shape)
    axis = p.axis + rank if p.axis < 0 else p.axis
    if axis == 0:
        ctx.fail(_AXIS0)
    out_rank = axis + 1
    if rank == 4 and axis == 1:
        return "flatten", axis, None
    if rank != 4 and out_rank != 4:
        return "dense", axis, None
    letters = string.ascii_lowercase[:rank]
    in_spec = "".join(letters[a] for a in layout.keras_order(rank))
    out_caffe = letters[:axis] + _OUT
    out_spec = "".join(out_caffe[a] for a in layout.keras_order(out_rank))
    kernel_spec = letters[axis:] + _OUT
    equation = f"{in_spec},{kernel_spec}->{out_spec}"
    out_dims = list(shape[:axis]) + [p.num_output]
    out_shape = [out_dims[a] for a in layout.keras_order(out_rank)][1:]
    return "einsum", axis, (equation, out_shape, out_spec)


def _caffe_weight(ctx):
    """(num_output, K) whatever the transpose flag (the graph gave the blob its 2-D
    parameter shape)."""
    w = ctx.blobs[0]
    return w.T if ctx.param("inner_product_param").transpose else w


def inner_product_weights(ctx):
    kind, axis, extra = _ip_plan(ctx)
    shape = ctx.in_shapes[0]
    w = _caffe_weight(ctx)
    n_out = w.shape[0]
    bias = list(ctx.blobs[1:2])
    if bias:
        bias = [bias[0].reshape(-1)]
    if kind == "flatten":
        kernel = layout.dense_kernel_after_conv(w, shape[1:])
    elif kind == "dense":
        kernel = layout.dense_kernel(w)
    else:
        _, _, out_spec = extra
        kernel = w.reshape(n_out, *shape[axis:]).transpose(*range(1, len(shape) - axis + 1), 0)
        after = len(out_spec) - out_spec.index(_OUT) - 1  # EinsumDense's bias shape
        bias = [b.reshape((n_out,) + (1,) * after) for b in bias]
    return {ctx.name: [kernel, *bias]}


def _inner_product_classes(ctx):
    return [(ctx.name, "EinsumDense" if _ip_plan(ctx)[0] == "einsum" else "Dense")]


def _inner_product_k2(ctx):
    """Keras 2's Dense (in, out): rows permuted to H, W, C after a 4-D blob at axis 1;
    otherwise the plain transpose (Dense on the last axis)."""
    p = ctx.param("inner_product_param")
    w = _caffe_weight(ctx)
    shape = ctx.in_shapes[0]
    axis = p.axis + len(shape) if p.axis < 0 else p.axis
    if len(shape) == 4 and axis == 1:
        kernel = layout.dense_kernel_after_conv(w, shape[1:])
    else:
        kernel = layout.dense_kernel(w)
    return {ctx.name: [kernel, *(b.reshape(-1) for b in ctx.blobs[1:2])]}


@register_converter(
    "InnerProduct", weights=inner_product_weights, shape=inner_product_shape,
    check=_inner_product_check, keras_classes=_inner_product_classes,
    takes_activation=lambda layer: True,
    fillers=Fillers("inner_product_param", ("weight_filler", "bias_filler")),
    keras2_h5=Keras2H5(_inner_product_k2, lambda ctx, n: ["kernel", "bias"][:n]))
def inner_product(ctx):
    import keras

    p = ctx.param("inner_product_param")
    kind, axis, extra = _ip_plan(ctx)
    x = ctx.inputs[0]
    shape = ctx.in_shapes[0]
    if kind == "flatten":
        x = ctx.add(keras.layers.Flatten(name=ctx.sub_name("flatten")), x)
    elif kind == "dense" and axis < len(shape) - 1:
        x = ctx.add(keras.layers.Reshape(
            (*shape[1:axis], math.prod(shape[axis:])), name=ctx.sub_name("flatten")), x)
    if kind == "einsum":
        equation, out_shape, _ = extra
        layer = keras.layers.EinsumDense(equation, out_shape, name=ctx.name,
                                         activation=ctx.activation,
                                         bias_axes=_OUT if p.bias_term else None)
    else:
        layer = keras.layers.Dense(p.num_output, use_bias=p.bias_term,
                                   activation=ctx.activation, name=ctx.name)
    return [ctx.add(layer, x)]


def _embed_bias_name(ctx):
    return f"{ctx.name}_bias"


def embed_weights(ctx):
    blobs = ctx.blobs
    out = {ctx.name: [blobs[0]]}
    if len(blobs) > 1:
        out[_embed_bias_name(ctx)] = [blobs[1]]
    return out


def _embed_classes(ctx):
    layers = [(ctx.name, "Embedding")]
    if ctx.param("embed_param").bias_term:
        layers.append((_embed_bias_name(ctx), "Bias"))
    return layers


@register_converter("Embed", weights=embed_weights, shape=embed_shape,
                    keras_classes=_embed_classes,
                    fillers=Fillers("embed_param", ("weight_filler", "bias_filler")))
def embed(ctx):
    import keras

    from ..layers.scale import Bias

    p = ctx.param("embed_param")
    x = ctx.inputs[0]
    rank = len(ctx.in_shapes[0])
    if rank == 4:  # back to Caffe's order: the output (rank 5) keeps it
        x = ctx.add(keras.layers.Permute((3, 1, 2), name=ctx.sub_name("to_nchw")), x)
    x = ctx.add(keras.layers.Embedding(p.input_dim, p.num_output, name=ctx.name), x)
    if p.bias_term:
        name = ctx.step.names.claim(_embed_bias_name(ctx))
        if name != _embed_bias_name(ctx):
            ctx.fail(f"the Keras name '{_embed_bias_name(ctx)}' for this Embed's bias is "
                     f"taken by another layer; rename one of them")
        x = ctx.add(Bias(axes=[rank], name=name), x)
    if rank + 1 == 4:
        x = ctx.add(keras.layers.Permute((2, 3, 1), name=ctx.sub_name("to_nhwc")), x)
    return [x]
