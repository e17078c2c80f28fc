"""Keras layers for the detection heads of Caffe forks: ROIPooling (Fast/Faster R-CNN),
PSROIPooling (R-FCN), Reorg and Region (YOLOv2 ports); the heads built on greedy NMS
(Proposal, the YOLO detection outputs) are in detect_nms.py. keras.ops only: they run on
jax, tensorflow and torch.

Each follows its fork's C++ operation by operation in float32 (the source is cited at each
class); tests/test_emit_detect.py holds the numpy references ported from the same sources.

ROI blobs are Caffe's (R, 5) rows ``(image index, x1, y1, x2, y2)`` in input-image pixels.
Rows with an image index outside the batch (the -1 padding rows Proposal emits) pool to 0.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

_F32 = np.float32


def round_half_away(x):
    """C's round() in float32: halves away from zero (exact: no float32 x + 0.5)."""
    a = ops.abs(x)
    r = ops.floor(a)
    r = r + ops.cast(a - r >= 0.5, x.dtype)
    return ops.where(x < 0, -r, r)


def _split(x):
    """Veltkamp's split of float32 x into two halves of 12 significant bits each."""
    t = x * 4097.0
    hi = t - (t - x)
    return hi, x - hi


def divide(a, b):
    """a / b rounded correctly in float32, as C++ divides. XLA on CPU divides vectors
    through a reciprocal that can be one ulp off, which moves bin edges that fall on
    whole numbers; one Newton step on the exact residual (Dekker's product) fixes it."""
    q = a / b
    prod = q * b
    qh, ql = _split(q)
    bh, bl = _split(b)
    err = ((qh * bh - prod) + qh * bl + ql * bh) + ql * bl      # q * b - prod, exact
    residual = (prod - a) + err                                  # q * b - a
    return q - residual / b


