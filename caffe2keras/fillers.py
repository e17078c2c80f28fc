"""Fresh weights for a net without a caffemodel, drawn as Caffe's fillers would.

A layer's blobs start from the fillers its prototxt names (weight_filler, bias_filler,
Scale's filler, PReLU's filler, Normalize's scale_filler...): which fields, and what each
blob starts as without one, are the ``fillers`` of the type's record (emit/registry.py).
Where the prototxt names none, Caffe would start from zeros (its default "constant"
filler), which cannot train; weights then take Keras's default (Glorot uniform, which is Caffe's xavier filler with
variance_norm AVERAGE) and biases zero.

Drawn with numpy in Caffe's blob layout, then converted by the same weights functions as
real weights: the Keras initializers would compile one random kernel per weight shape on
JAX (about 10 s for a GoogLeNet).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import CaffeFormatError
from .proto.message import Message


def _fans(shape):
    """Caffe's fan_in / fan_out: count over axis 0 / over axis 1."""
    count = math.prod(shape)
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return max(fan_in, 1), max(fan_out, 1)


def _norm_n(filler, shape):
    fan_in, fan_out = _fans(shape)
    norm = filler.variance_norm
    if norm == "FAN_OUT":
        return fan_out
    if norm == "AVERAGE":
        return (fan_in + fan_out) / 2
    return fan_in


def fill(filler: Message, shape, rng: np.random.Generator, layer=None) -> np.ndarray:
    """One blob of ``shape`` drawn from a Caffe FillerParameter."""
    shape = tuple(shape)
    kind = filler.type
    if kind == "constant":
        return np.full(shape, filler.value, np.float32)
    if kind == "uniform":
        return rng.uniform(filler.min, filler.max, shape).astype(np.float32)
    if kind == "gaussian":
        x = rng.normal(filler.mean, filler.std, shape).astype(np.float32)
        if filler.sparse >= 0 and len(shape) >= 2:
            # Caffe keeps each weight with probability sparse / num_outputs (its rows)
            keep = min(1.0, filler.sparse / shape[0])
            x *= rng.random(shape) < keep
        return x
    if kind == "positive_unitball":
        x = rng.random(shape).astype(np.float32)
        rows = x.reshape(shape[0] if shape else 1, -1)
        rows /= rows.sum(axis=1, keepdims=True)
        return x
    if kind == "xavier":
        scale = math.sqrt(3.0 / _norm_n(filler, shape))
        return rng.uniform(-scale, scale, shape).astype(np.float32)
    if kind == "msra":
        return rng.normal(0.0, math.sqrt(2.0 / _norm_n(filler, shape)), shape).astype(np.float32)
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise CaffeFormatError(f"the bilinear filler needs a square 4-D blob, not "
                                   f"{list(shape)}", layer=layer)
        k = shape[3]
        f = math.ceil(k / 2)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        ramp = 1 - np.abs(np.arange(k) / f - c)
        return np.broadcast_to(np.outer(ramp, ramp), shape).astype(np.float32)
    raise CaffeFormatError(f"unknown filler type '{kind}' (known: constant, uniform, "
                           f"gaussian, positive_unitball, xavier, msra, bilinear)", layer=layer)


def glorot(shape, rng):
    """Keras's Glorot uniform = Caffe's xavier over (fan_in + fan_out) / 2."""
    fan_in, fan_out = _fans(shape)
    scale = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-scale, scale, shape).astype(np.float32)


def _default(kind, shape, rng):
    if kind == "zero":
        return np.zeros(shape, np.float32)
    if kind == "one":
        return np.ones(shape, np.float32)
    if kind == "prelu":
        return np.full(shape, 0.25, np.float32)
    return glorot(shape, rng)


def fresh_blobs(layer, param_shapes, rng: np.random.Generator):
    """Blobs (Caffe layout) for a layer without weights, or None to leave its Keras
    layers to their own initializers (types whose record names no fillers)."""
    from .emit.registry import layer_type

    rec = layer_type(layer.type)
    spec = None if rec is None else rec.fillers
    if spec is None:
        return None
    if callable(spec):
        return spec(layer, param_shapes, rng)
    p = layer.param(spec.param)
    fields, unset = spec.fields, spec.unset
    blobs = []
    for i, shape in enumerate(param_shapes):
        field = fields[i] if i < len(fields) else None
        if field is not None and p.has(field):
            blobs.append(fill(getattr(p, field), shape, rng, layer.name))
        else:
            blobs.append(_default(unset[min(i, len(unset) - 1)], shape, rng))
    return blobs
