"""Keras layers for the detection heads of Caffe forks: ROIPooling (Fast/Faster R-CNN),
PSROIPooling (R-FCN), Reorg and Region (YOLOv2 ports), Proposal (Faster R-CNN RPN) and
Yolov3DetectionOutput (MobileNet-YOLO). keras.ops only: they run on jax, tensorflow and
torch.

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


# ------------------------------------------------------------------- greedy NMS, shared

def greedy_nms(suppresses, valid):
    """Greedy NMS over candidates in rank order: candidate i is kept iff it is valid and no
    kept candidate ranked before it suppresses it. ``suppresses`` (..., K, K) is True
    where row i would remove column j (only i < j matters). Solved as a fixed point:
    entry i depends only on earlier entries, so iterating from ``valid`` settles rank by
    rank and stops at the sequential answer, usually after a few rounds."""
    k = suppresses.shape[-1]
    earlier = ops.convert_to_tensor(np.triu(np.ones((k, k), bool), 1))
    blocks = ops.cast(ops.logical_and(suppresses, earlier), "float32")

    def body(keep):
        hits = ops.squeeze(ops.matmul(ops.expand_dims(ops.cast(keep, "float32"), -2),
                                      blocks), -2)
        return ops.logical_and(valid, hits == 0)

    if _has_value(valid):
        keep = valid
        for _ in range(k + 1):
            new = body(keep)
            if not bool(ops.convert_to_numpy(ops.any(ops.not_equal(new, keep)))):
                break
            keep = new
        return keep
    keep, _ = ops.while_loop(
        lambda keep, changed: changed,
        lambda keep, changed: (body(keep), ops.any(ops.not_equal(body(keep), keep))),
        (valid, ops.convert_to_tensor(True)), maximum_iterations=k + 1)
    return keep


def _first_kept(keep, count):
    """Indices (..., count) of the first ``count`` kept candidates in rank order, and
    whether each slot holds one (fewer kept than ``count``: the rest are False)."""
    k = keep.shape[-1]
    rank = ops.arange(k, dtype="int32")
    key = ops.where(keep, rank, rank + k)          # kept first, each group in rank order
    order = ops.argsort(key, axis=-1)[..., :count]
    return order, ops.take_along_axis(keep, order, axis=-1)


# ----------------------------------------------------------------------------- Proposal

def proposal_anchors(base_size, ratios, scales):
    """generate_anchors of brocolli-caffe 9.0.2's proposal_layer.cpp (PVANet's C++
    Proposal): per ratio, per scale, a box centred on (base_size - 1) / 2 whose half
    sides are 0.5 * round(sqrt(base^2 / ratio) [* ratio] * scale / base - 1); scales
    are in pixels. float32 as (A, 4) x1, y1, x2, y2."""
    base_area = _F32(base_size * base_size)
    center = _F32(0.5) * _F32(base_size - 1)
    out = []
    for r in ratios:
        ratio_w = _F32(np.sqrt(base_area / _F32(r)))
        ratio_h = _F32(ratio_w * _F32(r))
        for s in scales:
            # ROUND(x) = (int)(x + 0.5), in double as the C++ promotes it
            half_w = _F32(0.5) * _F32(int(float(ratio_w) * float(_F32(s)) / base_size - 1.0
                                          + 0.5))
            half_h = _F32(0.5) * _F32(int(float(ratio_h) * float(_F32(s)) / base_size - 1.0
                                          + 0.5))
            out.append([center - half_w, center - half_h, center + half_w, center + half_h])
    return np.array(out, _F32).reshape(-1, 4)


@keras.saving.register_keras_serializable(package="caffe2keras")
class Proposal(keras.layers.Layer):
    """The RPN proposal layer of brocolli-caffe 9.0.2 (src/caffe/layers/proposal_layer.cpp,
    the C++ Proposal of PVANet's Caffe; util/nms.cpp): anchors at every feature cell
    (stride ``feat_stride``), shifted by the deltas (+1 box sizes), clipped to the image
    of im_info's first row (that fork reads row 0 for every image and ignores the scale
    entries), score zeroed for boxes under ``min_size``, the best ``pre_nms_topn`` by
    foreground score kept for NMS (IoU with +1 sizes, suppress above ``nms_thresh``),
    then the first ``post_nms_topn`` survivors.

    Inputs: scores (N, H, W, 2A) (background A channels, then foreground), deltas
    (N, H, W, 4A), im_info (N or 1, >= 2) as (height, width, ...).
    Outputs: rois (N * post_nms_topn, 5) rows (image index, x1, y1, x2, y2) and scores
    (N * post_nms_topn,): image n fills rows n * post_nms_topn onwards, best first;
    unused rows are -1 (ROIPooling/PSROIPooling pool them to 0). Caffe instead stacks
    the valid rows of all images with no gaps. Equal scores are ranked by anchor index
    (the fork's quicksort leaves their order unspecified).
    """

    def __init__(self, feat_stride=16, base_size=16, min_size=16, ratios=(), scales=(),
                 pre_nms_topn=6000, post_nms_topn=300, nms_thresh=0.7, **kwargs):
        super().__init__(**kwargs)
        self.feat_stride = int(feat_stride)
        self.base_size = int(base_size)
        self.min_size = int(min_size)
        self.ratios = [float(r) for r in ratios]
        self.scales = [float(s) for s in scales]
        self.pre_nms_topn = int(pre_nms_topn)
        self.post_nms_topn = int(post_nms_topn)
        self.nms_thresh = float(nms_thresh)
        self.anchors = proposal_anchors(self.base_size, self.ratios, self.scales)

    def call(self, inputs):
        return _compiled(self, self._propose, *inputs)

    def _propose(self, scores, deltas, im_info):
        scores, deltas, im_info = (ops.cast(t, "float32") for t in (scores, deltas, im_info))
        h, w = scores.shape[1], scores.shape[2]
        a = len(self.anchors)
        total = h * w * a
        k = min(total, self.pre_nms_topn)
        post = self.post_nms_topn
        batch = ops.shape(scores)[0]
        fg = ops.reshape(scores[..., a:], (-1, total))             # (N, H*W*A): h, w, k
        d = ops.reshape(deltas, (-1, total, 4))
        # anchors shifted to every cell, in Caffe's float32 (x + anchor)
        sx = (np.arange(w, dtype=_F32) * _F32(self.feat_stride))[None, :, None]
        sy = (np.arange(h, dtype=_F32) * _F32(self.feat_stride))[:, None, None]
        an = self.anchors[None, None]
        boxes = np.stack(np.broadcast_arrays(sx + an[..., 0], sy + an[..., 1],
                                             sx + an[..., 2], sy + an[..., 3]), -1)
        boxes = ops.convert_to_tensor(boxes.reshape(total, 4).astype(_F32))
        bw = boxes[:, 2] - boxes[:, 0] + 1.0
        bh = boxes[:, 3] - boxes[:, 1] + 1.0
        cx = boxes[:, 0] + 0.5 * bw
        cy = boxes[:, 1] + 0.5 * bh
        pcx = d[..., 0] * bw + cx
        pcy = d[..., 1] * bh + cy
        pw = ops.exp(d[..., 2]) * bw
        ph = ops.exp(d[..., 3]) * bh
        img_h, img_w = im_info[0, 0], im_info[0, 1]
        x1 = ops.clip(pcx - 0.5 * pw, 0.0, img_w - 1.0)
        y1 = ops.clip(pcy - 0.5 * ph, 0.0, img_h - 1.0)
        x2 = ops.clip(pcx + 0.5 * pw, 0.0, img_w - 1.0)
        y2 = ops.clip(pcy + 0.5 * ph, 0.0, img_h - 1.0)
        big = ops.logical_and(x2 - x1 + 1.0 >= _F32(self.min_size),
                              y2 - y1 + 1.0 >= _F32(self.min_size))
        score = ops.cast(big, "float32") * fg
        # best k, equal scores by anchor index
        order = stable_argsort(-score)[:, :k]
        s = ops.take_along_axis(score, order, axis=-1)               # (N, K)
        bx = ops.stack([ops.take_along_axis(v, order, axis=-1) for v in (x1, y1, x2, y2)],
                       -1)                                           # (N, K, 4)
        # util/nms.cpp iou(): 0 unless the boxes overlap or touch, sizes +1
        a_, b_ = bx[:, :, None, :], bx[:, None, :, :]
        apart = ops.logical_or(
            ops.logical_or(a_[..., 0] > b_[..., 2], a_[..., 1] > b_[..., 3]),
            ops.logical_or(a_[..., 2] < b_[..., 0], a_[..., 3] < b_[..., 1]))
        iw = ops.maximum(0.0, ops.minimum(a_[..., 2], b_[..., 2])
                         - ops.maximum(a_[..., 0], b_[..., 0]) + 1.0)
        ih = ops.maximum(0.0, ops.minimum(a_[..., 3], b_[..., 3])
                         - ops.maximum(a_[..., 1], b_[..., 1]) + 1.0)
        inter = iw * ih
        area = (bx[..., 2] - bx[..., 0] + 1.0) * (bx[..., 3] - bx[..., 1] + 1.0)
        union = (area[:, :, None] + area[:, None, :]) - inter
        iou = divide(inter, ops.where(union == 0, 1.0, union))
        suppress = ops.logical_and(ops.logical_not(apart), iou > _F32(self.nms_thresh))
        keep = greedy_nms(suppress, ops.ones_like(s, dtype="bool"))
        slots = min(post, k)
        sel, filled = _first_kept(keep, slots)
        image = ops.cast(ops.arange(batch), "float32")[:, None, None]
        rois = ops.concatenate([image + ops.zeros((1, slots, 1)),
                                ops.take_along_axis(bx, sel[..., None], axis=1)], -1)
        rois = ops.where(filled[..., None], rois, -1.0)
        out_scores = ops.where(filled, ops.take_along_axis(s, sel, axis=-1), -1.0)
        if slots < post:
            rois = ops.concatenate([rois, -ops.ones((batch, post - slots, 5))], 1)
            out_scores = ops.concatenate([out_scores, -ops.ones((batch, post - slots))], 1)
        return ops.reshape(rois, (-1, 5)), ops.reshape(out_scores, (-1,))

    def compute_output_shape(self, input_shapes):
        n = input_shapes[0][0]
        rows = None if n is None else n * self.post_nms_topn
        return (rows, 5), (rows,)

    def get_config(self):
        return {**super().get_config(), "feat_stride": self.feat_stride,
                "base_size": self.base_size, "min_size": self.min_size,
                "ratios": self.ratios, "scales": self.scales,
                "pre_nms_topn": self.pre_nms_topn, "post_nms_topn": self.post_nms_topn,
                "nms_thresh": self.nms_thresh}


# ---------------------------------------------------------------- Yolov3DetectionOutput

@keras.saving.register_keras_serializable(package="caffe2keras")
class Yolov3DetectionOutput(keras.layers.Layer):
    """MobileNet-YOLO's YOLOv3 head (eric612/MobileNet-YOLO,
    src/caffe/layers/yolov3_detection_output_layer.cpp Forward_cpu, commit c93a7e6).

    Inputs: one map per scale, NHWC (N, side, side, num_box * (5 + classes)), channel
    n * (5 + classes) + (x, y, w, h, objectness, class logits...). Box of anchor n in
    cell (row, col): x = (col + sigmoid) / side, y likewise, w = exp(tw) * biases[2m] /
    (side * anchors_scale), h with biases[2m + 1], m = mask[n + offset of the map]. Each
    class scoring sigmoid(class) * sigmoid(objectness) above ``confidence_threshold`` is a
    candidate; candidates are sorted by score and NMS runs across classes (suppress at
    IoU >= ``nms_threshold``). The fork's candidates of one box are all suppressed by its
    best class, so this takes each box's best class and runs NMS over boxes.

    Output (N, rows, 7), rows = every box (sum of side^2 * num_box): valid rows are the
    fork's (image, label = class + 1, score, xmin, ymin, xmax, ymax), best first, the rest
    -1. The fork merges all images of a batch into one list with image id 0 (only batch 1
    means anything there); here each image gets its own block. Equal scores keep box
    order (the fork's std::sort leaves it unspecified).
    """

    def __init__(self, num_classes, num_box, biases, anchors_scale, mask, sides,
                 mask_group_num=2, confidence_threshold=0.01, nms_threshold=0.45,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_box = int(num_box)
        self.biases = [float(b) for b in biases]
        self.anchors_scale = [int(s) for s in anchors_scale]
        self.mask = [int(m) for m in mask]
        self.sides = [int(s) for s in sides]
        self.mask_group_num = int(mask_group_num)
        self.confidence_threshold = float(confidence_threshold)
        self.nms_threshold = float(nms_threshold)
        self.rows = sum(s * s for s in self.sides) * self.num_box

    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        return _compiled(self, self._detect, *inputs)

    def _boxes(self, t, x):
        """Boxes (N, side^2 * num_box, 4) as (x, y, w, h) and class scores."""
        side, nb, c = self.sides[t], self.num_box, self.num_classes
        groups = len(self.mask) // self.mask_group_num
        x = ops.reshape(ops.cast(x, "float32"), (-1, side * side, nb, 5 + c))
        cell = np.arange(side * side)
        col = ops.convert_to_tensor((cell % side).astype(_F32)[None, :, None])
        row = ops.convert_to_tensor((cell // side).astype(_F32)[None, :, None])
        ms = [self.mask[n + t * groups] for n in range(nb)]
        bw = ops.convert_to_tensor(np.array([self.biases[2 * m] for m in ms], _F32))
        bh = ops.convert_to_tensor(np.array([self.biases[2 * m + 1] for m in ms], _F32))
        span = ops.full_like(x[..., 0], side * self.anchors_scale[t])
        sides = ops.full_like(x[..., 0], side)
        bx = divide(col + ops.sigmoid(x[..., 0]), sides)
        by = divide(row + ops.sigmoid(x[..., 1]), sides)
        w = divide(ops.exp(x[..., 2]) * bw, span)
        h = divide(ops.exp(x[..., 3]) * bh, span)
        scores = ops.sigmoid(x[..., 5:]) * ops.sigmoid(x[..., 4:5])
        boxes = ops.stack([bx, by, w, h], -1)
        return ops.reshape(boxes, (-1, side * side * nb, 4)), \
            ops.reshape(scores, (-1, side * side * nb, c))

    def _passes(self, score):
        return score > _F32(self.confidence_threshold)

    def _detect(self, *inputs):
        parts = [self._boxes(t, x) for t, x in enumerate(inputs)]
        boxes = ops.concatenate([b for b, _ in parts], axis=1)         # (N, P, 4)
        scores = ops.concatenate([s for _, s in parts], axis=1)        # (N, P, C)
        best = ops.max(scores, axis=-1)
        label = ops.cast(ops.argmax(scores, axis=-1), "float32") + 1.0
        order = stable_argsort(-best)
        best = ops.take_along_axis(best, order, axis=-1)
        label = ops.take_along_axis(label, order, axis=-1)
        boxes = ops.take_along_axis(boxes, order[..., None], axis=1)
        valid = self._passes(best)
        # box_iou of the fork: centre/size boxes, overlaps in float32
        x, y, w, h = (boxes[..., i] for i in range(4))
        half_w, half_h = w / 2.0, h / 2.0

        def overlap(c, half):
            lo = ops.maximum((c - half)[..., :, None], (c - half)[..., None, :])
            hi = ops.minimum((c + half)[..., :, None], (c + half)[..., None, :])
            return hi - lo

        ow, oh = overlap(x, half_w), overlap(y, half_h)
        inter = ops.where(ops.logical_or(ow < 0, oh < 0), 0.0, ow * oh)
        area = w * h
        union = (area[..., :, None] + area[..., None, :]) - inter
        iou = divide(inter, ops.where(union == 0, 1.0, union))
        iou = ops.where(union == 0, np.nan, iou)        # 0 / 0 suppresses nothing
        keep = greedy_nms(iou >= _F32(self.nms_threshold), valid)
        sel, filled = _first_kept(keep, self.rows)
        batch = ops.shape(best)[0]
        image = ops.cast(ops.arange(batch), "float32")[:, None, None]
        b = ops.take_along_axis(boxes, sel[..., None], axis=1)
        bx, by, bw, bh = (b[..., i:i + 1] for i in range(4))
        rows = ops.concatenate([
            image + ops.zeros_like(bx),
            ops.take_along_axis(label, sel, axis=-1)[..., None],
            ops.take_along_axis(best, sel, axis=-1)[..., None],
            bx - bw / 2.0, by - bh / 2.0, bx + bw / 2.0, by + bh / 2.0], axis=-1)
        return ops.where(filled[..., None], rows, -1.0)

    def compute_output_shape(self, input_shapes):
        first = input_shapes[0] if isinstance(input_shapes[0], (list, tuple)) else \
            input_shapes
        return (first[0], self.rows, 7)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "num_box": self.num_box, "biases": self.biases,
                "anchors_scale": self.anchors_scale, "mask": self.mask, "sides": self.sides,
                "mask_group_num": self.mask_group_num,
                "confidence_threshold": self.confidence_threshold,
                "nms_threshold": self.nms_threshold}


@keras.saving.register_keras_serializable(package="caffe2keras")
class YoloDetectionOutput(Yolov3DetectionOutput):
    """MobileNet-YOLO's YOLOv2 head (eric612/MobileNet-YOLO,
    src/caffe/layers/yolo_detection_output_layer.cpp Forward_cpu, commit 092f8df): one or
    two maps (N, side, side, num_box * (5 + classes)); box n of cell (row, col): x =
    (col + sigmoid) / side, w = exp(tw) * biases[2n] / side (the same biases for both
    maps); score = sigmoid(objectness) * the best class of a softmax, kept when
    >= ``confidence_threshold``; then Yolov3DetectionOutput's sort, class-agnostic NMS
    and rows (see there for the layout and the per-image blocks)."""

    def __init__(self, num_classes, num_box, biases, sides, confidence_threshold=0.01,
                 nms_threshold=0.45, **kwargs):
        kwargs.pop("anchors_scale", None)
        kwargs.pop("mask", None)
        kwargs.pop("mask_group_num", None)
        super().__init__(num_classes, num_box, biases, anchors_scale=[1] * len(sides),
                         mask=list(range(num_box)) * len(sides), sides=sides,
                         mask_group_num=len(sides),
                         confidence_threshold=confidence_threshold,
                         nms_threshold=nms_threshold, **kwargs)

    def _passes(self, score):
        return score >= _F32(self.confidence_threshold)

    def _boxes(self, t, x):
        side, nb, c = self.sides[t], self.num_box, self.num_classes
        x = ops.cast(x, "float32")
        x = ops.reshape(x, (-1, side * side, nb, x.shape[-1] // nb))[..., :5 + c]
        cell = np.arange(side * side)
        col = ops.convert_to_tensor((cell % side).astype(_F32)[None, :, None])
        row = ops.convert_to_tensor((cell // side).astype(_F32)[None, :, None])
        bw = ops.convert_to_tensor(np.array(self.biases[0:2 * nb:2], _F32))
        bh = ops.convert_to_tensor(np.array(self.biases[1:2 * nb:2], _F32))
        sides = ops.full_like(x[..., 0], side)
        bx = divide(col + ops.sigmoid(x[..., 0]), sides)
        by = divide(row + ops.sigmoid(x[..., 1]), sides)
        w = divide(ops.exp(x[..., 2]) * bw, sides)
        h = divide(ops.exp(x[..., 3]) * bh, sides)
        logits = x[..., 5:]
        probs = ops.ones_like(logits) if c == 1 else ops.softmax(logits, axis=-1)
        scores = probs * ops.sigmoid(x[..., 4:5])
        return (ops.reshape(ops.stack([bx, by, w, h], -1), (-1, side * side * nb, 4)),
                ops.reshape(scores, (-1, side * side * nb, c)))

    def get_config(self):
        config = super().get_config()
        for key in ("anchors_scale", "mask", "mask_group_num"):
            config.pop(key)
        return config
