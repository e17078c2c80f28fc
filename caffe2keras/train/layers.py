"""Caffe's loss and accuracy layers, and BatchNorm as Caffe trains it, as Keras layers.

Losses compute what Caffe's Forward_cpu computes and give the gradients its Backward_cpu
gives (where a clamp or an epsilon makes those differ from the plain derivative, a
stop_gradient term keeps Caffe's). Each returns a scalar. Inputs arrive in Keras layout
(4-D NHWC, other ranks in Caffe's order) and are put back into Caffe's order first, so
that Caffe's flat indexing (outer x channels x inner) applies unchanged.
References: BVLC Caffe src/caffe/layers/*_loss_layer.cpp, accuracy_layer.cpp,
batch_norm_layer.cpp.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_THRESHOLD = 1e-20   # Caffe's kLOG_THRESHOLD (loss_layer.hpp)
NORMALIZATIONS = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def to_caffe(x):
    """Caffe's axis order of a Keras tensor (4-D NHWC -> NCHW)."""
    x = ops.convert_to_tensor(x)
    return ops.transpose(x, (0, 3, 1, 2)) if len(x.shape) == 4 else x


def _per_item(x):
    """(N, count / N) in Caffe's order."""
    x = to_caffe(x)
    return ops.reshape(x, (ops.shape(x)[0], -1))


def _labels(x, count=None):
    """Labels as int32 in Caffe's flat order, shaped (N, -1)."""
    return ops.cast(_per_item(x), "int32")


def _clamped_value(x, low):
    """``max(x, low)`` in value but with the gradient of ``x`` (Caffe clamps only the
    value it takes the log of; its backward divides by the same clamped value)."""
    return x + ops.stop_gradient(ops.maximum(x, low) - x)


class _CaffeLoss(keras.layers.Layer):
    def compute_output_shape(self, input_shape):
        return ()


@keras.saving.register_keras_serializable(package="caffe2keras")
class SoftmaxWithLoss(_CaffeLoss):
    """Caffe's SoftmaxWithLoss: softmax along ``axis`` (a Caffe axis), mean negative
    log-likelihood of the labels, skipping ``ignore_label``, divided by the
    ``normalization`` count (FULL, VALID, BATCH_SIZE or NONE; at least 1)."""

    def __init__(self, axis=1, ignore_label=None, normalization="VALID", **kwargs):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, "
                             f"got {normalization!r}")
        self.axis = int(axis)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.normalization = normalization

    def call(self, inputs):
        logits, label = inputs
        x = to_caffe(logits)
        rank = len(x.shape)
        axis = self.axis + rank if self.axis < 0 else self.axis
        channels = x.shape[axis]
        inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
        x = ops.reshape(x, (-1, channels, inner))
        outer = ops.shape(x)[0]
        log_p = ops.log_softmax(x, axis=1)
        labels = ops.reshape(ops.cast(to_caffe(label), "int32"), (-1, inner))
        if self.ignore_label is None:
            valid = ops.ones_like(labels, dtype="bool")
        else:
            valid = ops.not_equal(labels, self.ignore_label)
        picked = ops.take_along_axis(log_p, ops.expand_dims(ops.where(valid, labels, 0), 1),
                                     axis=1)[:, 0, :]
        picked = _clamped_value(picked, float(np.log(FLT_MIN)))
        loss = -ops.sum(ops.where(valid, picked, 0.0))
        return loss / self._normalizer(outer, inner, ops.sum(ops.cast(valid, "float32")))

    def _normalizer(self, outer, inner, valid_count):
        outer = ops.cast(outer, "float32")
        if self.normalization == "FULL":
            n = outer * inner
        elif self.normalization == "VALID":
            n = valid_count
        elif self.normalization == "BATCH_SIZE":
            n = outer
        else:
            n = ops.convert_to_tensor(1.0)
        return ops.maximum(n, 1.0)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "ignore_label": self.ignore_label,
                "normalization": self.normalization}


