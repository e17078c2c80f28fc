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

from ...errors import CaffeFormatError
from ..registry import register_converter, register_weights

_OUT = "z"  # the einsum letter of the output features


def _keras_order(rank):
    """Caffe axis held by each Keras axis."""
    return [0, 2, 3, 1] if rank == 4 else list(range(rank))


def _ip_plan(ctx):
    """How InnerProduct maps to Keras: ("flatten"|"dense"|"einsum", axis, extra)."""
    p = ctx.param("inner_product_param")
    shape = ctx.in_shapes[0]
    rank = len(shape)
    axis = p.axis + rank if p.axis < 0 else p.axis
    if axis == 0:
        raise CaffeFormatError(
            "InnerProduct with axis 0 folds the batch into the features; a Keras model "
            "keeps a batch axis, so this is not supported", path=ctx.graph.net.path,
            layer=ctx.layer.name)
    out_rank = axis + 1
    if rank == 4 and axis == 1:
        return "flatten", axis, None
    if rank != 4 and out_rank != 4:
        return "dense", axis, None
    letters = string.ascii_lowercase[:rank]
    in_spec = "".join(letters[a] for a in _keras_order(rank))
    out_caffe = letters[:axis] + _OUT
    out_spec = "".join(out_caffe[a] for a in _keras_order(out_rank))
    kernel_spec = letters[axis:] + _OUT
    equation = f"{in_spec},{kernel_spec}->{out_spec}"
    out_dims = list(shape[:axis]) + [p.num_output]
    out_shape = [out_dims[a] for a in _keras_order(out_rank)][1:]
    return "einsum", axis, (equation, out_shape, out_spec)


def _caffe_weight(ctx):
    """(num_output, K) whatever the transpose flag (the graph gave the blob its 2-D
    parameter shape)."""
    w = ctx.blobs[0]
    return w.T if ctx.param("inner_product_param").transpose else w


@register_weights("InnerProduct")
def inner_product_weights(ctx):
    kind, axis, extra = _ip_plan(ctx)
    shape = ctx.in_shapes[0]
    w = _caffe_weight(ctx)
    n_out = w.shape[0]
    bias = list(ctx.blobs[1:2])
    if bias:
        bias = [bias[0].reshape(-1)]
    if kind == "flatten":
        _, c, h, wd = shape
        kernel = w.reshape(n_out, c, h, wd).transpose(2, 3, 1, 0).reshape(h * wd * c, n_out)
    elif kind == "dense":
        kernel = w.T
    else:
        _, _, out_spec = extra
        kernel = w.reshape(n_out, *shape[axis:]).transpose(*range(1, len(shape) - axis + 1), 0)
        after = len(out_spec) - out_spec.index(_OUT) - 1  # EinsumDense's bias shape
        bias = [b.reshape((n_out,) + (1,) * after) for b in bias]
    return {ctx.name: [kernel, *bias]}


@register_converter("InnerProduct")
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
                                         bias_axes=_OUT if p.bias_term else None)
    else:
        layer = keras.layers.Dense(p.num_output, use_bias=p.bias_term, name=ctx.name)
    return [ctx.add(layer, x)]


def _embed_bias_name(ctx):
    return f"{ctx.name}_bias"


@register_weights("Embed")
def embed_weights(ctx):
    blobs = ctx.blobs
    out = {ctx.name: [blobs[0]]}
    if len(blobs) > 1:
        out[_embed_bias_name(ctx)] = [blobs[1]]
    return out


@register_converter("Embed")
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
            raise CaffeFormatError(
                f"the Keras name '{_embed_bias_name(ctx)}' for this Embed's bias is taken "
                f"by another layer; rename one of them", path=ctx.graph.net.path,
                layer=ctx.layer.name)
        x = ctx.add(Bias(axes=[rank], name=name), x)
    if rank + 1 == 4:
        x = ctx.add(keras.layers.Permute((2, 3, 1), name=ctx.sub_name("to_nhwc")), x)
    return [x]
