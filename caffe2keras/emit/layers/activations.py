"""Element-wise Caffe activations that Keras has no layer for.

Each computes exactly what Caffe's CPU forward computes, in the same order of operations
(so float32 results agree to rounding), and works on any rank and layout.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


class _Elementwise(keras.layers.Layer):
    """Shape-preserving, weightless, element-wise."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="caffe2keras")
class SlopedReLU(_Elementwise):
    """Caffe ReLU with a negative ``negative_slope``, which keras.layers.LeakyReLU
    refuses: ``x`` where positive, else ``negative_slope * x``."""

    def __init__(self, negative_slope, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = float(negative_slope)

    def call(self, x):
        return ops.where(ops.greater(x, 0), x, x * self.negative_slope)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


@keras.saving.register_keras_serializable(package="caffe2keras")
class AbsVal(_Elementwise):
    """Caffe AbsVal: ``|x|``."""

    def call(self, x):
        return ops.abs(x)


@keras.saving.register_keras_serializable(package="caffe2keras")
class Power(_Elementwise):
    """Caffe Power: ``(shift + scale * x) ** power``.

    Like Caffe, a zero ``power * scale`` makes the output constant
    (``1`` when power is 0, else ``shift ** power``) whatever the input holds.
    """

    def __init__(self, power=1.0, scale=1.0, shift=0.0, **kwargs):
        super().__init__(**kwargs)
        self.power = float(power)
        self.scale = float(scale)
        self.shift = float(shift)

    def call(self, x):
        if self.power * self.scale == 0:
            with np.errstate(all="ignore"):  # pow(0, -1) = inf, pow(-1, 0.5) = nan
                value = 1.0 if self.power == 0 else float(
                    np.power(np.float32(self.shift), np.float32(self.power)))
            return ops.full_like(x, value)
        y = x
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        if self.power == 2:
            return ops.square(y)
        if self.power != 1:
            y = ops.power(y, self.power)
        return y

    def get_config(self):
        return {**super().get_config(), "power": self.power, "scale": self.scale,
                "shift": self.shift}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Exp(_Elementwise):
    """Caffe Exp: ``base ** (shift + scale * x)``; ``base`` -1 means e.

    Computed as Caffe does: ``outer * exp(inner * x)`` with ``inner = ln(base) * scale``
    and ``outer = base ** shift``.
    """

    def __init__(self, base=-1.0, scale=1.0, shift=0.0, **kwargs):
        super().__init__(**kwargs)
        if base != -1 and not base > 0:
            raise ValueError(f"Exp base must be positive or -1 (for e), got {base}")
        self.base = float(base)
        self.scale = float(scale)
        self.shift = float(shift)

    def _factors(self):
        import math
        log_base = 1.0 if self.base == -1 else math.log(self.base)
        inner = log_base * self.scale
        if self.shift == 0:
            outer = 1.0
        else:
            outer = math.exp(self.shift) if self.base == -1 else self.base ** self.shift
        return inner, outer

    def call(self, x):
        inner, outer = self._factors()
        y = ops.exp(x if inner == 1 else x * inner)
        return y if outer == 1 else y * outer

    def get_config(self):
        return {**super().get_config(), "base": self.base, "scale": self.scale,
                "shift": self.shift}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Log(_Elementwise):
    """Caffe Log: ``log_base(shift + scale * x)``; ``base`` -1 means e."""

    def __init__(self, base=-1.0, scale=1.0, shift=0.0, **kwargs):
        super().__init__(**kwargs)
        if base != -1 and not (base > 0 and base != 1):
            raise ValueError(f"Log base must be positive and not 1, or -1 (for e), got {base}")
        self.base = float(base)
        self.scale = float(scale)
        self.shift = float(shift)

    def call(self, x):
        import math
        y = x
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        y = ops.log(y)
        base_scale = 1.0 if self.base == -1 else 1.0 / math.log(self.base)
        return y if base_scale == 1 else y * base_scale

    def get_config(self):
        return {**super().get_config(), "base": self.base, "scale": self.scale,
                "shift": self.shift}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Threshold(_Elementwise):
    """Caffe Threshold: 1 where ``x > threshold``, else 0."""

    def __init__(self, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, x):
        return ops.cast(ops.greater(x, self.threshold), x.dtype)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Clip(_Elementwise):
    """Caffe Clip: ``max(min, min(x, max))``."""

    def __init__(self, min=0.0, max=1.0, **kwargs):
        super().__init__(**kwargs)
        self.min = float(min)
        self.max = float(max)

    def call(self, x):
        return ops.maximum(ops.minimum(x, self.max), self.min)

    def get_config(self):
        return {**super().get_config(), "min": self.min, "max": self.max}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Swish(_Elementwise):
    """Caffe Swish: ``x * sigmoid(beta * x)``."""

    def __init__(self, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = float(beta)

    def call(self, x):
        return x * ops.sigmoid(x if self.beta == 1 else x * self.beta)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


__all__ = ["AbsVal", "Clip", "Exp", "Log", "Power", "SlopedReLU", "Swish", "Threshold"]
