"""Input preprocessing as Keras layers, so a saved model takes RGB images directly.

Together with ``keras.layers.Rescaling`` they reproduce pycaffe's Transformer after the
resize: channel swap, raw scale, mean subtraction, input scale (see caffe2keras.preprocess).
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="caffe2keras")
class ChannelReorder(keras.layers.Layer):
    """Output channel ``i`` is input channel ``order[i]`` (last axis): ``[2, 1, 0]`` turns
    RGB into BGR, as pycaffe's ``set_channel_swap``."""

    def __init__(self, order, **kwargs):
        super().__init__(**kwargs)
        self.order = [int(i) for i in order]
        if not self.order or min(self.order) < 0:
            raise ValueError(f"channel order must list channel indices, got {order!r}")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and max(self.order) >= channels:
            raise ValueError(f"channel order {self.order} needs {max(self.order) + 1} "
                             f"channels, the input has {channels}")
        self.built = True

    def call(self, inputs):
        return ops.take(inputs, self.order, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.order))

    def get_config(self):
        return {**super().get_config(), "order": list(self.order)}


@keras.saving.register_keras_serializable(package="caffe2keras")
class MeanSubtraction(keras.layers.Layer):
    """Subtracts a Caffe mean (channels last): per-channel values given as ``mean`` (kept
    in the config), or a mean image of ``shape`` (height, width, channels) kept as a
    non-trainable weight (its values come with the model's weights)."""

    def __init__(self, mean=None, shape=None, **kwargs):
        super().__init__(**kwargs)
        if (mean is None) == (shape is None):
            raise ValueError("MeanSubtraction needs either per-channel `mean` values or "
                             "the `shape` of a mean image")
        self.mean = None if mean is None else [float(v) for v in mean]
        self.shape = None if shape is None else tuple(int(d) for d in shape)

    def build(self, input_shape):
        want = (len(self.mean),) if self.mean is not None else self.shape
        got = tuple(input_shape[-len(want):])
        if any(g is not None and g != w for g, w in zip(got, want)):
            raise ValueError(f"mean of shape {want} does not fit inputs of shape "
                             f"{tuple(input_shape)}")
        if self.shape is not None:
            self.mean_image = self.add_weight(name="mean", shape=self.shape,
                                              initializer="zeros", trainable=False)
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mean is not None:
            return x - ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        return x - ops.cast(self.mean_image, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        if self.mean is not None:
            config["mean"] = list(self.mean)
        else:
            config["shape"] = tuple(self.shape)
        return config
