"""Caffe's loss layers as Keras layers: loss and gradient of the first bottom against
real Caffe (goldens from tests/data/train/make_loss_goldens.py), on every backend."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from caffe2keras.train.layers import (
    Accuracy,
    CaffeBatchNorm,
    ContrastiveLoss,
    EuclideanLoss,
    HingeLoss,
    InfogainLoss,
    MultinomialLogisticLoss,
    SigmoidCrossEntropyLoss,
    SmoothL1Loss,
    SoftmaxWithLoss,
)

from .shared import ROOT, to_numpy

GOLDENS = dict(np.load(ROOT / "tests" / "data" / "train" / "loss_goldens.npz"))
CASES = sorted({k.split("/")[0] for k in GOLDENS})


def layer_for(case):
    if case.startswith("softmax_"):
        mode = case.split("_", 1)[1]
        if mode == "plain":
            return SoftmaxWithLoss()
        if mode == "normalize_false":
            return SoftmaxWithLoss(normalization="BATCH_SIZE")
        return SoftmaxWithLoss(ignore_label=255, normalization=mode)
    return {
        "euclidean": lambda: EuclideanLoss(),
        "sigmoid_ce": lambda: SigmoidCrossEntropyLoss(),
        "hinge_l1": lambda: HingeLoss("L1"),
        "hinge_l2": lambda: HingeLoss("L2"),
        "multinomial": lambda: MultinomialLogisticLoss(),
        "infogain": lambda: InfogainLoss(infogain=GOLDENS["infogain/in/h"].reshape(4, 4)),
        "contrastive": lambda: ContrastiveLoss(margin=1.5),
        "contrastive_legacy": lambda: ContrastiveLoss(margin=1.5, legacy_version=True),
    }[case]()


def inputs_for(case, with_h=False):
    names = ["x", "y", "s"] + (["h"] if with_h else [])
    out = []
    for n in names:
        key = f"{case}/in/{n}"
        if key in GOLDENS:
            v = GOLDENS[key]
            out.append(v.transpose(0, 2, 3, 1) if v.ndim == 4 else v)
    return out


def value_and_grad(layer, inputs):
    """The loss and its gradient w.r.t. the first input, on the current backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        rest = inputs[1:]
        loss, g = jax.value_and_grad(lambda x: layer([x, *rest]))(inputs[0])
        return float(loss), np.asarray(g)
    if backend == "tensorflow":
        import tensorflow as tf
        x = tf.Variable(inputs[0])
        with tf.GradientTape() as tape:
            loss = layer([x, *inputs[1:]])
        return float(loss), tape.gradient(loss, x).numpy()
    import torch
    x = torch.tensor(inputs[0], requires_grad=True)
    loss = layer([x, *(torch.tensor(v) for v in inputs[1:])])
    loss.backward()
    return float(loss.detach().cpu()), x.grad.cpu().numpy()


@pytest.mark.parametrize("case", CASES)
def test_loss_matches_caffe(case):
    loss, grad = value_and_grad(layer_for(case), inputs_for(case))
    want = float(GOLDENS[f"{case}/loss"])
    np.testing.assert_allclose(loss, want, rtol=1e-4, atol=1e-6)
    diff = GOLDENS[f"{case}/diff"]
    if diff.ndim == 4:
        diff = diff.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(grad, diff, rtol=1e-4, atol=1e-4 * max(1, np.abs(diff).max()))


def test_infogain_from_a_third_input():
    loss, grad = value_and_grad(InfogainLoss(), inputs_for("infogain", with_h=True))
    np.testing.assert_allclose(loss, float(GOLDENS["infogain/loss"]), rtol=1e-4)
    np.testing.assert_allclose(grad, GOLDENS["infogain/diff"], rtol=1e-4, atol=1e-6)


