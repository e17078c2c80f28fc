"""Caffe's local normalizations: LRN across channels and within a channel, and MVN."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="caffe2keras")
class LRNAcrossChannels(keras.layers.Layer):
    """Caffe LRN, ACROSS_CHANNELS: ``x / (k + alpha/n * sum of x^2 over the n
    neighbouring channels)^beta``, the channel window centred and zero-padded.
    ``axis`` is the channel axis (-1 for NHWC)."""

    def __init__(self, local_size=5, alpha=1.0, beta=0.75, k=1.0, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if local_size % 2 == 0 or local_size <= 0:
            raise ValueError(f"local_size must be odd and positive, got {local_size}")
        self.local_size = int(local_size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)
        self.axis = int(axis)

    def call(self, x):
        axis = self.axis % len(x.shape)
        c = x.shape[axis]
        half = self.local_size // 2
        sq = x * x
        if half:
            # A sum of shifted slices beats a banded matmul or a pooling over channels
            # on all three backends (n adds, no C x C work).
            width = [[0, 0]] * len(x.shape)
            width[axis] = [half, half]
            sq = ops.pad(sq, width)

            def window(i):
                idx = [slice(None)] * len(x.shape)
                idx[axis] = slice(i, i + c)
                return sq[tuple(idx)]

            total = window(0)
            for i in range(1, self.local_size):
                total = total + window(i)
        else:
            total = sq
        scale = self.k + (self.alpha / self.local_size) * total
        return x * ops.power(scale, -self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "local_size": self.local_size, "alpha": self.alpha,
                "beta": self.beta, "k": self.k, "axis": self.axis}


@keras.saving.register_keras_serializable(package="caffe2keras")
class LRNWithinChannel(keras.layers.Layer):
    """Caffe LRN, WITHIN_CHANNEL (NHWC): ``x / (1 + alpha * mean of x^2 over the n x n
    window)^beta``, the window centred and zero-padded, its mean always over n*n cells.
    Caffe ignores ``k`` here."""

    def __init__(self, local_size=5, alpha=1.0, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        if local_size % 2 == 0 or local_size <= 0:
            raise ValueError(f"local_size must be odd and positive, got {local_size}")
        self.local_size = int(local_size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, x):
        n, half = self.local_size, self.local_size // 2
        sq = ops.pad(x * x, [[0, 0], [half, half], [half, half], [0, 0]])
        mean = ops.average_pool(sq, (n, n), 1, padding="valid")
        return x * ops.power(1.0 + self.alpha * mean, -self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "local_size": self.local_size, "alpha": self.alpha,
                "beta": self.beta}


@keras.saving.register_keras_serializable(package="caffe2keras")
class MVN(keras.layers.Layer):
    """Caffe MVN: subtract the mean over ``axes``; with ``normalize_variance`` divide by
    ``sqrt(variance) + epsilon`` (Caffe adds epsilon to the standard deviation, not to
    the variance). Empty ``axes`` means each value is its own group (output 0)."""

    def __init__(self, axes=(1, 2), normalize_variance=True, epsilon=1e-9, **kwargs):
        super().__init__(**kwargs)
        self.axes = tuple(int(a) for a in axes)
        self.normalize_variance = bool(normalize_variance)
        self.epsilon = float(epsilon)

    def call(self, x):
        if not self.axes:
            return x - x
        centred = x - ops.mean(x, axis=self.axes, keepdims=True)
        if not self.normalize_variance:
            return centred
        std = ops.sqrt(ops.mean(centred * centred, axis=self.axes, keepdims=True))
        return centred / (std + self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axes": list(self.axes),
                "normalize_variance": self.normalize_variance, "epsilon": self.epsilon}
