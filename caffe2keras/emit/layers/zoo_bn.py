"""Keras layers for fork layers: the batch-statistics normalization of the fork `BN`
layer (SegNet's LEARN mode) and SENet's Axpy."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="caffe2keras")
class BatchStatNormalization(keras.layers.Layer):
    """Normalizes by the statistics of the batch it is given, in training and inference
    alike (there are no stored statistics), then ``gamma * x_hat + beta`` per channel:
    the fork BN layer in SegNet's LEARN mode (and the PSPNet-era variant without
    ``moving_average``). Mean and variance run over every axis but ``axis``; the
    variance is ``E[x^2] - E[x]^2`` (``centered=False``, SegNet's formula) or
    ``E[(x - mean)^2]``. Weights: gamma, beta."""

    def __init__(self, axis=-1, epsilon=1e-9, centered=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.epsilon = float(epsilon)
        self.centered = bool(centered)

    def build(self, input_shape):
        axis = self.axis % len(input_shape)
        c = input_shape[axis]
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros")

    def call(self, x):
        rank = len(x.shape)
        axis = self.axis % rank
        reduce = [a for a in range(rank) if a != axis]
        mean = ops.mean(x, axis=reduce, keepdims=True)
        if self.centered:
            var = ops.mean(ops.square(x - mean), axis=reduce, keepdims=True)
        else:
            var = ops.maximum(ops.mean(ops.square(x), axis=reduce, keepdims=True)
                              - ops.square(mean), 0.0)
        shape = [1] * rank
        shape[axis] = -1
        x_hat = (x - mean) / ops.sqrt(var + self.epsilon)
        return x_hat * ops.reshape(self.gamma, shape) + ops.reshape(self.beta, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "centered": self.centered}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Axpy(keras.layers.Layer):
    """SENet's Axpy: ``[a, x, y]`` -> ``a * x + y``, ``a`` one factor per item and
    channel (Caffe N x C x 1 x 1, or N x C). ``x_nhwc``: x and y are 4-D Caffe blobs held
    as NHWC (channels last); otherwise channels are axis 1 (Caffe's order)."""

    def __init__(self, x_nhwc=True, **kwargs):
        super().__init__(**kwargs)
        self.x_nhwc = bool(x_nhwc)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def call(self, inputs):
        a, x, y = inputs
        rank = len(x.shape)
        c = x.shape[-1] if self.x_nhwc else x.shape[1]
        a = ops.reshape(a, (-1, c))
        if self.x_nhwc:
            a = ops.reshape(a, (-1, 1, 1, c))
        else:
            a = ops.reshape(a, (-1, c) + (1,) * (rank - 2))
        return ops.cast(a, x.dtype) * x + y

    def get_config(self):
        return {**super().get_config(), "x_nhwc": self.x_nhwc}
