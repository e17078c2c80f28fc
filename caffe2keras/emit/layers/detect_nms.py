"""Detection heads of Caffe forks built on greedy NMS: Proposal (Faster R-CNN's RPN, the
C++ layer) and the YOLO detection outputs of MobileNet-YOLO. keras.ops only; fixed-size
outputs padded with -1 rows. The fork sources are cited at each class; the numpy
references are in tests/test_emit_detect.py."""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .detect import _F32, _compiled, _has_value, divide, stable_argsort

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
