"""Layers that share a name: Caffe accepts them, and so do we, with the weights where
Caffe puts them (every caffemodel entry of a name goes into the FIRST layer of that name,
net.cpp CopyTrainedLayersFrom). Golden: tests/data/make_duplicate_names_golden.py, run
through real Caffe."""
import os
import warnings

import numpy as np
import pytest

import caffe2keras
from caffe2keras.errors import CaffeFormatError, CaffeWarning
from caffe2keras.inspect import describe, format_table
from caffe2keras.writer import CaffeNetWriter

from .shared import assert_blob_close, to_caffe_layout, to_keras_layout

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "duplicate_names_golden.npz")


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN)


@pytest.fixture
def files(tmp_path, golden):
    proto, weights = tmp_path / "dup.prototxt", tmp_path / "dup.caffemodel"
    proto.write_text(str(golden["prototxt"]))
    weights.write_bytes(golden["caffemodel"].tobytes())
    return str(proto), str(weights)


def test_weights_go_to_the_first_layer_of_a_name_as_in_caffe(files, golden):
    with pytest.warns(CaffeWarning, match="'conv' .2nd of that name. gets no weights"):
        g = caffe2keras.load_graph(*files)
    first, second = [n for n in g.nodes if n.name == "conv"]
    # Caffe copied both saved entries (A, then B) into the first 'conv': it holds B
    np.testing.assert_array_equal(first.layer.blobs[0], golden["B"])
    np.testing.assert_array_equal(golden["first_conv_w"], golden["B"])
    # the second keeps its (constant) fillers, as in Caffe
    np.testing.assert_array_equal(second.layer.blobs[0], golden["second_conv_w"])
    notes = dict(g.notes)
    assert "go to the first of them only" in notes["crop"]
    assert "2nd layer named 'conv'" in " ".join(t for n, t in g.notes if n == "conv")


def test_converted_model_matches_caffe_blob_by_blob(files, golden):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeWarning)
        model = caffe2keras.convert(*files, outputs="all")
    names = {lay.name for lay in model.layers}
    assert {"conv", "conv_1", "crop", "crop_1"} <= names
    got = model({"data": to_keras_layout(golden["in/data"])})
    for blob in ("c1", "c2", "p", "k1", "k2", "out"):
        assert_blob_close(to_caffe_layout(got[blob]), golden[f"out/{blob}"], blob)


def test_inspect_says_where_the_weights_go(files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeWarning)
        text = format_table(describe(caffe2keras.load_graph(*files)))
    assert "Note: crop: 2 layers share this name" in text
    assert "Note: conv: the 2nd layer named 'conv' (Convolution) gets no weights" in text


def _net():
    net = CaffeNetWriter("n").input("data", (1, 2, 5, 5))
    net.layer("conv", "Convolution", "data", "a", convolution_param={
        "num_output": 2, "kernel_size": 1})
    net.layer("conv", "ReLU", "a", "b")
    net.layer("conv_1", "ReLU", "b", "c")
    net.layer("conv", "ReLU", "c", "d")
    return net


def test_keras_names_are_unique_and_a_real_name_keeps_its_own(tmp_path):
    net = _net()
    proto = tmp_path / "n.prototxt"
    proto.write_text(net.prototxt())
    # every blob asked for: the ReLU after the conv stays a layer (else it is the conv's
    # activation, tests/test_emit_plan.py) and keeps its name in the count
    model = caffe2keras.convert(str(proto), seed=0, outputs="all")
    # the first of each name keeps it, then NAME_1, NAME_2... skipping names in use
    assert [lay.name for lay in model.layers[1:]] == ["conv", "conv_2", "conv_1", "conv_3"]


def test_a_blobless_entry_caffe_would_copy_into_a_layer_with_blobs_is_refused(tmp_path):
    net = _net()
    w = np.ones((2, 2, 1, 1), np.float32)
    net.layers[0] = net.layers[0][:3] + ([w, np.zeros(2, np.float32)],)
    proto, weights = tmp_path / "n.prototxt", tmp_path / "n.caffemodel"
    proto.write_text(net.prototxt())
    net.write_caffemodel(str(weights))
    with pytest.raises(CaffeFormatError, match="Incompatible number of blobs"):
        caffe2keras.load_graph(str(proto), str(weights))


def test_weight_exports_keep_layers_that_share_a_name_apart(files, golden, tmp_path):
    import h5py

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeWarning)
        for out, kw in (("w.npz", {}), ("k.npz", {"layout": "keras"}), ("w.h5", {}),
                        ("w.weights.h5", {})):
            caffe2keras.export_weights(*files, str(tmp_path / out), **kw)
        model = caffe2keras.convert(*files)
    caffe_npz = np.load(tmp_path / "w.npz")
    assert sorted(caffe_npz.files) == ["conv/0", "conv/1", "conv_1/0", "conv_1/1"]
    np.testing.assert_array_equal(caffe_npz["conv/0"], golden["B"])
    np.testing.assert_array_equal(caffe_npz["conv_1/0"], golden["second_conv_w"])
    assert sorted(np.load(tmp_path / "k.npz").files) == sorted(caffe_npz.files)
    with h5py.File(tmp_path / "w.h5") as f:
        assert {"conv", "conv_1"} <= set(f)
    model.load_weights(tmp_path / "w.weights.h5")