@keras.saving.register_keras_serializable(package="caffe2keras")
class EuclideanLoss(_CaffeLoss):
    """sum((a - b)^2) / N / 2."""

    def call(self, inputs):
        a, b = (_per_item(t) for t in inputs)
        d = a - b
        return ops.sum(d * d) / ops.cast(ops.shape(a)[0], "float32") / 2.0


@keras.saving.register_keras_serializable(package="caffe2keras")
class SigmoidCrossEntropyLoss(_CaffeLoss):
    """Caffe's numerically stable sigmoid cross-entropy; targets are probabilities.
    Divided by N (BATCH_SIZE), or as ``normalization`` says (BVLC master's option), with
    ``ignore_label`` targets left out."""

    def __init__(self, ignore_label=None, normalization="BATCH_SIZE", **kwargs):
        super().__init__(**kwargs)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.normalization = normalization

    def call(self, inputs):
        x, t = (_per_item(v) for v in inputs)
        t = ops.cast(t, x.dtype)
        pos = ops.stop_gradient(ops.cast(x >= 0, x.dtype))
        terms = x * (t - pos) - ops.log(1.0 + ops.exp(x - 2.0 * x * pos))
        if self.ignore_label is None:
            valid = ops.ones_like(terms)
        else:
            valid = ops.cast(ops.not_equal(ops.cast(t, "int32"), self.ignore_label), x.dtype)
        loss = -ops.sum(terms * valid)
        num = ops.cast(ops.shape(x)[0], "float32")
        n = {"FULL": num * x.shape[1], "VALID": ops.sum(valid), "BATCH_SIZE": num,
             "NONE": ops.convert_to_tensor(1.0)}[self.normalization]
        return loss / ops.maximum(n, 1.0)

    def get_config(self):
        return {**super().get_config(), "ignore_label": self.ignore_label,
                "normalization": self.normalization}


@keras.saving.register_keras_serializable(package="caffe2keras")
class HingeLoss(_CaffeLoss):
    """One-vs-all hinge: max(0, 1 - x[label]) and max(0, 1 + x[other]), summed (L1) or
    squared and summed (L2), divided by N."""

    def __init__(self, norm="L1", **kwargs):
        super().__init__(**kwargs)
        if norm not in ("L1", "L2"):
            raise ValueError(f"norm must be L1 or L2, got {norm!r}")
        self.norm = norm

    def call(self, inputs):
        x = _per_item(inputs[0])
        label = _labels(inputs[1])[:, 0]
        sign = 1.0 - 2.0 * ops.one_hot(label, x.shape[1], dtype=x.dtype)
        margin = ops.maximum(0.0, 1.0 + sign * x)
        total = ops.sum(margin) if self.norm == "L1" else ops.sum(margin * margin)
        return total / ops.cast(ops.shape(x)[0], "float32")

    def get_config(self):
        return {**super().get_config(), "norm": self.norm}


@keras.saving.register_keras_serializable(package="caffe2keras")
class MultinomialLogisticLoss(_CaffeLoss):
    """-log(max(p[label], 1e-20)) averaged over N; the input is probabilities."""

    def call(self, inputs):
        p = _per_item(inputs[0])
        label = _labels(inputs[1])[:, :1]
        picked = _clamped_value(ops.take_along_axis(p, label, axis=1), LOG_THRESHOLD)
        return -ops.sum(ops.log(picked)) / ops.cast(ops.shape(p)[0], "float32")


