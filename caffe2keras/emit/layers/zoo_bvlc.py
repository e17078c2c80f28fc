"""Keras layers for BVLC's rarer layers: Im2col, Parameter, BatchReindex, Filter.
(SPP is built from the pooling layers, see emit/converters/zoo_bvlc.py.)"""
from __future__ import annotations

import keras
from keras import ops

from .conv import _pair


@keras.saving.register_keras_serializable(package="caffe2keras")
class Im2col(keras.layers.Layer):
    """Caffe's Im2col on NHWC: every kernel window laid out along the channels, channel
    ``c * kh * kw + i * kw + j`` holding input channel c at kernel row i, column j (Caffe's
    order), zero padding ``pad`` on each side, ``strides`` and ``dilation``."""

    def __init__(self, kernel_size, strides=1, pad=0, dilation=1, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.pad = _pair(pad, "pad")
        self.dilation = _pair(dilation, "dilation")
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _out(self, n, i):
        ext = self.dilation[i] * (self.kernel_size[i] - 1) + 1
        return (n + 2 * self.pad[i] - ext) // self.strides[i] + 1

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        k = self.kernel_size[0] * self.kernel_size[1]
        return (n, None if h is None else self._out(h, 0),
                None if w is None else self._out(w, 1), None if c is None else c * k)

    def call(self, x):
        _, h, w, c = x.shape
        (ph, pw), (sh, sw), (dh, dw) = self.pad, self.strides, self.dilation
        if ph or pw:
            x = ops.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        oh, ow = self._out(h, 0), self._out(w, 1)
        cols = []
        for i in range(self.kernel_size[0]):
            for j in range(self.kernel_size[1]):
                r, q = i * dh, j * dw
                cols.append(x[:, r:r + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw, :])
        k = len(cols)
        # (N, oh, ow, C, kh*kw) -> channels c * kh*kw + (i * kw + j)
        return ops.reshape(ops.stack(cols, axis=-1), (-1, oh, ow, c * k))

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "strides": self.strides, "pad": self.pad, "dilation": self.dilation}


@keras.saving.register_keras_serializable(package="caffe2keras")
class LearnedBlob(keras.layers.Layer):
    """Caffe's Parameter layer: outputs its one weight, ``value`` of ``shape`` (the whole
    blob, first axis included: it does not follow the batch). Called on any tensor of
    the model (Keras layers need an input); the input's values are not used."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(int(d) for d in shape)

    def build(self, input_shape):
        self.value = self.add_weight(name="value", shape=self.shape, initializer="zeros")

    def compute_output_shape(self, input_shape):
        return self.shape

    def call(self, x):
        return ops.convert_to_tensor(self.value)

    def get_config(self):
        return {**super().get_config(), "shape": list(self.shape)}


@keras.saving.register_keras_serializable(package="caffe2keras")
class BatchReindex(keras.layers.Layer):
    """Caffe's BatchReindex: ``[x, index]`` -> ``x[index]`` along the batch axis. The
    indices (a 1-D float tensor, as Caffe's blob) must lie in [0, batch)."""

    def compute_output_shape(self, input_shape):
        x, index = input_shape
        return (index[0], *x[1:])

    def call(self, inputs):
        x, index = inputs
        return ops.take(x, ops.cast(index, "int32"), axis=0)


@keras.saving.register_keras_serializable(package="caffe2keras")
class FilterItems(keras.layers.Layer):
    """Caffe's Filter with static shapes: ``[x_1, ..., x_k, selector]`` -> k tensors of
    the inputs' own shapes holding the items whose selector is nonzero first, in their
    order, then zero rows. Caffe's top holds only those items (a data-dependent batch);
    here the first ``count_nonzero(selector)`` rows are Caffe's top."""

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in input_shape[:-1]]

    def call(self, inputs):
        *xs, selector = inputs
        keep = ops.cast(ops.not_equal(ops.reshape(selector, (-1,)), 0), "int32")
        # destination of item i: its rank among the kept items, or after all of them
        kept_before = ops.cumsum(keep) - keep
        dropped_before = ops.cumsum(1 - keep) - (1 - keep)
        dest = ops.where(keep > 0, kept_before, ops.sum(keep) + dropped_before)
        source = ops.argsort(dest)    # dest is a permutation: its inverse
        outs = []
        for x in xs:
            mask = ops.reshape(ops.cast(keep, x.dtype), (-1,) + (1,) * (len(x.shape) - 1))
            outs.append(ops.take(x * mask, source, axis=0))
        return outs
