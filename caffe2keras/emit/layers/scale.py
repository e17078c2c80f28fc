"""Caffe's Scale and Bias: multiply by / add a factor broadcast along some input axes.

The factor is a learned weight, or a second input. ``axes`` lists, for each axis of
the factor, the input axis it runs along (so a factor stored in another axis order,
like a Caffe-order second input against an NHWC tensor, needs no extra layer).
"""
from __future__ import annotations

import keras
from keras import ops


def _check_axes(axes):
    axes = tuple(int(a) for a in axes)
    if len(set(axes)) != len(axes) or any(a < 0 for a in axes):
        raise ValueError(f"axes must be distinct non-negative input axes, got {axes}")
    return axes


def _broadcast(factor, axes, rank):
    """Arrange ``factor`` (axis j runs along input axis ``axes[j]``) to broadcast
    against a rank-``rank`` input."""
    if list(axes) == list(range(rank - len(axes), rank)):
        return factor  # trailing axes in order: numpy broadcasting does it
    order = sorted(range(len(axes)), key=lambda j: axes[j])
    if order != list(range(len(axes))):
        factor = ops.transpose(factor, order)
    present = sorted(axes)
    for a in range(rank):
        if a not in present:
            factor = ops.expand_dims(factor, a)
    return factor


def _two_inputs(input_shape):
    return bool(input_shape) and isinstance(input_shape[0], (list, tuple))


class _Broadcasting(keras.layers.Layer):
    def __init__(self, axes, **kwargs):
        super().__init__(**kwargs)
        self.axes = _check_axes(axes)

    def _param_shape(self, input_shape, axes=None):
        axes = self.axes if axes is None else axes
        shape = tuple(input_shape[a] for a in axes)
        if any(d is None for d in shape):
            raise ValueError(f"{type(self).__name__} '{self.name}': a learned factor along "
                             f"axes {axes} needs their sizes; input is {input_shape}")
        return shape

    @staticmethod
    def _split(inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"takes one input or two, got {len(inputs)}")
            return inputs[0], inputs[1]
        return inputs, None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if _two_inputs(input_shape) else input_shape)

    def get_config(self):
        return {**super().get_config(), "axes": list(self.axes)}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Scale(_Broadcasting):
    """``x * factor (+ bias)``: Caffe's Scale. Called on ``x`` the factor is a learned
    weight ``scale``; called on ``[x, factor]`` it is the second input. ``use_bias``
    adds a learned ``bias`` of the factor's shape. Weights: scale (if learned), bias."""

    def __init__(self, axes, use_bias=False, scale_initializer="ones",
                 bias_initializer="zeros", **kwargs):
        super().__init__(axes, **kwargs)
        self.use_bias = bool(use_bias)
        self.scale_initializer = keras.initializers.get(scale_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        two = _two_inputs(input_shape)
        x_shape = input_shape[0] if two else input_shape
        self.scale = None if two else self.add_weight(
            name="scale", shape=self._param_shape(x_shape), initializer=self.scale_initializer)
        # A learned bias beside a second-input factor runs along the same input axes,
        # stored in input axis order.
        self._bias_axes = tuple(sorted(self.axes)) if two else self.axes
        self.bias = self.add_weight(
            name="bias", shape=self._param_shape(x_shape, self._bias_axes),
            initializer=self.bias_initializer) if self.use_bias else None

    def call(self, inputs):
        x, factor = self._split(inputs)
        rank = len(x.shape)
        y = x * _broadcast(self.scale if factor is None else factor, self.axes, rank)
        if self.bias is not None:
            y = y + _broadcast(self.bias, self._bias_axes, rank)
        return y

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias,
                "scale_initializer": keras.initializers.serialize(self.scale_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Bias(_Broadcasting):
    """``x + bias``: Caffe's Bias. Called on ``x`` the bias is a learned weight; called
    on ``[x, bias]`` it is the second input."""

    def __init__(self, axes, bias_initializer="zeros", **kwargs):
        super().__init__(axes, **kwargs)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self.bias = None if _two_inputs(input_shape) else self.add_weight(
            name="bias", shape=self._param_shape(input_shape),
            initializer=self.bias_initializer)

    def call(self, inputs):
        x, other = self._split(inputs)
        return x + _broadcast(self.bias if other is None else other, self.axes, len(x.shape))

    def get_config(self):
        return {**super().get_config(),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}

