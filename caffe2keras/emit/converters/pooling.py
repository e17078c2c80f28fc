"""Pooling: MAX, AVE and (test-time) STOCHASTIC, with Caffe's padding and rounding.

Plain Keras pooling where it computes the same thing (no padding and no window hanging
past the input); CaffePooling2D otherwise.
"""
from __future__ import annotations

from ...errors import CaffeFormatError
from ...shapes import pool_geometry
from ..registry import register_converter

_METHODS = {"MAX": "max", "AVE": "ave", "STOCHASTIC": "stochastic"}


def _fail(ctx, msg):
    raise CaffeFormatError(msg, path=ctx.graph.net.path, layer=ctx.layer.name)


@register_converter("Pooling")
def pooling(ctx):
    import keras

    from ..layers.pooling import CaffePooling2D

    p = ctx.param("pooling_param")
    method = _METHODS.get(p.pool)
    if method is None:
        _fail(ctx, f"pool method {p.pool} is not supported (MAX, AVE or STOCHASTIC)")
    shape = ctx.in_shapes[0]
    k, s, pad, ceil = pool_geometry(ctx.layer, shape)
    if len(ctx.step.outputs) > 1:
        if method != "max":
            _fail(ctx, f"only MAX pooling has a second (mask) top, as in Caffe; this is "
                       f"{p.pool}")
        from ..layers.pooling import CaffeMaxPoolingWithArgmax

        # the argmax mask SegNet's Upsample unpools with
        layer = CaffeMaxPoolingWithArgmax(pool_size=k, strides=s, pad=pad, ceil_mode=ceil,
                                          name=ctx.name)
        return list(ctx.add(layer, ctx.inputs[0]))
    if method == "stochastic" and any(pad):
        _fail(ctx, f"STOCHASTIC pooling takes no padding (Caffe refuses it), found {pad}")
    out = ctx.out_shapes[0][2:]
    x = ctx.inputs[0]
    if p.global_pooling and method != "stochastic":
        cls = keras.layers.GlobalMaxPooling2D if method == "max" else \
            keras.layers.GlobalAveragePooling2D
        return [ctx.add(cls(keepdims=True, name=ctx.name), x)]
    # Keras 'valid' pooling is Caffe's when nothing is padded and the windows
    # end inside the input (Caffe's ceil adds no extra window).
    exact = not any(pad) and all(
        o == (n - kk) // ss + 1 for o, n, kk, ss in zip(out, shape[2:], k, s))
    if exact and method != "stochastic":
        cls = keras.layers.MaxPooling2D if method == "max" else keras.layers.AveragePooling2D
        layer = cls(pool_size=k, strides=s, padding="valid", name=ctx.name)
    else:
        layer = CaffePooling2D(method, pool_size=k, strides=s, pad=pad, ceil_mode=ceil,
                               name=ctx.name)
    return [ctx.add(layer, x)]
