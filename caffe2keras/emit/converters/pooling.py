"""Pooling: MAX, AVE and (test-time) STOCHASTIC, with Caffe's padding and rounding.

Plain Keras pooling where it computes the same thing (no padding and no window hanging
past the input); CaffePooling2D otherwise.
"""
from __future__ import annotations

from ...shapes import (
    check_bottoms,
    pool_geometry,
    pooled_size,
    shape_fail,
)
from ..registry import register_converter

# ---------------------------------------------------------------- shapes (Caffe NCHW)

def pooling_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    shape = bottoms[0]
    if len(shape) != 4:
        shape_fail(layer, f"Pooling needs a 4-D NCHW input, found {list(shape)}")
    n, c, h, w = shape
    k, s, pad, ceil = pool_geometry(layer, shape)
    p = layer.param("pooling_param")
    if p.pool == "STOCHASTIC":
        pass  # deterministic at test time (weighted average); shape as any pooling
    oh, ow = (pooled_size(h, k[0], s[0], pad[0], ceil), pooled_size(w, k[1], s[1], pad[1], ceil))
    if oh <= 0 or ow <= 0:
        shape_fail(layer, f"kernel {k} is larger than the padded input {h}x{w}")
    tops = [(n, c, oh, ow)]
    if len(layer.tops) == 2:  # MAX pooling's optional argmax mask
        tops.append((n, c, oh, ow))
    return tops, []


_METHODS = {"MAX": "max", "AVE": "ave", "STOCHASTIC": "stochastic"}


def _pooling_check(layer):
    p = layer.param("pooling_param")
    if p.pool not in _METHODS:
        return f"pool method {p.pool} is not supported (MAX, AVE or STOCHASTIC)"
    if len(layer.tops) > 1 and p.pool != "MAX":
        return f"only MAX pooling has a second (mask) top, as in Caffe; this is {p.pool}"
    return None


@register_converter("Pooling", shape=pooling_shape, check=_pooling_check, keras_classes=())
def pooling(ctx):
    import keras

    from ..layers.pooling import CaffePooling2D

    p = ctx.param("pooling_param")
    method = _METHODS[p.pool]  # _pooling_check refused the others up front
    shape = ctx.in_shapes[0]
    k, s, pad, ceil = pool_geometry(ctx.layer, shape)
    if len(ctx.step.outputs) > 1:
        from ..layers.pooling import CaffeMaxPoolingWithArgmax

        # the argmax mask SegNet's Upsample unpools with
        layer = CaffeMaxPoolingWithArgmax(pool_size=k, strides=s, pad=pad, ceil_mode=ceil,
                                          name=ctx.name)
        return list(ctx.add(layer, ctx.inputs[0]))
    if method == "stochastic" and any(pad):
        ctx.fail(f"STOCHASTIC pooling takes no padding (Caffe refuses it), found {pad}")
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
