"""Convolution pieces Keras lacks: Caffe's grouped/dilated Deconvolution, and strided
subsampling (for convolutions Keras refuses: stride > 1 together with dilation > 1)."""
from __future__ import annotations

import keras
from keras import ops


def _pair(v, what):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2:
        raise ValueError(f"{what} needs 1 or 2 values, got {v}")
    return v


@keras.saving.register_keras_serializable(package="caffe2keras")
class Subsample2D(keras.layers.Layer):
    """Keeps every ``strides``-th row and column of an NHWC tensor, starting at the
    first: ``x[:, ::sh, ::sw, :]``."""

    def __init__(self, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.strides = _pair(strides, "strides")

    def call(self, x):
        sh, sw = self.strides
        return x[:, ::sh, ::sw, :]

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        sh, sw = self.strides
        return (n, None if h is None else -(-h // sh), None if w is None else -(-w // sw), c)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


@keras.saving.register_keras_serializable(package="caffe2keras")
class GroupedConv2DTranspose(keras.layers.Layer):
    """Caffe's Deconvolution: a transposed convolution with filter groups and dilation,
    whose full output (``(H-1)*stride + dilation*(k-1) + 1`` rows) loses ``cropping``
    rows/columns on each side (Caffe's ``pad``).

    NHWC. The kernel is ``(kh, kw, filters // groups, in_channels)``, Keras's
    Conv2DTranspose layout with output channels per group; group ``g`` maps input
    channels ``[g*Cin/G, (g+1)*Cin/G)`` to outputs ``[g*F/G, (g+1)*F/G)``.

    Computed as one grouped convolution of the zero-interleaved input with the flipped
    kernel, so every group runs in a single op.
    """

    def __init__(self, filters, kernel_size, strides=1, cropping=0, dilation_rate=1,
                 groups=1, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.cropping = _pair(cropping, "cropping")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.groups = int(groups)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        if self.filters % self.groups:
            raise ValueError(f"groups {self.groups} must divide filters {self.filters}")
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        c = input_shape[-1]
        if c is None or c % self.groups:
            raise ValueError(f"groups {self.groups} must divide the input channels {c}")
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, self.filters // self.groups, c),
            initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                    initializer=self.bias_initializer) \
            if self.use_bias else None

    def _out_len(self, n, i):
        if n is None:
            return None
        k, s, p, d = (self.kernel_size[i], self.strides[i], self.cropping[i],
                      self.dilation_rate[i])
        return s * (n - 1) + d * (k - 1) + 1 - 2 * p

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, self._out_len(h, 0), self._out_len(w, 1), self.filters)

    def call(self, x):
        _, h, w, c = x.shape
        sh, sw = self.strides
        g = self.groups
        if sh > 1 or sw > 1:  # zero-interleave: x[i] lands at row i*s
            x = ops.reshape(x, (-1, h, 1, w, 1, c))
            x = ops.pad(x, [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]])
            x = ops.reshape(x, (-1, h * sh, w * sw, c))
        # Full correlation pads ext-1 each side; Caffe's pad crops; the interleave above
        # left s-1 extra zero rows at the end.
        before, after = [], []
        for i, s in enumerate(self.strides):
            ext = self.dilation_rate[i] * (self.kernel_size[i] - 1) + 1
            before.append(ext - 1 - self.cropping[i])
            after.append(ext - 1 - self.cropping[i] - (s - 1))
        if any(v > 0 for v in before + after):
            x = ops.pad(x, [[0, 0], [max(before[0], 0), max(after[0], 0)],
                            [max(before[1], 0), max(after[1], 0)], [0, 0]])
        if any(v < 0 for v in before + after):
            hh, ww = x.shape[1], x.shape[2]
            x = x[:, max(-before[0], 0):hh - max(-after[0], 0),
                  max(-before[1], 0):ww - max(-after[1], 0), :]
        kh, kw = self.kernel_size
        fg = self.filters // g
        # (kh, kw, F/G, G*Cin/G) -> flipped (kh, kw, Cin/G, F): a grouped conv kernel
        k = ops.reshape(self.kernel, (kh, kw, fg, g, c // g))
        k = ops.flip(k, axis=(0, 1))
        k = ops.reshape(ops.transpose(k, (0, 1, 4, 3, 2)), (kh, kw, c // g, self.filters))
        y = ops.conv(x, k, strides=1, padding="valid", dilation_rate=self.dilation_rate)
        if self.use_bias:
            y = y + self.bias
        return y

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "cropping": self.cropping, "dilation_rate": self.dilation_rate,
                "groups": self.groups, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
