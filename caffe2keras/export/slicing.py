"""A step's Keras-layout arrays, computed whole or in slices of output channels.

Layers above twice BLOCK_BYTES are transformed and written in slices of about that size
(their output channels), so memory stays near one slice, not one layer; the mapped
caffemodel pages of a slice are dropped once it is written.
"""
from __future__ import annotations

import numpy as np

from ..emit.context import LayerContext
from ..errors import InternalError
from ..pages import release

# Layers above twice this many bytes are transformed and written in slices of about this
# size (output channels): small enough for the transposes to stay in cache. Read at call
# time (tests lower it).
BLOCK_BYTES = 1 << 20


class Result:
    """A step's Keras-layout arrays: {keras layer name: [arrays]}, either computed whole or
    produced slice by slice (``blocks()``) along one axis per array."""

    def __init__(self, names, shapes, dtypes, axes, blocks):
        self.names = names        # [(keras layer name, count)] in output order
        self.shapes = shapes      # {(name, i): full shape}
        self.dtypes = dtypes      # {(name, i): dtype}
        self.axes = axes          # {(name, i): axis the blocks split, or None (whole)}
        self.blocks = blocks      # () -> iterator of {(name, i): (lo, hi, array)}

    def array_keys(self):
        return [(n, i) for n, c in self.names for i in range(c)]


def _run(fn, ctx):
    out = fn(ctx)
    if not isinstance(out, dict):
        raise InternalError(f"{ctx.graph.net.path}: layer '{ctx.layer.name}': the weights "
                            f"function for {ctx.step.type} returned {type(out).__name__}, "
                            f"not a dict")
    return {name: [np.asarray(a) for a in arrays] for name, arrays in out.items()}


class _SlicedContext(LayerContext):
    """A step's context whose first layer's blobs are rows [lo, hi) of their axis 0."""

    @property
    def blobs(self):
        return [b[self._rows] for b in self.layer.blobs]


def _sliced_context(ctx, lo, hi):
    sliced = _SlicedContext.__new__(_SlicedContext)
    sliced.__dict__.update(ctx.__dict__)
    sliced._rows = slice(lo, hi)
    return sliced


def whole(out, dtype):
    names = [(n, len(a)) for n, a in out.items()]
    arrays = {(n, i): cast(a, dtype) for n, arrs in out.items() for i, a in enumerate(arrs)}
    shapes = {k: a.shape for k, a in arrays.items()}
    dtypes = {k: a.dtype for k, a in arrays.items()}

    def blocks():
        yield {k: (0, a.shape[0] if a.ndim else 1, a) for k, a in arrays.items()}
    return Result(names, shapes, dtypes, dict.fromkeys(arrays), blocks)


def cast(a, dtype):
    a = np.asarray(a)
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    return a


def compute(fn, ctx, dtype=np.float32) -> Result:
    """Apply the weights function ``fn`` to the step, in slices when its blobs are large.

    Slicing runs ``fn`` on rows of the first layer's blobs (their axis 0: output channels
    for Convolution and InnerProduct; a slice's context shows only its rows), and is used
    only if ``fn`` acts row by row on this layer's own data: ``fn(rows 0..2r)`` must equal
    ``fn(rows 0..r)`` and ``fn(rows r..2r)`` joined along one axis per array, bit for bit.
    A function that fails on a slice, or reshapes by the layer's full size, runs once on
    the whole blobs instead (about one layer of memory).
    """
    blobs = ctx.layer.blobs
    total = sum(b.nbytes for b in blobs)
    n = blobs[0].shape[0] if blobs and blobs[0].ndim else 0
    # a fused activation has no blobs: only a second layer's blobs (Scale) forbid slices
    if total <= 2 * BLOCK_BYTES or any(n.layer.blobs for n in ctx.nodes[1:]) or \
            any(b.ndim == 0 or b.shape[0] != n for b in blobs):
        return whole(_run(fn, ctx), dtype)
    rows = _block_rows(n, max(1, BLOCK_BYTES * n // total))
    if 2 * rows >= n:
        return whole(_run(fn, ctx), dtype)
    try:
        a = _run(fn, _sliced_context(ctx, 0, rows))
        b = _run(fn, _sliced_context(ctx, rows, 2 * rows))
        ab = _run(fn, _sliced_context(ctx, 0, 2 * rows))
        plan = _split_axes(a, b, ab, rows)
    except Exception:  # noqa: BLE001 - a function that cannot take slices runs whole
        plan = None
    if plan is None:
        return whole(_run(fn, ctx), dtype)
    axes, per_row = plan
    names = [(name, len(arrs)) for name, arrs in a.items()]
    shapes = {}
    for name, arrs in a.items():
        for i, arr in enumerate(arrs):
            s = list(arr.shape)
            s[axes[name, i]] = per_row[name, i] * n
            shapes[name, i] = tuple(s)
    ready = {0: a, rows: b}  # the check's slices are the first two blocks

    def blocks():
        for lo in range(0, n, rows):
            hi = min(n, lo + rows)
            part = ready.pop(lo, None)
            if part is None:
                part = _run(fn, _sliced_context(ctx, lo, hi))
            yield {(name, i): (lo * per_row[name, i], hi * per_row[name, i], cast(arr, dtype))
                   for name, arrs in part.items() for i, arr in enumerate(arrs)}
            release([blob[lo:hi] for blob in blobs])
    dtypes = {k: np.dtype(dtype) for k in shapes}
    return Result(names, shapes, dtypes, axes, blocks)


def _block_rows(n, most):
    """Rows per block: a divisor of ``n`` near ``most`` when there is one (every chunk of
    the file then full), else ``n`` split evenly."""
    for rows in range(most, max(1, most // 2) - 1, -1):
        if n % rows == 0:
            return rows
    return -(-n // -(-n // most))


def _split_axes(a, b, ab, rows):
    """The axis each output array grows along with the rows, if slicing is exact."""
    if a.keys() != b.keys() or a.keys() != ab.keys():
        return None
    axes, per_row = {}, {}
    for name in a:
        if not len(a[name]) == len(b[name]) == len(ab[name]):
            return None
        for i, (x, y, xy) in enumerate(zip(a[name], b[name], ab[name])):
            if not x.ndim == y.ndim == xy.ndim or x.shape != y.shape:
                return None
            diff = [k for k in range(x.ndim) if x.shape[k] != xy.shape[k]]
            if len(diff) != 1:
                return None
            k = diff[0]
            if xy.shape[k] != 2 * x.shape[k] or x.shape[k] % rows:
                return None
            if not _same_bits(np.concatenate([x, y], axis=k), xy):
                return None
            axes[name, i] = k
            per_row[name, i] = x.shape[k] // rows
    return axes, per_row


def _same_bits(x, y):
    """Exact equality, NaNs included (a layout transform only moves values)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind in "fc" and x.dtype.itemsize in (4, 8, 16):
        as_int = np.dtype(f"u{min(x.dtype.itemsize, 8)}")
        if x.dtype.itemsize == 16:
            x, y = x.view(np.float64), y.view(np.float64)
        return np.array_equal(x.view(as_int), y.view(as_int))
    return np.array_equal(x, y)