def _floor_log2_table(n):
    """floor(log2(k)) for k = 0..n (0 for k = 0), as int32."""
    t = np.zeros(n + 1, np.int32)
    for k in range(2, n + 1):
        t[k] = t[k // 2] + 1
    return t


def _shift_max(x, step, axis):
    """max(x[i], x[i + step]) along ``axis``; the last ``step`` entries keep x[i] (they
    are never read by a query whose window fits)."""
    size = x.shape[axis]
    if step >= size:
        return x
    idx = np.minimum(np.arange(size) + step, size - 1)
    return ops.maximum(x, ops.take(x, idx, axis=axis))


def _has_value(x):
    """True when ``x`` is a concrete (eager) tensor, False while jax/tensorflow trace."""
    backend = keras.config.backend()
    if backend == "jax":
        import jax
        return not isinstance(x, jax.core.Tracer)
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.executing_eagerly()
    return True


def _compiled(layer, fn, *args):
    """Run ``fn(*args)`` as one compiled function when called eagerly on jax or
    tensorflow (hundreds of small ops otherwise dispatch one by one); traced calls, and
    torch, run it as is."""
    backend = keras.config.backend()
    if backend not in ("jax", "tensorflow") or not _has_value(args[0]):
        return fn(*args)
    cache = layer.__dict__.setdefault("_compiled_fns", {})
    if fn.__name__ not in cache:
        if backend == "jax":
            import jax
            cache[fn.__name__] = jax.jit(fn)
        else:
            import tensorflow as tf
            cache[fn.__name__] = tf.function(fn, reduce_retracing=True)
    return cache[fn.__name__](*args)


def stable_argsort(x):
    """argsort along the last axis keeping equal values in index order (Keras's argsort is
    stable on jax only)."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.argsort(x, axis=-1, stable=True)
    if backend == "torch":
        import torch
        return torch.argsort(x, dim=-1, stable=True)
    return ops.argsort(x, axis=-1)


def _roi_rows(rois, batch):
    """(R, 5) rois -> image index (int32, clipped into the batch) and a valid mask."""
    rois = ops.cast(ops.reshape(rois, (-1, 5)), "float32")
    index = ops.cast(rois[:, 0], "int32")   # truncation, as Caffe's int conversion
    valid = ops.logical_and(index >= 0, index < batch)
    return rois, ops.where(valid, index, 0), valid


@keras.saving.register_keras_serializable(package="caffe2keras")
class ROIPooling(keras.layers.Layer):
    """Fast R-CNN's max pooling of each ROI into a fixed ``pooled_h`` x ``pooled_w`` grid
    (rbgirshick/caffe-fast-rcnn, src/caffe/layers/roi_pooling_layer.cpp, commit 4c85442):
    corners rounded (half away from zero) after scaling by ``spatial_scale``, ROI at least
    1x1, bin p covers [floor(p * size / pooled), ceil((p + 1) * size / pooled)) offset by
    the ROI start and clipped to the map; an empty bin is 0.

    Inputs: features (N, H, W, C) and rois (R, 5). Output (R, pooled_h, pooled_w, C).

    Every window max is read from a 2-D sparse table of the feature map (max over
    2^i x 2^j windows): four lookups per bin, exact, and memory linear in the map size
    times log H * log W, whatever the ROI sizes.
    """

    def __init__(self, pooled_h, pooled_w, spatial_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.pooled_h = int(pooled_h)
        self.pooled_w = int(pooled_w)
        self.spatial_scale = float(spatial_scale)

    def _bins(self, start, end, pooled, size):
        """[lo, hi) of each bin (R, pooled), int32, clipped to [0, size]."""
        extent = ops.maximum(end - start + 1, 1)
        bin_size = divide(ops.cast(extent, "float32"), ops.full_like(start, pooled, "float32"))
        p = ops.arange(pooled, dtype="float32")[None, :]
        lo = ops.cast(ops.floor(p * bin_size[:, None]), "int32") + start[:, None]
        hi = ops.cast(ops.ceil((p + 1.0) * bin_size[:, None]), "int32") + start[:, None]
        return ops.clip(lo, 0, size), ops.clip(hi, 0, size)

    def call(self, inputs):
        return _compiled(self, self._pool, *inputs)

    def _pool(self, feat, rois):
        n = ops.shape(feat)[0]
        h, w, c = feat.shape[1], feat.shape[2], feat.shape[3]
        rois, index, valid = _roi_rows(rois, n)
        ss = _F32(self.spatial_scale)
        corners = ops.cast(round_half_away(rois[:, 1:5] * ss), "int32")
        h0, h1 = self._bins(corners[:, 1], corners[:, 3], self.pooled_h, h)
        w0, w1 = self._bins(corners[:, 0], corners[:, 2], self.pooled_w, w)
        h0, h1 = h0[:, :, None], h1[:, :, None]                 # (R, ph, 1)
        w0, w1 = w0[:, None, :], w1[:, None, :]                 # (R, 1, pw)
        empty = ops.logical_or(h1 <= h0, w1 <= w0)               # (R, ph, pw)
        # sparse table levels (i, j): max over [y, y + 2^i) x [x, x + 2^j)
        levels_h = int(np.floor(np.log2(h))) + 1
        levels_w = int(np.floor(np.log2(w))) + 1
        rows, level = [], feat
        for i in range(levels_h):
            if i:
                level = _shift_max(level, 1 << (i - 1), axis=1)
            cols, lw = [], level
            for j in range(levels_w):
                if j:
                    lw = _shift_max(lw, 1 << (j - 1), axis=2)
                cols.append(lw)
            rows.append(ops.stack(cols, axis=0))
        table = ops.reshape(ops.stack(rows, axis=0), (-1, c))   # (Lh*Lw*N*H*W, C)
        log2 = ops.convert_to_tensor(_floor_log2_table(max(h, w)))
        pow2 = ops.convert_to_tensor(1 << np.arange(max(levels_h, levels_w), dtype=np.int32))
        kh = ops.take(log2, ops.maximum(h1 - h0, 1))
        kw = ops.take(log2, ops.maximum(w1 - w0, 1))
        ys = (h0, ops.maximum(h1 - ops.take(pow2, kh), h0))
        xs = (w0, ops.maximum(w1 - ops.take(pow2, kw), w0))
        base = ((kh * levels_w + kw) * n + index[:, None, None]) * h
        out = None
        for y in ys:
            for x in xs:
                flat = ops.maximum(
                    (base + ops.minimum(y, h - 1)) * w + ops.minimum(x, w - 1), 0)
                v = ops.take(table, ops.reshape(flat, (-1,)), axis=0)
                out = v if out is None else ops.maximum(out, v)
        out = ops.reshape(out, (-1, self.pooled_h, self.pooled_w, c))
        drop = ops.logical_or(empty, ops.logical_not(valid)[:, None, None])
        return ops.where(drop[..., None], ops.zeros_like(out), out)

    def compute_output_shape(self, input_shapes):
        feat, rois = input_shapes
        return (rois[0], self.pooled_h, self.pooled_w, feat[3])

    def get_config(self):
        return {**super().get_config(), "pooled_h": self.pooled_h,
                "pooled_w": self.pooled_w, "spatial_scale": self.spatial_scale}


@keras.saving.register_keras_serializable(package="caffe2keras")
class PSROIPooling(keras.layers.Layer):
    """R-FCN's position-sensitive average pooling (daijifeng001/caffe-rfcn,
    src/caffe/layers/psroi_pooling_layer.cu, commit 4bcfcd1): the ROI corners are rounded
    to whole pixels, then scaled (end + 1); the ROI is at least 0.1 wide; bin (gy, gx) of
    output channel d averages input channel (d * group + gy) * group + gx over
    [floor(start + p * bin), ceil(start + (p + 1) * bin)) clipped to the map; an empty bin
    is 0. Float32 throughout (nvcc may fuse the multiply-add at exact bin edges).

    Inputs: features (N, H, W, output_dim * group^2) and rois (R, 5).
    Output (R, group, group, output_dim).
    """

    def __init__(self, output_dim, group_size, spatial_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.group_size = int(group_size)
        self.spatial_scale = float(spatial_scale)

    def _bins(self, start, end, size):
        g = self.group_size
        extent = ops.maximum(end - start, _F32(0.1))
        bin_size = divide(extent, ops.full_like(extent, g))
        p = ops.arange(g, dtype="float32")[None, :]
        lo = ops.cast(ops.floor(p * bin_size[:, None] + start[:, None]), "int32")
        hi = ops.cast(ops.ceil((p + 1.0) * bin_size[:, None] + start[:, None]), "int32")
        return ops.clip(lo, 0, size), ops.clip(hi, 0, size)

    def call(self, inputs):
        return _compiled(self, self._pool, *inputs)

    def _pool(self, feat, rois):
        n = ops.shape(feat)[0]
        h, w = feat.shape[1], feat.shape[2]
        g, d = self.group_size, self.output_dim
        rois, index, valid = _roi_rows(rois, n)
        ss = _F32(self.spatial_scale)
        r = round_half_away(rois[:, 1:5])
        x0, y0 = r[:, 0] * ss, r[:, 1] * ss
        x1, y1 = (r[:, 2] + 1.0) * ss, (r[:, 3] + 1.0) * ss
        h0, h1 = self._bins(y0, y1, h)                           # (R, g)
        w0, w1 = self._bins(x0, x1, w)
        ys = ops.arange(h, dtype="int32")[None, None, :]
        xs = ops.arange(w, dtype="int32")[None, None, :]
        mask_h = ops.cast(ops.logical_and(ys >= h0[..., None], ys < h1[..., None]), "float32")
        mask_w = ops.cast(ops.logical_and(xs >= w0[..., None], xs < w1[..., None]), "float32")
        area = ops.cast((h1 - h0)[:, :, None] * (w1 - w0)[:, None, :], "float32")  # (R,g,g)
        maps = ops.reshape(feat, (-1, h, w, d, g, g))
        # sum over x in each column bin (every image), keep each ROI's image, sum over y
        cols = ops.einsum("nhwdab,rbw->nrhdab", maps, mask_w)
        image = ops.cast(ops.arange(n)[None, :] == index[:, None], "float32")   # (R, N)
        cols = ops.einsum("nrhdab,rn->rhdab", cols, image)
        sums = ops.einsum("rhdab,rah->rabd", cols, mask_h)       # (R, g, g, d)
        area = area[..., None]
        out = sums / ops.where(area > 0, area, 1.0)
        drop = ops.logical_or(area <= 0, ops.logical_not(valid)[:, None, None, None])
        return ops.where(drop, ops.zeros_like(out), out)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[1][0], self.group_size, self.group_size, self.output_dim)

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim,
                "group_size": self.group_size, "spatial_scale": self.spatial_scale}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Reorg(keras.layers.Layer):
    """The YOLOv2 ports' Reorg (gklz1982/caffe-yolov2, src/caffe/layers/reorg_layer.cpp,
    commit a4e1075; eric612's copy is the same): darknet's reorg_cpu called with the
    bottom's C, H, W and forward = ``reverse``. That is a fixed permutation of Caffe's
    NCHW buffer, not a plain space-to-depth: with s = stride and c = C / s^2 the buffer
    read as (c, H, s, W, s) is transposed to (s, s, c, H, W) and the top is that buffer
    read as (C * s^2, H / s, W / s). ``reverse`` applies the inverse reading (top
    (C / s^2, H * s, W * s)).

    Input and output NHWC; the permutation is done in Caffe's NCHW order.
    """

    def __init__(self, stride, reverse=False, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)
        self.reverse = bool(reverse)

    def _top_shape(self, h, w, c):
        s = self.stride
        if self.reverse:
            return h * s, w * s, c // (s * s)
        return h // s, w // s, c * s * s

    def call(self, x):
        s = self.stride
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        oc = c // (s * s)
        nchw = ops.transpose(x, (0, 3, 1, 2))
        if self.reverse:
            y = ops.reshape(nchw, (-1, s, s, oc, h, w))
            y = ops.transpose(y, (0, 3, 4, 1, 5, 2))
        else:
            y = ops.reshape(nchw, (-1, oc, h, s, w, s))
            y = ops.transpose(y, (0, 3, 5, 1, 2, 4))
        th, tw, tc = self._top_shape(h, w, c)
        return ops.transpose(ops.reshape(y, (-1, tc, th, tw)), (0, 2, 3, 1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._top_shape(*input_shape[1:4]))

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "reverse": self.reverse}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Region(keras.layers.Layer):
    """YOLOv2's region activations (openvinotoolkit/training_toolbox_caffe,
    src/caffe/layers/region_layer.cpp, commit 2137b63; darknet's forward_region_layer
    at test time): the channels are ``num`` boxes of (coords, objectness, classes)
    entries; x and y (entries 0 and 1) and the objectness get the logistic function, the
    classes a softmax per box and position, the rest pass through. Output NHWC, the shape
    of the input."""

    def __init__(self, classes, coords=4, num=5, **kwargs):
        super().__init__(**kwargs)
        self.classes = int(classes)
        self.coords = int(coords)
        self.num = int(num)

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        length = self.coords + 1 + self.classes
        boxes = ops.reshape(x, (-1, h, w, self.num, length))
        xy = ops.sigmoid(boxes[..., :2])
        rest = boxes[..., 2:self.coords]
        obj = ops.sigmoid(boxes[..., self.coords:self.coords + 1])
        cls = boxes[..., self.coords + 1:]
        # one class: exp(0) / 1 (Keras warns about a softmax over one value)
        cls = ops.ones_like(cls) if self.classes == 1 else ops.softmax(cls, axis=-1)
        out = ops.concatenate([xy, rest, obj, cls], axis=-1)
        return ops.reshape(out, (-1, h, w, self.num * length))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "classes": self.classes, "coords": self.coords,
                "num": self.num}
