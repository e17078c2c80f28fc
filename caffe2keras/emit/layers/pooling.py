"""Caffe's 2-D pooling where Keras's differs: padding, ceil rounding, the AVE divisor,
and test-time STOCHASTIC pooling."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ...shapes import pooled_size
from .conv import _pair

METHODS = ("max", "ave", "stochastic")
_FLT_MIN = float(np.finfo(np.float32).tiny)  # Caffe's starting sum for STOCHASTIC




@keras.saving.register_keras_serializable(package="caffe2keras")
class CaffePooling2D(keras.layers.Layer):
    """NHWC pooling exactly as Caffe's Pooling layer computes it.

    - Output size: ``ceil((H + 2*pad - k) / stride) + 1`` (``floor`` when ``ceil_mode``
      is False), less one when the last window would start in the bottom padding.
    - ``max``: padding never wins (it is -inf, not 0).
    - ``ave``: each window's divisor counts padded cells but not the part that hangs
      past ``H + pad``.
    - ``stochastic``: Caffe's test-time rule, ``sum(x*x) / sum(x)`` over each window;
      windows start at ``i*stride`` (Caffe ignores ``pad`` here) and are clipped to the
      input.
    """

    def __init__(self, method="max", pool_size=2, strides=None, pad=0, ceil_mode=True,
                 **kwargs):
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = _pair(self.pool_size if strides is None else strides, "strides")
        self.pad = _pair(pad, "pad")
        self.ceil_mode = bool(ceil_mode)
        if any(p >= k for p, k in zip(self.pad, self.pool_size)):
            raise ValueError(f"pad {self.pad} must be smaller than pool_size {self.pool_size}")
        self.input_spec = keras.layers.InputSpec(ndim=4)
        self._divisor_fix = None

    def _out(self, n, i):
        return pooled_size(n, self.pool_size[i], self.strides[i], self.pad[i], self.ceil_mode)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, None if h is None else self._out(h, 0),
                None if w is None else self._out(w, 1), c)

    def _padding(self, h, w):
        """(before, after) per spatial axis so that 'valid' windows are Caffe's."""
        out = []
        for i, n in enumerate((h, w)):
            k, s = self.pool_size[i], self.strides[i]
            before = 0 if self.method == "stochastic" else self.pad[i]
            span = (self._out(n, i) - 1) * s + k  # rows the windows cover, from -before
            out.append((before, max(span - before - n, 0)))
        return out

    def build(self, input_shape):
        _, h, w, _ = input_shape
        if h is None or w is None:
            raise ValueError("CaffePooling2D needs a known input height and width")
        if self.method == "ave":
            # Keras averages over the full window; Caffe divides by the window clipped
            # to [-pad, H+pad). Precompute the ratio per output cell.
            ratio = []
            for i, n in enumerate((h, w)):
                k, s, p = self.pool_size[i], self.strides[i], self.pad[i]
                starts = np.arange(self._out(n, i)) * s - p
                ratio.append(k / (np.minimum(starts + k, n + p) - starts))
            fix = np.outer(ratio[0], ratio[1]).astype("float32")[:, :, None]
            self._divisor_fix = None if np.all(fix == 1) else fix

    def call(self, x):
        _, h, w, _ = x.shape
        pads = self._padding(h, w)
        padded = any(b or a for b, a in pads)
        width = [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]
        k, s = self.pool_size, self.strides
        if self.method == "max":
            if padded:
                x = ops.pad(x, width, constant_values=float("-inf"))
            return ops.max_pool(x, k, s, padding="valid")
        if padded:
            x = ops.pad(x, width)
        if self.method == "ave":
            y = ops.average_pool(x, k, s, padding="valid")
            if self._divisor_fix is not None:
                y = y * ops.cast(self._divisor_fix, y.dtype)
            return y
        area = float(k[0] * k[1])
        total = ops.average_pool(x, k, s, padding="valid") * area
        squares = ops.average_pool(x * x, k, s, padding="valid") * area
        return squares / (total + _FLT_MIN)

    def get_config(self):
        return {**super().get_config(), "method": self.method, "pool_size": self.pool_size,
                "strides": self.strides, "pad": self.pad, "ceil_mode": self.ceil_mode}


@keras.saving.register_keras_serializable(package="caffe2keras")
class CaffeMaxPoolingWithArgmax(keras.layers.Layer):
    """Caffe's MAX pooling with its second top: ``[pooled, mask]``, the mask holding for
    each output the flat index ``h * W + w`` of its window's maximum in the input plane
    (as float, like Caffe's top). Windows start at ``i * stride - pad`` and are clipped
    to the input; the first maximum in row-major order wins ties, as in Caffe."""

    def __init__(self, pool_size=2, strides=None, pad=0, ceil_mode=True, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = _pair(self.pool_size if strides is None else strides, "strides")
        self.pad = _pair(pad, "pad")
        self.ceil_mode = bool(ceil_mode)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _out(self, n, i):
        return pooled_size(n, self.pool_size[i], self.strides[i], self.pad[i], self.ceil_mode)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        shape = (n, self._out(h, 0), self._out(w, 1), c)
        return [shape, shape]

    def call(self, x):
        _, h, w, _ = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.pool_size, self.strides, self.pad
        oh, ow = self._out(h, 0), self._out(w, 1)
        # pad with -inf so that every window offset is a strided slice; padded cells and
        # cells past the input never win (Caffe clips its windows to the input)
        below, right = (oh - 1) * sh + kh - h - ph, (ow - 1) * sw + kw - w - pw
        x = ops.pad(x, [[0, 0], [ph, max(below, 0)], [pw, max(right, 0)], [0, 0]],
                    constant_values=float("-inf"))
        values, index = [], []
        rows = np.arange(oh) * sh - ph
        cols = np.arange(ow) * sw - pw
        for i in range(kh):
            for j in range(kw):
                values.append(x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :])
                index.append(np.add.outer((rows + i) * w, cols + j))
        values = ops.stack(values, axis=-1)                        # (N, oh, ow, C, K)
        pooled = ops.max(values, axis=-1)
        k = len(index)
        first = ops.min(ops.where(ops.equal(values, pooled[..., None]),
                                  ops.arange(k, dtype="int32"), k), axis=-1)
        table = np.stack(index, axis=-1).astype("float32")[:, :, None, :]  # (oh, ow, 1, K)
        mask = ops.sum(ops.one_hot(first, k, dtype=x.dtype) * ops.cast(table, x.dtype), -1)
        return [pooled, mask]

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size,
                "strides": self.strides, "pad": self.pad, "ceil_mode": self.ceil_mode}
