"""Shared parameters (``param { name: ... }``) against real Caffe: a Siamese net whose
towers share a convolution and an inner product (goldens from
tests/data/train/siamese/make_siamese_goldens.py): forward features, per-step
ContrastiveLoss and the weights after training, written back with save_caffemodel."""
from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras import CaffeWarning, UnsupportedLayerError

from .shared import ROOT, to_numpy

DATA = ROOT / "tests" / "data" / "train" / "siamese"
sys.path.insert(0, str(DATA))
from batches import SOLVER, STEPS, batch  # the make script's own batches

sys.path.remove(str(DATA))
NET = DATA / "net.prototxt"
INIT = DATA / "init.caffemodel"
GOLDEN = dict(np.load(DATA / "siamese_goldens.npz"))


def nhwc(b):
    return {k: (v.transpose(0, 2, 3, 1) if v.ndim == 4 else v) for k, v in b.items()}


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1, np.abs(want).max()))


def test_convert_builds_one_layer_for_both_towers(tmp_path):
    model = caffe2keras.convert(NET, INIT)
    assert len(model.weights) == 4  # conv1 and ip1 weights and biases, once
    out = model(nhwc(batch(0)))
    for top in ("feat", "feat_p"):
        close(to_numpy(out[top]), GOLDEN[f"forward/{top}"])
    model.save(tmp_path / "m.keras")  # a shared Keras layer stays shared
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert len(again.weights) == 4
    close(to_numpy(again(nhwc(batch(0)))["feat_p"]), GOLDEN["forward/feat_p"])


def test_fresh_weights_are_shared_too():
    model = caffe2keras.convert(NET)
    out = model({**nhwc(batch(0)), "data_p": nhwc(batch(0))["data"]})
    np.testing.assert_array_equal(to_numpy(out["feat"]), to_numpy(out["feat_p"]))


def test_training_matches_caffe_and_writes_back_the_copies(tmp_path):
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{NET}"\n{SOLVER}\n')
    model = caffe2keras.convert_for_training(solver, INIT)
    losses = [float(np.asarray(model.train_on_batch(nhwc(batch(s))))) for s in range(STEPS)]
    close(np.array(losses), GOLDEN["loss"])
    out = caffe2keras.save_caffemodel(model, NET, tmp_path / "trained.caffemodel")
    weights = caffe2keras.load_caffemodel(out)
    for layer in ("conv1", "conv1_p", "ip1", "ip1_p"):  # Caffe saves the owner's blob
        for i, blob in enumerate(weights.layers[layer].blobs):  # in both layers
            want = GOLDEN[f"final/{layer}/{i}"]
            close(blob.array(want.shape), want)


def _edited(tmp_path, old, new):
    head, tail = NET.read_text().split('layer { name: "ip1_p"')
    assert old in tail
    bad = tmp_path / "net.prototxt"  # the edit in the sharing layer ip1_p
    bad.write_text(head + 'layer { name: "ip1_p"' + tail.replace(old, new, 1))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{bad}"\n{SOLVER}\n')
    return bad, solver


@pytest.mark.parametrize("old, new, message", [
    ('name: "ip1_b"', 'name: "other_b"', "must share all its parameters"),
    ('name: "ip1_b" lr_mult: 0', 'name: "ip1_b" lr_mult: 3', "lr_mult 3.0, not 0.0"),
    ("num_output: 2", "num_output: 2 bias_term: false", "not configured as its owner's"),
])
def test_sharing_it_cannot_build_is_refused_for_training(tmp_path, old, new, message):
    _, solver = _edited(tmp_path, old, new)
    with pytest.raises(UnsupportedLayerError, match=message):
        caffe2keras.convert_for_training(solver)  # fresh: no blob count to trip on


def test_partial_sharing_converts_for_inference_with_copies(tmp_path):
    bad, _ = _edited(tmp_path, 'name: "ip1_b"', 'name: "other_b"')
    with pytest.warns(CaffeWarning, match="keeps its own copy"):
        model = caffe2keras.convert(bad, INIT)
    assert len(model.weights) == 6  # ip1_p has its own weights, from the caffemodel
    close(to_numpy(model(nhwc(batch(0)))["feat_p"]), GOLDEN["forward/feat_p"])
