"""Keras layers for layer types of popular Caffe forks: channel shuffle (ShuffleNet),
Interp (DeepLab / PSPNet bilinear resize) and SegNet's max-unpooling Upsample.
keras.ops only, so they run on jax, tensorflow and torch."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

_F32 = np.float32


@keras.saving.register_keras_serializable(package="caffe2keras")
class ChannelShuffle(keras.layers.Layer):
    """ShuffleNet's channel shuffle: channels viewed as (groups, C / groups), transposed.
    Output channel j * groups + i is input channel i * (C / groups) + j."""

    def __init__(self, groups, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.axis = int(axis)

    def call(self, x):
        ndim = len(x.shape)
        axis = self.axis % ndim
        c = x.shape[axis]
        order = np.arange(c).reshape(self.groups, c // self.groups).T.reshape(-1)
        return ops.take(x, ops.convert_to_tensor(order.astype("int32")), axis=axis)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "axis": self.axis}


def interp_weights(size_in, size_out):
    """Source index, +1 step (0 at the last row) and the two weights per output row of
    Caffe's caffe_cpu_interp2: align-corners bilinear, computed in float32 as there."""
    if size_out > 1:
        ratio = _F32(size_in - 1) / _F32(size_out - 1)
    else:
        ratio = _F32(0)
    pos = ratio * np.arange(size_out, dtype=_F32)          # float32 products, as Caffe
    idx = pos.astype(np.int32)                             # truncation
    step = (idx < size_in - 1).astype(np.int32)
    frac = (pos - idx.astype(_F32)).astype(_F32)
    return idx, step, (_F32(1) - frac).astype(_F32), frac


@keras.saving.register_keras_serializable(package="caffe2keras")
class Interp(keras.layers.Layer):
    """Caffe's Interp (DeepLab v2 / PSPNet, util/interp.cpp): crop ``crop`` = (top, left)
    rows/columns (Caffe's negative pad_beg) and keep ``size_in`` of the NHWC input, then
    resize to ``size_out`` bilinearly with aligned corners (the first and last rows of
    input and output coincide). Equal sizes copy."""

    def __init__(self, size_in, size_out, crop=(0, 0), **kwargs):
        super().__init__(**kwargs)
        self.size_in = [int(v) for v in size_in]
        self.size_out = [int(v) for v in size_out]
        self.crop = [int(v) for v in crop]

    def call(self, x):
        (h1, w1), (h2, w2), (top, left) = self.size_in, self.size_out, self.crop
        x = x[:, top:top + h1, left:left + w1, :]
        if (h1, w1) == (h2, w2):
            return x
        hi, hs, h0w, h1w = interp_weights(h1, h2)
        wi, ws, w0w, w1w = interp_weights(w1, w2)
        h0w, h1w = (ops.convert_to_tensor(v.reshape(1, -1, 1, 1), x.dtype) for v in (h0w, h1w))
        w0w, w1w = (ops.convert_to_tensor(v.reshape(1, 1, -1, 1), x.dtype) for v in (w0w, w1w))

        def cols(rows):
            return (w0w * ops.take(rows, wi, axis=2)
                    + w1w * ops.take(rows, wi + ws, axis=2))

        upper = cols(ops.take(x, hi, axis=1))
        lower = cols(ops.take(x, hi + hs, axis=1))
        return h0w * upper + h1w * lower

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size_out, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size_in": self.size_in,
                "size_out": self.size_out, "crop": self.crop}


@keras.saving.register_keras_serializable(package="caffe2keras")
class MaxUnpool(keras.layers.Layer):
    """SegNet's Upsample with a mask bottom: a zero map of ``size_out`` (NHWC) where each
    input value goes to the position its mask holds (Caffe MAX pooling's argmax mask:
    y * width + x within the channel plane). Where several inputs name one position the
    last in raster order wins, as in Caffe's loop."""

    def __init__(self, size_out, **kwargs):
        super().__init__(**kwargs)
        self.size_out = [int(v) for v in size_out]

    def call(self, inputs):
        x, mask = inputs
        oh, ow = self.size_out
        plane = oh * ow
        batch = ops.shape(x)[0]
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        n_in = h * w
        # (B, C, h*w) planes, as Caffe walks them
        xv = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, n_in))
        mv = ops.cast(ops.reshape(ops.transpose(mask, (0, 3, 1, 2)), (-1, n_in)), "int32")
        planes = ops.arange(ops.shape(xv)[0], dtype="int32")[:, None]
        seg = ops.where(ops.logical_and(mv >= 0, mv < plane), planes * plane + mv, -1)
        order = ops.cast(ops.arange(n_in), "float32")[None, :] + ops.zeros_like(xv)
        n_planes = batch * c
        last = ops.segment_max(ops.reshape(order, (-1,)), ops.reshape(seg, (-1,)),
                               num_segments=n_planes * plane)
        # an empty segment's max is -inf (or the lowest float): clamp it, since tf2onnx
        # turns where() into cond * a + (1 - cond) * b, and 0 * -inf is NaN
        last = ops.maximum(ops.reshape(last, (-1, plane)), -1.0)
        found = last >= 0
        src = ops.cast(ops.maximum(last, 0.0), "int32")
        out = ops.where(found, ops.take_along_axis(xv, src, axis=1), 0.0)
        return ops.transpose(ops.reshape(out, (-1, c, oh, ow)), (0, 2, 3, 1))

    def compute_output_shape(self, input_shapes):
        shape = input_shapes[0]
        return (shape[0], *self.size_out, shape[-1])

    def get_config(self):
        return {**super().get_config(), "size_out": self.size_out}
