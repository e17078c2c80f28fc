"""demo/finetune_lenet.py: the README's worked fine-tune (zoo LeNet, a new head, Caffe's
SGD) runs, learns, and writes a caffemodel that holds what the Keras model learned."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from caffe2keras.caffemodel import load_caffemodel

from .shared import MODELS, ROOT

pytest.importorskip("cv2")
sys.path.insert(0, str(ROOT / "demo"))
from finetune_lenet import main


def test_finetune_lenet(tmp_path):
    lenet = MODELS / "lenet_mnist_v2"
    before, after = main(lenet, tmp_path, steps=80, log=lambda *_: None)
    assert after > before + 0.2  # the new head reads the fonts the zoo LeNet misreads
    tuned = load_caffemodel(tmp_path / "lenet_fonts.caffemodel")
    zoo = load_caffemodel(lenet / "lenet_iter_10000.caffemodel")
    assert "ip2_fonts" in tuned.layers and "ip2" not in tuned.layers
    for frozen in ("conv1", "conv2"):   # lr_mult 0
        for a, b in zip(tuned.layers[frozen].blobs, zoo.layers[frozen].blobs):
            np.testing.assert_array_equal(a.array(), b.array().reshape(a.shape))
    assert not np.array_equal(tuned.layers["ip1"].blobs[0].array(),
                              zoo.layers["ip1"].blobs[0].array().reshape(
                                  tuned.layers["ip1"].blobs[0].shape))