@keras.saving.register_keras_serializable(package="caffe2keras")
class InfogainLoss(_CaffeLoss):
    """-sum_k H[label, k] log(max(p_k, 1e-20)) averaged over N, with ``H`` from the
    layer's source file, or a third input. The input is probabilities (Caffe 1.0; BVLC
    master since 2017 applies a softmax first and is not what this computes)."""

    def __init__(self, infogain=None, **kwargs):
        super().__init__(**kwargs)
        self.infogain = None if infogain is None else np.asarray(infogain, np.float32)

    def call(self, inputs):
        p = _per_item(inputs[0])
        label = _labels(inputs[1])[:, 0]
        h = ops.reshape(to_caffe(inputs[2]), (p.shape[1], p.shape[1])) if len(inputs) > 2 \
            else ops.convert_to_tensor(self.infogain)
        rows = ops.take(h, label, axis=0)
        log_p = ops.log(_clamped_value(p, LOG_THRESHOLD))
        return -ops.sum(rows * log_p) / ops.cast(ops.shape(p)[0], "float32")

    def get_config(self):
        return {**super().get_config(), "infogain": None if self.infogain is None
                else self.infogain.tolist()}


@keras.saving.register_keras_serializable(package="caffe2keras")
class ContrastiveLoss(_CaffeLoss):
    """Hadsell et al.'s contrastive loss on pairs (a, b) with a similarity label:
    similar d^2, dissimilar max(margin - d, 0)^2 (``legacy_version``: max(margin - d^2,
    0)), summed and divided by 2N. Caffe's backward divides by d + 1e-4; so does this."""

    def __init__(self, margin=1.0, legacy_version=False, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.legacy_version = bool(legacy_version)

    def call(self, inputs):
        a, b = _per_item(inputs[0]), _per_item(inputs[1])
        similar = ops.not_equal(_labels(inputs[2])[:, 0], 0)
        diff = a - b
        d2 = ops.sum(diff * diff, axis=1)
        if self.legacy_version:
            apart = ops.maximum(self.margin - d2, 0.0)
        else:
            dist = ops.sqrt(ops.stop_gradient(d2))
            # value: dist; gradient w.r.t. diff: diff / (dist + 1e-4), as Caffe's
            d = ops.stop_gradient(dist) + (d2 - ops.stop_gradient(d2)) / (
                2.0 * (ops.stop_gradient(dist) + 1e-4))
            apart = ops.square(ops.maximum(self.margin - d, 0.0))
        loss = ops.sum(ops.where(similar, d2, apart))
        return loss / ops.cast(ops.shape(a)[0], "float32") / 2.0

    def get_config(self):
        return {**super().get_config(), "margin": self.margin,
                "legacy_version": self.legacy_version}


@keras.saving.register_keras_serializable(package="caffe2keras")
class SmoothL1Loss(_CaffeLoss):
    """Fast R-CNN's smooth L1 (a fork layer): sum(w_out * f(w_in * (a - b))) / N with
    f(x) = 0.5 (sigma x)^2 where |x| < 1 / sigma^2, else |x| - 0.5 / sigma^2; the inside
    and outside weights are the optional third and fourth inputs. After
    rbgirshick/caffe-fast-rcnn src/caffe/layers/smooth_L1_loss_layer.cu (as in
    WalterMa/caffe-fast-rcnn@fc4e619a), whose backward is this function's derivative."""

    def __init__(self, sigma=1.0, **kwargs):
        super().__init__(**kwargs)
        self.sigma = float(sigma)

    def call(self, inputs):
        d = _per_item(inputs[0]) - _per_item(inputs[1])
        if len(inputs) > 2:
            d = d * _per_item(inputs[2])
        s2 = self.sigma * self.sigma
        a = ops.abs(d)
        err = ops.where(a < 1.0 / s2, 0.5 * s2 * d * d, a - 0.5 / s2)
        if len(inputs) > 3:
            err = err * _per_item(inputs[3])
        return ops.sum(err) / ops.cast(ops.shape(d)[0], "float32")

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Accuracy(_CaffeLoss):
    """Caffe's top-k accuracy along ``axis``, skipping ``ignore_label``. Ties rank as in
    Caffe's partial_sort of (score, index) pairs: the higher index first."""

    def __init__(self, top_k=1, axis=1, ignore_label=None, **kwargs):
        super().__init__(**kwargs)
        self.top_k = int(top_k)
        self.axis = int(axis)
        self.ignore_label = None if ignore_label is None else int(ignore_label)

    def call(self, inputs):
        scores, label = inputs
        x = to_caffe(scores)
        rank = len(x.shape)
        axis = self.axis + rank if self.axis < 0 else self.axis
        channels = x.shape[axis]
        inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
        x = ops.reshape(x, (-1, channels, inner))
        labels = ops.reshape(ops.cast(to_caffe(label), "int32"), (-1, inner))
        if self.ignore_label is None:
            valid = ops.ones_like(labels, dtype="bool")
        else:
            valid = ops.not_equal(labels, self.ignore_label)
        safe = ops.where(valid, labels, 0)
        own = ops.take_along_axis(x, ops.expand_dims(safe, 1), axis=1)
        index = ops.reshape(ops.arange(channels, dtype="int32"), (1, channels, 1))
        ahead = ops.logical_or(x > own, ops.logical_and(
            ops.equal(x, own), index > ops.expand_dims(safe, 1)))
        hit = ops.sum(ops.cast(ahead, "int32"), axis=1) < self.top_k
        hits = ops.sum(ops.cast(ops.logical_and(hit, valid), "float32"))
        return hits / ops.sum(ops.cast(valid, "float32"))

    def get_config(self):
        return {**super().get_config(), "top_k": self.top_k, "axis": self.axis,
                "ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package="caffe2keras")
class CaffeBatchNorm(keras.layers.Layer):
    """BatchNorm (+ its Scale) as Caffe trains it. Training: normalize by the batch's
    mean and biased variance, and update the stored statistics as Caffe does: with
    f <- maf * f + 1, mean <- (maf * f_old * mean + batch_mean) / f and the same for the
    variance with its unbiased batch value (m / (m - 1)). ``factor`` is Caffe's third
    blob, so the caffemodel's sums are ``moving_mean * factor``. Inference, or
    ``use_global_stats``: the stored statistics (Caffe's TEST phase)."""

    def __init__(self, axis=-1, epsilon=1e-5, moving_average_fraction=0.999, center=True,
                 scale=True, use_global_stats=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.epsilon = float(epsilon)
        self.moving_average_fraction = float(moving_average_fraction)
        self.center = bool(center)
        self.scale = bool(scale)
        self.use_global_stats = bool(use_global_stats)

    def build(self, input_shape):
        c = (input_shape[self.axis],)
        if self.scale:
            self.gamma = self.add_weight(shape=c, initializer="ones", name="gamma")
        if self.center:
            self.beta = self.add_weight(shape=c, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=c, initializer="zeros", trainable=False,
                                           name="moving_mean")
        self.moving_variance = self.add_weight(shape=c, initializer="ones", trainable=False,
                                               name="moving_variance")
        self.factor = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                      name="factor")

    def call(self, x, training=None, mask=None):
        rank = len(x.shape)
        axis = self.axis % rank
        reduce = [a for a in range(rank) if a != axis]
        shape = [1] * rank
        shape[axis] = x.shape[axis]
        if training and not self.use_global_stats:
            mean = ops.mean(x, axis=reduce)
            var = ops.mean(ops.square(x - ops.reshape(mean, shape)), axis=reduce)
            m = ops.cast(ops.size(x) // x.shape[axis], "float32")
            unbiased = ops.where(m > 1, m / ops.maximum(m - 1, 1.0), 1.0)
            maf = self.moving_average_fraction
            old = maf * self.factor
            new = old + 1.0
            self.moving_mean.assign((old * self.moving_mean + mean) / new)
            self.moving_variance.assign((old * self.moving_variance + unbiased * var) / new)
            self.factor.assign(new)
        else:
            mean, var = self.moving_mean, self.moving_variance
        y = (x - ops.reshape(mean, shape)) / ops.reshape(ops.sqrt(var + self.epsilon), shape)
        if self.scale:
            y = y * ops.reshape(self.gamma, shape)
        if self.center:
            y = y + ops.reshape(self.beta, shape)
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "moving_average_fraction": self.moving_average_fraction,
                "center": self.center, "scale": self.scale,
                "use_global_stats": self.use_global_stats}
