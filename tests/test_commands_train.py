"""`caffe2keras train`: a solver on its own LMDB, snapshots and tests; its losses are the
ones convert_for_training gives on the same batches."""
from __future__ import annotations

import re

import numpy as np
import pytest

from caffe2keras.cli import main

from .test_data import datum

lmdb = pytest.importorskip("lmdb")


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(5)
    for name, n in (("train_db", 12), ("test_db", 4)):
        env = lmdb.open(str(tmp_path / name), map_size=1 << 22)
        with env.begin(write=True) as txn:
            for i in range(n):
                img = rng.integers(0, 256, (3, 6, 6))
                txn.put(f"{i:08d}".encode(), datum(img, label=int(img.mean() > 127)))
        env.close()
    (tmp_path / "net.prototxt").write_text("""
name: "tiny"
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 crop_size: 4 }
  data_param { source: "train_db" batch_size: 4 backend: LMDB } }
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 crop_size: 4 }
  data_param { source: "test_db" batch_size: 2 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
  include { phase: TEST } }
""")
    (tmp_path / "solver.prototxt").write_text("""
net: "net.prototxt"
base_lr: 0.1 momentum: 0.9 weight_decay: 0.001 lr_policy: "step" gamma: 0.5 stepsize: 3
max_iter: 6 display: 1 snapshot: 3 snapshot_prefix: "snap/tiny"
test_iter: 2 test_interval: 3
""")
    (tmp_path / "snap").mkdir()
    return tmp_path


def test_train_runs_like_caffe_train(setup, monkeypatch, capsys):
    monkeypatch.chdir(setup)
    assert main(["train", "solver.prototxt", "--seed", "0"]) == 0
    out, err = capsys.readouterr()
    losses = [float(v) for v in re.findall(r"Iteration \d+, loss = ([\d.e+-]+)", out + err)]
    assert len(losses) == 6
    tests = re.findall(r"Iteration (\d+), Testing net: loss = [\d.e+-]+, acc = ([\d.]+)",
                       out + err)
    assert [t[0] for t in tests] == ["0", "3", "6"]
    for it in (3, 6):
        assert (setup / "snap" / f"tiny_iter_{it}.keras").exists()
        assert (setup / "snap" / f"tiny_iter_{it}.caffemodel").exists()

    # the same training by hand: same batches (no random crop in TEST; TRAIN crops are
    # seeded), so the same losses; fresh weights drawn with the same seed
    from caffe2keras import convert_for_training
    from caffe2keras.data import caffe_dataset

    batches = iter(caffe_dataset("net.prototxt", "TRAIN", seed=0))
    first = next(batches)
    model = convert_for_training("solver.prototxt", seed=0,
                                 input_shapes={"data": (4, 3, 4, 4), "label": (4,)})
    by_hand = [float(model.train_on_batch(first))]
    by_hand += [float(model.train_on_batch(next(batches))) for _ in range(5)]
    np.testing.assert_allclose(losses, by_hand, rtol=1e-5)


def test_no_iterations(setup, monkeypatch, capsys):
    monkeypatch.chdir(setup)
    assert main(["train", "solver.prototxt", "--iters", "0"]) == 1
    assert "no iterations" in capsys.readouterr().err
