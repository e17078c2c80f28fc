"""Keras layers for the SSD fork of Caffe (weiliu89/caffe): Normalize, PriorBox and
DetectionOutput. keras.ops only, so they run on jax, tensorflow and torch.

Arithmetic follows Caffe's float32 code paths (normalize_layer.cpp, prior_box_layer.cpp,
detection_output_layer.cpp, util/bbox_util.cpp) operation by operation, so that boxes
and the NMS decisions that depend on them match Caffe's.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

_F32 = np.float32
_FLT_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------- Normalize

@keras.saving.register_keras_serializable(package="caffe2keras")
class Normalize(keras.layers.Layer):
    """SSD's L2 normalisation with a learned scale.

    ``across_spatial``: one norm per image over all its values; otherwise one norm per
    spatial position over the channels. ``eps`` is added to the sum of squares before
    the square root (as normalize_layer.cpp does). ``channel_shared``: one scale for all
    channels, else one per channel. ``axis`` is the channel axis (-1 for NHWC inputs).
    """

    def __init__(self, across_spatial=True, channel_shared=True, eps=1e-10, axis=-1,
                 scale_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.across_spatial = bool(across_spatial)
        self.channel_shared = bool(channel_shared)
        self.eps = float(eps)
        self.axis = int(axis)
        self.scale_initializer = keras.initializers.get(scale_initializer)

    def build(self, input_shape):
        axis = self.axis % len(input_shape)
        self._axis = axis
        channels = input_shape[axis]
        self.scale = self.add_weight(
            name="scale", shape=(1,) if self.channel_shared else (channels,),
            initializer=self.scale_initializer)

    def call(self, x):
        ndim = len(x.shape)
        sq = ops.square(x)
        if self.across_spatial:
            total = ops.sum(sq, axis=tuple(range(1, ndim)), keepdims=True)
            y = x * (1.0 / ops.sqrt(total + self.eps))
        else:
            total = ops.sum(sq, axis=self._axis, keepdims=True)
            y = x / ops.sqrt(total + self.eps)
        shape = [1] * ndim
        shape[self._axis] = -1
        return y * ops.reshape(ops.cast(self.scale, y.dtype), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "across_spatial": self.across_spatial,
                "channel_shared": self.channel_shared, "eps": self.eps, "axis": self.axis,
                "scale_initializer": keras.initializers.serialize(self.scale_initializer)}


# ----------------------------------------------------------------------------- PriorBox

def prior_aspect_ratios(aspect_ratio, flip):
    """Caffe's ratio list as float32: 1, then each new ratio (and 1/ratio when flip),
    skipping ratios within 1e-6 of one already listed."""
    ars = [_F32(1.0)]
    for ar in aspect_ratio:
        ar = _F32(ar)
        if any(abs(float(ar) - float(x)) < 1e-6 for x in ars):
            continue
        ars.append(ar)
        if flip:
            ars.append(_F32(1.0 / float(ar)))
    return ars


def prior_boxes(feature_hw, image_hw, min_sizes, max_sizes=(), aspect_ratios=(), flip=True,
                clip=False, variance=(), step_hw=(0.0, 0.0), offset=0.5):
    """What Caffe's PriorBox layer computes, shape (1, 2, H*W*num_priors*4): per feature
    map cell the boxes (xmin, ymin, xmax, ymax, normalised by the image size) for each
    min size (its square box, then the sqrt(min*max) box, then one per aspect ratio),
    and in the second channel the 4 variances of each box.

    Sizes are truncated to int as prior_box_layer.cpp does; positions are float32.
    """
    lh, lw = (int(v) for v in feature_hw)
    ih, iw = (int(v) for v in image_hw)
    ars = prior_aspect_ratios(aspect_ratio=aspect_ratios, flip=flip)
    sh, sw = (_F32(v) for v in step_hw)
    if sh == 0 or sw == 0:
        sw, sh = _F32(iw) / _F32(lw), _F32(ih) / _F32(lh)
    off = _F32(offset)
    cx = (np.arange(lw, dtype=_F32) + off) * sw          # float32, as Caffe's center_x
    cy = (np.arange(lh, dtype=_F32) + off) * sh
    sizes = []                                           # (width, height) per prior
    for s, mn in enumerate(min_sizes):
        mn = int(mn)
        sizes.append((_F32(mn), _F32(mn)))
        if max_sizes:
            side = _F32(np.sqrt(np.float64(mn * int(max_sizes[s]))))
            sizes.append((side, side))
        for ar in ars:
            if abs(float(ar) - 1.0) < 1e-6:
                continue
            root = np.sqrt(ar)                           # float32 sqrt of a float ratio
            sizes.append((_F32(mn) * root, _F32(mn) / root))
    bw = np.array([w for w, _ in sizes], np.float64)
    bh = np.array([h for _, h in sizes], np.float64)
    gx = np.broadcast_to(cx.astype(np.float64)[None, :, None], (lh, lw, len(sizes)))
    gy = np.broadcast_to(cy.astype(np.float64)[:, None, None], (lh, lw, len(sizes)))
    # Caffe: (center - size / 2.) / img in double, stored as float
    boxes = np.stack([(gx - bw / 2.0) / iw, (gy - bh / 2.0) / ih,
                      (gx + bw / 2.0) / iw, (gy + bh / 2.0) / ih], axis=-1).astype(_F32)
    boxes = boxes.reshape(-1)
    if clip:
        boxes = np.minimum(np.maximum(boxes, _F32(0)), _F32(1))
    var = np.array([float(v) for v in variance] or [0.1], _F32)
    var = np.tile(var, boxes.size // var.size)
    return np.stack([boxes, var])[None]


@keras.saving.register_keras_serializable(package="caffe2keras")
class PriorBox(keras.layers.Layer):
    """SSD's prior (anchor) boxes. They depend only on the feature map and image sizes,
    so they are computed once in numpy (``prior_boxes``) from this layer's config and
    returned as a constant of Caffe's shape (1, 2, H*W*num_priors*4) whatever the batch.
    Inputs (the feature map, and the image) are accepted only for graph wiring."""

    def __init__(self, feature_hw, image_hw, min_sizes, max_sizes=(), aspect_ratios=(),
                 flip=True, clip=False, variance=(), step_hw=(0.0, 0.0), offset=0.5,
                 **kwargs):
        super().__init__(**kwargs)
        self.feature_hw = [int(v) for v in feature_hw]
        self.image_hw = [int(v) for v in image_hw]
        self.min_sizes = [float(v) for v in min_sizes]
        self.max_sizes = [float(v) for v in max_sizes]
        self.aspect_ratios = [float(v) for v in aspect_ratios]
        self.flip = bool(flip)
        self.clip = bool(clip)
        self.variance = [float(v) for v in variance]
        self.step_hw = [float(v) for v in step_hw]
        self.offset = float(offset)
        self.priors = prior_boxes(self.feature_hw, self.image_hw, self.min_sizes,
                                  self.max_sizes, self.aspect_ratios, self.flip, self.clip,
                                  self.variance, self.step_hw, self.offset)

    def call(self, inputs):
        return ops.convert_to_tensor(self.priors, dtype="float32")

    def compute_output_shape(self, input_shape):
        return tuple(self.priors.shape)

    def get_config(self):
        return {**super().get_config(), "feature_hw": self.feature_hw,
                "image_hw": self.image_hw, "min_sizes": self.min_sizes,
                "max_sizes": self.max_sizes, "aspect_ratios": self.aspect_ratios,
                "flip": self.flip, "clip": self.clip, "variance": self.variance,
                "step_hw": self.step_hw, "offset": self.offset}


# ---------------------------------------------------------------------- DetectionOutput

CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")

# Above this many IoU entries per image (classes x top_k x top_k) NMS runs candidate by
# candidate instead of on the whole IoU matrix (only nets that leave top_k unset).
_MATRIX_NMS_LIMIT = 1 << 24


def _has_value(x):
    """True when ``x`` is a concrete (eager) tensor, False while jax/tensorflow trace."""
    backend = keras.config.backend()
    if backend == "jax":
        import jax
        return not isinstance(x, jax.core.Tracer)
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.executing_eagerly()
    return True  # torch and numpy run eagerly


def adaptive_thresholds(nms_threshold, eta, count):
    """NMS threshold in force after n kept boxes, n = 0..count (ApplyNMSFast: while the
    threshold is above 0.5, each kept box multiplies it by eta, in float32)."""
    t = _F32(nms_threshold)
    out = [t]
    for _ in range(count):
        if eta < 1 and t > 0.5:
            t = _F32(t * _F32(eta))
        out.append(t)
    return np.array(out, _F32)


@keras.saving.register_keras_serializable(package="caffe2keras")
class DetectionOutput(keras.layers.Layer):
    """SSD's detection head: decode boxes, per-class NMS, keep the best ``keep_top_k``.

    Inputs, in Caffe's order: loc (batch, num_priors * num_loc_classes * 4), conf (batch,
    num_priors * num_classes), priors (1, 2, num_priors * 4).

    Output (batch, rows, 7), rows = keep_top_k (or every possible candidate when
    keep_top_k is -1): each valid row is Caffe's (image_id, label, score, xmin, ymin, xmax,
    ymax), in Caffe's order (by label, then by score, best first); the rest are -1.
    Caffe instead stacks the valid rows of all images into one (1, 1, n, 7) blob.

    Equal scores are ordered by prior index (Caffe's stable sort), and at the keep_top_k
    cut by label then rank (Caffe's std::sort leaves that tie order unspecified).
    """

    def __init__(self, num_classes, num_priors, share_location=True, background_label_id=0,
                 code_type="CORNER", variance_encoded_in_target=False, keep_top_k=-1,
                 confidence_threshold=None, nms_threshold=0.3, top_k=-1, eta=1.0, **kwargs):
        super().__init__(**kwargs)
        if code_type not in CODE_TYPES:
            raise ValueError(f"code_type must be one of {CODE_TYPES}, got {code_type!r}")
        self.num_classes = int(num_classes)
        self.num_priors = int(num_priors)
        self.share_location = bool(share_location)
        self.background_label_id = int(background_label_id)
        self.code_type = code_type
        self.variance_encoded_in_target = bool(variance_encoded_in_target)
        self.keep_top_k = int(keep_top_k)
        self.confidence_threshold = (None if confidence_threshold is None
                                     else float(confidence_threshold))
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.eta = float(eta)
        self.labels = [c for c in range(self.num_classes) if c != self.background_label_id]
        p = self.num_priors
        self.candidates = p if self.top_k < 0 else min(self.top_k, p)
        self.rows_possible = len(self.labels) * self.candidates
        self.rows = self.keep_top_k if self.keep_top_k > -1 else self.rows_possible
        self.thresholds = adaptive_thresholds(self.nms_threshold, self.eta, self.candidates)
        self._jitted = None

    # -- decoding (bbox_util.cpp DecodeBBox), float32 in Caffe's operation order
    def _decode(self, loc, priors, variances):
        """loc (B, P, L, 4); priors, variances (P, 4) -> boxes (B, P, L, 4)."""
        priors = priors[:, None, :]
        var = variances[:, None, :]
        enc = self.variance_encoded_in_target
        if self.code_type == "CORNER":
            return priors + (loc if enc else var * loc)
        lo, hi = priors[..., :2], priors[..., 2:]
        size = hi - lo
        if self.code_type == "CORNER_SIZE":
            size4 = ops.concatenate([size, size], axis=-1)
            return priors + (loc if enc else var * loc) * size4
        center = (lo + hi) / 2.0
        if enc:
            c = loc[..., :2] * size + center
            s = ops.exp(loc[..., 2:]) * size
        else:
            c = var[..., :2] * loc[..., :2] * size + center
            s = ops.exp(var[..., 2:] * loc[..., 2:]) * size
        return ops.concatenate([c - s / 2.0, c + s / 2.0], axis=-1)

    @staticmethod
    def _area(box):
        """BBoxSize of boxes (..., 4): 0 for an inverted box."""
        lo, hi = box[..., :2], box[..., 2:]
        bad = ops.any(hi < lo, axis=-1)
        wh = hi - lo
        return ops.where(bad, 0.0, wh[..., 0] * wh[..., 1])

    @staticmethod
    def _iou(a, b, area_a, area_b):
        """JaccardOverlap of boxes a and b (..., 4, broadcasting), with their areas."""
        wh = ops.minimum(a[..., 2:], b[..., 2:]) - ops.maximum(a[..., :2], b[..., :2])
        iw, ih = wh[..., 0], wh[..., 1]
        ok = ops.logical_and(iw > 0, ih > 0)
        inter = iw * ih
        den = (area_a + area_b) - inter
        return ops.where(ok, inter / ops.where(ok, den, 1.0), 0.0)

    def _nms_matrix(self, boxes, areas, valid):
        """Greedy NMS as a fixed point: box i survives iff it is valid and no surviving
        box ranked before it overlaps it above the threshold in force. Entry i depends
        only on entries before it, so iterating from ``valid`` settles rank by rank and
        stops at Caffe's answer, usually after a few rounds."""
        k = self.candidates
        iou = self._iou(boxes[..., :, None, :], boxes[..., None, :, :],
                        areas[..., :, None], areas[..., None, :])
        earlier = ops.convert_to_tensor(np.tril(np.ones((k, k), bool), -1))
        adaptive = self.eta < 1 and self.nms_threshold > 0.5
        table = ops.convert_to_tensor(self.thresholds)
        blocks = None
        if not adaptive:
            blocks = ops.cast(ops.logical_and(
                earlier, ops.logical_not(iou <= self.thresholds[0])), "float32")

        def body(keep, changed):
            keep_f = ops.cast(keep, "float32")
            blk = blocks
            if adaptive:
                before = ops.cast(ops.cumsum(keep_f, axis=-1) - keep_f, "int32")
                thr = ops.take(table, before)
                blk = ops.cast(ops.logical_and(
                    earlier, ops.logical_not(iou <= thr[..., :, None])), "float32")
            hits = ops.squeeze(ops.matmul(blk, keep_f[..., :, None]), -1)
            new = ops.logical_and(valid, hits == 0)
            return new, ops.any(ops.not_equal(new, keep))

        if _has_value(valid):
            # eager: a plain loop (jax would compile a fresh while_loop on every call)
            keep = valid
            for _ in range(k + 1):
                keep, changed = body(keep, None)
                if not bool(ops.convert_to_numpy(changed)):
                    break
            return keep
        keep, _ = ops.while_loop(lambda keep, changed: changed, body,
                                 (valid, ops.convert_to_tensor(True)),
                                 maximum_iterations=k + 1)
        return keep

    def _nms_sequential(self, boxes, areas, valid):
        """The same greedy NMS one rank at a time (memory O(K) per step)."""
        k = self.candidates
        table = ops.convert_to_tensor(self.thresholds)
        ranks = ops.arange(k, dtype="int32")

        def body(i, keep):
            this = ops.equal(ranks, i)
            sel = ops.cast(this, "float32")
            box_i = ops.sum(boxes * sel[:, None], axis=-2, keepdims=True)
            area_i = ops.sum(areas * sel, axis=-1, keepdims=True)
            iou = self._iou(box_i, boxes, area_i, areas)
            before = ops.logical_and(keep, ranks < i)
            n_before = ops.sum(ops.cast(before, "int32"), axis=-1, keepdims=True)
            thr = ops.take(table, n_before)
            blocked = ops.any(ops.logical_and(before, ops.logical_not(iou <= thr)),
                              axis=-1, keepdims=True)
            valid_i = ops.any(ops.logical_and(valid, this), axis=-1, keepdims=True)
            return ops.where(this, ops.logical_and(valid_i, ops.logical_not(blocked)), keep)

        return ops.fori_loop(0, k, body, ops.zeros_like(valid))

    def call(self, inputs):
        backend = keras.config.backend()
        if backend in ("jax", "tensorflow") and _has_value(inputs[0]):
            # Called eagerly: this is a few hundred small ops, which eager jax compiles one
            # by one on first use (seconds) and eager tensorflow dispatches at ~0.1 ms
            # each. Run them as one compiled function instead.
            if self._jitted is None:
                if backend == "jax":
                    import jax
                    self._jitted = jax.jit(self._detect)
                else:
                    import tensorflow as tf
                    self._jitted = tf.function(self._detect, reduce_retracing=True)
            return self._jitted(*inputs[:3])
        return self._detect(*inputs[:3])

    def _detect(self, loc, conf, prior):
        loc, conf, prior = (ops.cast(t, "float32") for t in (loc, conf, prior))
        p, c, k = self.num_priors, self.num_classes, self.candidates
        n_labels = len(self.labels)
        num_loc = 1 if self.share_location else c
        batch = ops.shape(loc)[0]
        if n_labels == 0 or self.rows == 0:
            return ops.zeros((batch, self.rows, 7), "float32") - 1.0
        prior = ops.reshape(prior, (-1, 2, p, 4))[0]
        boxes = self._decode(ops.reshape(loc, (-1, p, num_loc, 4)), prior[0], prior[1])
        boxes = ops.transpose(boxes, (0, 2, 1, 3))                 # (B, L, P, 4)
        if not self.share_location:
            boxes = ops.take(boxes, self.labels, axis=1)
        scores = ops.take(ops.transpose(ops.reshape(conf, (-1, p, c)), (0, 2, 1)),
                          self.labels, axis=1)                     # (B, C', P)

        # candidates per class: score > threshold, best first (stable), at most top_k
        order = ops.argsort(-scores, axis=-1)[..., :k]
        cand_scores = ops.take_along_axis(scores, order, axis=-1)
        thr = -_FLT_MAX if self.confidence_threshold is None else self.confidence_threshold
        valid = cand_scores > _F32(thr)
        cand = ops.take_along_axis(boxes, order[..., None], axis=2)  # (B, C', K, 4)
        areas = self._area(cand)
        if n_labels * k * k <= _MATRIX_NMS_LIMIT:
            kept = self._nms_matrix(cand, areas, valid)
        else:
            kept = self._nms_sequential(cand, areas, valid)

        # keep_top_k across classes, then Caffe's row order: by label, then rank
        total = n_labels * k
        flat_kept = ops.reshape(kept, (-1, total))
        flat_scores = ops.reshape(cand_scores, (-1, total))
        if -1 < self.keep_top_k < total:
            ranked = ops.where(flat_kept, flat_scores, -np.inf)
            sel = ops.argsort(-ranked, axis=-1)[:, :self.keep_top_k]
            sel_kept = ops.take_along_axis(flat_kept, sel, axis=-1)
            key = ops.where(sel_kept, sel, sel + total)
            final = ops.take_along_axis(sel, ops.argsort(key, axis=-1), axis=-1)
        else:
            index = ops.arange(total, dtype="int32")[None, :]
            final = ops.argsort(ops.where(flat_kept, index, index + total), axis=-1)
        label_of = np.repeat(np.array(self.labels, _F32), k)
        image = ops.cast(ops.arange(batch), "float32")[:, None, None]
        rows = ops.concatenate([
            image + ops.zeros_like(ops.cast(final, "float32"))[..., None],
            ops.take(label_of, final)[..., None],
            ops.take_along_axis(flat_scores, final, axis=-1)[..., None],
            ops.take_along_axis(ops.reshape(cand, (-1, total, 4)), final[..., None], axis=1),
        ], axis=-1)
        row_kept = ops.take_along_axis(flat_kept, final, axis=-1)
        rows = ops.where(row_kept[..., None], rows, -1.0)
        pad = self.rows - (total if self.keep_top_k < 0 else min(self.keep_top_k, total))
        if pad > 0:
            rows = ops.concatenate([rows, -ops.ones((batch, pad, 7), "float32")], axis=1)
        return rows

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], self.rows, 7)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "num_priors": self.num_priors, "share_location": self.share_location,
                "background_label_id": self.background_label_id,
                "code_type": self.code_type,
                "variance_encoded_in_target": self.variance_encoded_in_target,
                "keep_top_k": self.keep_top_k,
                "confidence_threshold": self.confidence_threshold,
                "nms_threshold": self.nms_threshold, "top_k": self.top_k, "eta": self.eta}
