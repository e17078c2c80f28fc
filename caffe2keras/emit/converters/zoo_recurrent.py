"""BVLC's recurrent layers LSTM and RNN: shape, weights, fresh weights, converter.

Caffe (recurrent_layer.cpp, lstm_layer.cpp, rnn_layer.cpp): bottoms x (T, N, ...),
cont (T, N), an optional static input x_static (N, ...), and with
``recurrent_param.expose_hidden`` the initial states h0 (and c0 for LSTM), each
(1, N, num_output); tops h (LSTM) or o (RNN), (T, N, num_output), then h_T (and c_T).

Layout: these blobs keep Caffe's axis order, so the Keras batch axis of x is Caffe's
time axis T (any length works) and the N streams are fixed by the prototxt. Run the
model on a whole sequence at once: ``model({"x": x, "cont": cont})`` with x (T, N, D).
Each call starts from zero state (Caffe's first forward pass; Caffe carries h_T into
the next forward call, which only matters where cont_1 is nonzero), or from h0/c0.

Blobs, in Caffe's order: LSTM W_xc (4H, D), b_c (4H), [W_xc_static (4H, Ds)], W_hc
(4H, H); RNN W_xh (H, D), b_h (H), [W_xh_static (H, Ds)], W_hh (H, H), W_ho (H, H),
b_o (H). The Keras layer holds the same matrices transposed, (in, out).
"""
from __future__ import annotations

import math

import numpy as np

from ...shapes import shape_fail
from ..registry import register_converter

_STATES = {"LSTM": 2, "RNN": 1}
_GATES = {"LSTM": 4, "RNN": 1}


def _has_static(layer, n_bottoms):
    p = layer.param("recurrent_param")
    return n_bottoms > 2 + p.expose_hidden * _STATES[layer.type]


def recurrent_shape(layer, bottoms):
    p = layer.param("recurrent_param")
    t = layer.type
    states = _STATES[t]
    hidden = states * p.expose_hidden
    lo = 2 + hidden
    if not lo <= len(bottoms) <= lo + 1:
        shape_fail(layer, f"{t} takes x, cont, an optional x_static"
                           f"{' and ' + str(hidden) + ' initial state(s)' if hidden else ''}: "
                           f"{lo} or {lo + 1} bottoms, found {len(bottoms)}")
    if len(layer.tops) != 1 + hidden:
        shape_fail(layer, f"{t} with expose_hidden {str(bool(p.expose_hidden)).lower()} has "
                           f"{1 + hidden} top(s), found {len(layer.tops)}")
    if p.num_output <= 0:
        shape_fail(layer, "recurrent_param needs num_output > 0")
    x, cont = tuple(bottoms[0]), tuple(bottoms[1])
    if len(x) < 3:
        shape_fail(layer, f"x must be (T, N, ...) with at least 3 axes (Caffe's inner "
                           f"product runs from axis 2), found {list(x)}")
    if cont != x[:2]:
        shape_fail(layer, f"cont must be (T, N) = {list(x[:2])}, found {list(cont)}")
    h, n = p.num_output, x[1]
    width = _GATES[t] * h
    params = [(width, math.prod(x[2:])), (width,)]
    if _has_static(layer, len(bottoms)):
        s = tuple(bottoms[2])
        if len(s) < 2 or s[0] != n:
            shape_fail(layer, f"x_static must be (N, ...) with N = {n} and at least 2 "
                               f"axes, found {list(s)}")
        params.append((width, math.prod(s[1:])))
    for k, b in enumerate(bottoms[len(bottoms) - hidden:]):
        if tuple(b) != (1, n, h):
            shape_fail(layer, f"initial state {k} must be (1, N, num_output) = "
                               f"{[1, n, h]}, found {list(b)}")
    params.append((width, h))
    if t == "RNN":
        params += [(h, h), (h,)]
    tops = [(x[0], n, h)] + [(1, n, h)] * hidden
    return tops, params


def _is_bias(layer, i, n_params):
    """Blob i of a recurrent layer is a bias (filled by bias_filler)."""
    return i == 1 or (layer.type == "RNN" and i == n_params - 1)


def recurrent_fresh(layer, param_shapes, rng):
    """Fresh blobs from recurrent_param's weight_filler / bias_filler (unset: Glorot
    uniform weights and zero biases, as for every layer here)."""
    from ...fillers import fill, glorot

    p = layer.param("recurrent_param")
    blobs = []
    for i, shape in enumerate(param_shapes):
        field = "bias_filler" if _is_bias(layer, i, len(param_shapes)) else "weight_filler"
        if p.has(field):
            blobs.append(fill(getattr(p, field), shape, rng, layer.name))
        elif field == "bias_filler":
            blobs.append(np.zeros(shape, np.float32))
        else:
            blobs.append(glorot(shape, rng))
    return blobs


def recurrent_weights(ctx):
    """Caffe's (out, in) matrices transposed to the Keras layer's (in, out)."""
    out = []
    for b in ctx.blobs:
        a = np.asarray(b, dtype=np.float32)
        out.append(a.T if a.ndim == 2 else a.reshape(-1))
    return {ctx.name: out}


def _convert(ctx):
    from ..layers.zoo_recurrent import CaffeLSTM, CaffeRNN

    p = ctx.param("recurrent_param")
    shapes = ctx.in_shapes
    static = _has_static(ctx.layer, len(shapes))
    cls = CaffeLSTM if ctx.layer.type == "LSTM" else CaffeRNN
    if shapes[0][0] is None:
        ctx.fail("the recurrent input's time axis is unknown")
    layer = cls(p.num_output, static_input=static, expose_hidden=p.expose_hidden,
                x_nhwc=len(shapes[0]) == 4, static_nhwc=static and len(shapes[2]) == 4,
                name=ctx.name)
    out = ctx.add(layer, list(ctx.inputs))
    return list(out) if isinstance(out, (list, tuple)) else [out]


def recurrent_note(layer):
    return ("x is (T, N, ...): time is the Keras batch axis (any length), the N streams are "
            "fixed; each call starts from zero state (or h0/c0 with expose_hidden)")


for _t in ("LSTM", "RNN"):
    register_converter(_t, weights=recurrent_weights, shape=recurrent_shape,
                       fillers=recurrent_fresh, keras_classes=f"Caffe{_t}",
                       note=recurrent_note)(_convert)