def test_accuracy_top_k_ties_and_ignore():
    scores = np.array([[0.1, 0.5, 0.5, 0.2],    # tie 1/2: Caffe ranks index 2 first
                       [0.9, 0.1, 0.0, 0.3],
                       [0.2, 0.2, 0.2, 0.2],
                       [0.0, 0.0, 1.0, 0.0]], np.float32)
    labels = np.array([1, 0, 3, 7], np.float32)
    got = lambda **kw: float(to_numpy(Accuracy(**kw)([scores, labels])))
    assert got(ignore_label=7) == pytest.approx(2 / 3)   # 1 (second to 2), 0 yes, 3 yes
    assert got(top_k=2, ignore_label=7) == pytest.approx(1.0)
    labels[3] = 2
    assert got() == pytest.approx(3 / 4)


def test_softmax_loss_spatial_label_layout():
    """A (N, 1, H, W) label is NHWC (N, H, W, 1) in Keras; it indexes like Caffe's."""
    x = GOLDENS["softmax_VALID/in/x"].transpose(0, 2, 3, 1)
    y = GOLDENS["softmax_VALID/in/y"].transpose(0, 2, 3, 1)
    out = SoftmaxWithLoss(ignore_label=255)([x, y])
    np.testing.assert_allclose(float(to_numpy(out)), float(GOLDENS["softmax_VALID/loss"]),
                               rtol=1e-4)


def test_batch_norm_training_update_follows_caffe():
    rng = np.random.default_rng(0)
    x = rng.normal(2, 3, (4, 5, 5, 3)).astype(np.float32)
    bn = CaffeBatchNorm(moving_average_fraction=0.9, center=False, scale=False)
    bn.build(x.shape)
    bn.set_weights([np.full(3, 1.0, np.float32), np.full(3, 2.0, np.float32),
                    np.float32(2.0)])
    y = to_numpy(bn(x, training=True))
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    m = 4 * 5 * 5
    f = 0.9 * 2 + 1
    mm, mv, ff = (to_numpy(w) for w in bn.weights)
    np.testing.assert_allclose(ff, f, rtol=1e-6)
    # Caffe's sums: S <- 0.9 S + batch value, with S = stored x factor
    np.testing.assert_allclose(mm * ff, 0.9 * 1.0 * 2 + mean, rtol=1e-5)
    np.testing.assert_allclose(mv * ff, 0.9 * 2.0 * 2 + var * m / (m - 1), rtol=1e-5)
    y_test = to_numpy(bn(x, training=False))
    np.testing.assert_allclose(y_test, (x - mm) / np.sqrt(mv + 1e-5), rtol=1e-4, atol=1e-4)


def test_layers_serialize():
    for layer in (SoftmaxWithLoss(ignore_label=3, normalization="FULL"), HingeLoss("L2"),
                  ContrastiveLoss(2.0, True), Accuracy(top_k=5), CaffeBatchNorm(axis=1),
                  InfogainLoss(infogain=np.eye(2))):
        back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert back.get_config() == layer.get_config()


def smooth_l1_reference(a, b, w_in=None, w_out=None, sigma=1.0):
    """numpy port of Fast R-CNN's smooth_L1_loss_layer.cu forward and backward
    (rbgirshick/caffe-fast-rcnn, as in WalterMa/caffe-fast-rcnn@fc4e619a): the fork is
    not in the Caffe we build, so its loss is checked against this transcription."""
    s2 = sigma * sigma
    d = a - b
    if w_in is not None:
        d = d * w_in
    err = np.where(np.abs(d) < 1 / s2, 0.5 * d * d * s2, np.abs(d) - 0.5 / s2)
    if w_out is not None:
        err = err * w_out
    n = a.shape[0]
    grad = np.where(np.abs(d) < 1 / s2, s2 * d, np.sign(d)) / n
    if w_in is not None:
        grad = grad * w_in
    if w_out is not None:
        grad = grad * w_out
    return err.sum() / n, grad


@pytest.mark.parametrize("sigma, weights", [(1.0, 0), (3.0, 2), (0.5, 1)])
def test_smooth_l1_loss(sigma, weights):
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, (4, 8)).astype(np.float32)
    b = rng.normal(0, 1, (4, 8)).astype(np.float32)
    extra = [rng.integers(0, 2, (4, 8)).astype(np.float32) for _ in range(weights)]
    want, want_grad = smooth_l1_reference(a, b, *extra, sigma=sigma)
    loss, grad = value_and_grad(SmoothL1Loss(sigma), [a, b, *extra])
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)
