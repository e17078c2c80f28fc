"""Reading .caffemodel weights: V2/V1/V0 entries, blob shapes, matching to the net, and
malformed files."""
import os
import re
import warnings

import numpy as np
import pytest

from caffe2keras.caffemodel import load_caffemodel
from caffe2keras.errors import CaffeFormatError, CaffeWarning
from caffe2keras.graph import load_graph
from caffe2keras.writer import CaffeNetWriter, Hole, varint

from .shared import CONFORMANCE, MODELS, model_files


def _mapped(cm):
    return np.frombuffer(cm.buffer, np.uint8)


def test_v2_file_from_caffe():
    cm = load_caffemodel(MODELS / "lenet_mnist_v2" / "lenet_iter_10000.caffemodel")
    assert cm.format == "V2" and cm.name == "LeNet"
    assert list(cm.layers) == ["conv1", "conv2", "ip1", "ip2"]  # weightless layers left out
    assert {x.name for x in cm.all_layers} >= {"mnist", "pool1", "relu1", "loss"}
    conv1 = cm.layers["conv1"]
    assert conv1.type == "Convolution"
    assert [b.shape for b in conv1.blobs] == [(20, 1, 5, 5), (20,)]
    assert not conv1.blobs[0].legacy and conv1.blobs[0].data.dtype == np.float32
    # blob data are views on the mapped file: nothing copied
    assert all(np.shares_memory(b.data, _mapped(cm)) for lw in cm.layers.values()
               for b in lw.blobs)
    assert conv1.blobs[0].array().shape == (20, 1, 5, 5)


def test_v1_file_with_legacy_dims():
    cm = load_caffemodel(MODELS / "lenet_mnist_v1" / "lenet_iter_10000.caffemodel")
    assert cm.format == "V1"
    conv1 = cm.layers["conv1"]
    assert conv1.type == "Convolution"  # enum CONVOLUTION, as its V2 name
    assert [b.shape for b in conv1.blobs] == [(20, 1, 5, 5), (1, 1, 1, 20)]
    assert all(b.legacy for b in conv1.blobs)
    # the graph gives each blob its real shape
    g = load_graph(MODELS / "lenet_mnist_v1" / "lenet.prototxt",
                   MODELS / "lenet_mnist_v1" / "lenet_iter_10000.caffemodel")
    by = {n.name: n.layer for n in g.nodes}
    assert [b.shape for b in by["ip1"].blobs] == [(500, 800), (500,)]


def test_scalar_blob_without_shape_is_0d_as_caffe_writes_it():
    """Caffe writes a 0-D blob (channel-shared PReLU slope) with no shape at all."""
    cm = load_caffemodel(CONFORMANCE / "activations" / "weights.caffemodel")
    b = cm.layers["prelu_s"].blobs[0]
    assert b.shape == () and b.array().shape == () and not b.legacy


def _tiny(blobs=None):
    w = CaffeNetWriter("tiny").input("data", (1, 2, 3, 3))
    w.layer("conv", "Convolution", "data", "conv",
            convolution_param={"num_output": 2, "kernel_size": 1},
            blobs=blobs if blobs is not None else
            [np.arange(4, dtype=np.float32).reshape(2, 2, 1, 1), np.array([5, 6], np.float32)])
    w.layer("relu", "ReLU", "conv", "conv")
    w.layer("ip", "InnerProduct", "conv", "ip", inner_product_param={"num_output": 3},
            blobs=[np.ones((3, 18), np.float32), np.zeros(3, np.float32)])
    return w


@pytest.mark.parametrize("fmt,kw,legacy,dtype", [
    ("V2", {}, False, np.float32),
    ("V2", {"legacy_dims": True}, True, np.float32),
    ("V2", {"double": True}, False, np.float64),
    ("V1", {}, True, np.float32),
    ("V1", {"legacy_dims": False}, False, np.float32),
    ("V1", {"double": True}, True, np.float64),
    ("V0", {}, True, np.float32),
])
def test_every_entry_and_blob_form(tmp_path, fmt, kw, legacy, dtype):
    w = _tiny()
    w.write_caffemodel(tmp_path / "w.caffemodel", fmt, **kw)
    w.write_prototxt(tmp_path / "d.prototxt", "V1" if fmt == "V0" else fmt)
    cm = load_caffemodel(tmp_path / "w.caffemodel")
    assert cm.format == ("V2" if fmt == "V2" else "V1")
    assert list(cm.layers) == ["conv", "ip"]
    assert cm.layers["conv"].type == ("conv" if fmt == "V0" else "Convolution")
    b = cm.layers["conv"].blobs
    assert [x.legacy for x in b] == [legacy, legacy]
    assert b[0].shape == (2, 2, 1, 1)
    assert b[1].shape == ((1, 1, 1, 2) if legacy else (2,))
    assert b[0].data.dtype == dtype
    g = load_graph(tmp_path / "d.prototxt", tmp_path / "w.caffemodel")
    conv = g.nodes[0].layer
    assert conv.blobs[1].shape == (2,) and list(conv.blobs[1]) == [5, 6]
    assert np.array_equal(conv.blobs[0].reshape(-1), np.arange(4))


def test_double_data_wins_over_data_as_in_caffe(tmp_path):
    from caffe2keras.writer import _binary, _write_part

    blob = {"shape": {"dim": [2]}, "data": [1.0, 2.0], "double_data": [3.0, 4.0]}
    net = {"layer": [("LayerParameter", {"name": "s", "type": "Scale", "blobs": [blob]})]}
    parts, _ = _binary("NetParameter", net)
    with open(tmp_path / "w.caffemodel", "wb") as f:
        for p in parts:
            _write_part(f, p)
    b = load_caffemodel(tmp_path / "w.caffemodel").layers["s"].blobs[0]
    assert b.data.dtype == np.float64 and list(b.data) == [3.0, 4.0]


def test_weights_are_matched_by_name_not_order(tmp_path):
    w = _tiny()
    w.layers.reverse()  # the weights file lists ip first
    w.write_caffemodel(tmp_path / "w.caffemodel")
    _tiny().write_prototxt(tmp_path / "d.prototxt")
    g = load_graph(tmp_path / "d.prototxt", tmp_path / "w.caffemodel")
    assert [b.shape for b in g.nodes[0].layer.blobs] == [(2, 2, 1, 1), (2,)]
    assert [b.shape for b in g.nodes[2].layer.blobs] == [(3, 18), (3,)]


def test_a_layer_stored_twice_warns_and_the_last_copy_wins(tmp_path):
    w = _tiny()
    w.layer("conv", "Convolution", "x", "y", convolution_param={"num_output": 2},
            blobs=[np.full((2, 2, 1, 1), 9, np.float32), np.zeros(2, np.float32)])
    w.write_caffemodel(tmp_path / "w.caffemodel")
    with pytest.warns(CaffeWarning, match="layer 'conv' appears twice in the weights"):
        cm = load_caffemodel(tmp_path / "w.caffemodel")
    assert cm.layers["conv"].blobs[0].data[0] == 9


def test_extra_layer_in_weights_warns_by_name():
    deploy, weights, _, _ = model_files("mtcnn_det2")
    with pytest.warns(CaffeWarning, match=r"det2\.caffemodel: weights for 1 layer\(s\) not in "
                                          r"the prototxt are ignored: conv5-3"):
        g = load_graph(deploy, weights)
    assert g.extra_weights == ["conv5-3"]


def test_training_layers_in_weights_are_ignored_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaffeWarning)
        g = load_graph(MODELS / "lenet_mnist_v2" / "lenet.prototxt",
                       MODELS / "lenet_mnist_v2" / "lenet_iter_10000.caffemodel")
    assert not g.extra_weights  # the file's data and loss layers hold no blobs


def test_missing_weights_name_the_layer_and_the_expected_shapes(tmp_path):
    w = _tiny()
    w.write_prototxt(tmp_path / "d.prototxt")
    w.layers = [x for x in w.layers if x[0] != "ip"]
    w.write_caffemodel(tmp_path / "w.caffemodel")
    with pytest.raises(CaffeFormatError) as e:
        load_graph(tmp_path / "d.prototxt", tmp_path / "w.caffemodel")
    msg = str(e.value)
    assert f"{tmp_path / 'd.prototxt'}:" in msg and "layer 'ip'" in msg
    assert "InnerProduct layer has no weights in" in msg
    assert "expected 2 blobs: [[3, 18], [3]]" in msg


@pytest.mark.parametrize("blobs,expected", [
    ([np.zeros((2, 2, 3, 3), np.float32), np.zeros(2, np.float32)],
     "weight blob 0 has shape [2, 2, 3, 3] in {w}, but the prototxt implies [2, 2, 1, 1]"),
    ([np.zeros((2, 2, 1, 1), np.float32)],
     ("expected 2 weight blobs [[2, 2, 1, 1], [2]] for this Convolution, found 1 "
     "[[2, 2, 1, 1]] in {w}")),
    ([np.zeros((2, 2, 1, 1), np.float32), np.zeros(3, np.float32)],
     "weight blob 1 has shape [3] in {w}, but the prototxt implies [2]"),
])
def test_wrong_blob_count_or_shape_names_layer_and_both_shapes(tmp_path, blobs, expected):
    _tiny().write_prototxt(tmp_path / "d.prototxt")
    _tiny(blobs).write_caffemodel(tmp_path / "w.caffemodel")
    with pytest.raises(CaffeFormatError) as e:
        load_graph(tmp_path / "d.prototxt", tmp_path / "w.caffemodel")
    assert "layer 'conv'" in str(e.value)
    assert expected.format(w=tmp_path / "w.caffemodel") in str(e.value)


def test_files_over_4_gib_decode_with_correct_offsets(tmp_path):
    """A 4.3 GB caffemodel, sparse (a hole where the big blob's zeros are), so it costs
    no disk and no memory: the layer after the big blob starts past 2**32."""
    n = (1 << 30) + 7
    w = CaffeNetWriter("huge").input("data", (1, n))
    w.layer("big", "InnerProduct", "data", "ip",
            inner_product_param={"num_output": 1, "bias_term": False}, blobs=[Hole((1, n))])
    w.layer("tail", "Scale", "ip", "out", scale_param={"bias_term": True},
            blobs=[np.array([2.5], np.float32), np.array([-1.0], np.float32)])
    w.write_prototxt(tmp_path / "huge.prototxt")
    path = tmp_path / "huge.caffemodel"
    try:
        w.write_caffemodel(path)
        st = os.stat(path)
        assert st.st_size > 1 << 32 and st.st_blocks * 512 < 1 << 20  # sparse
        cm = load_caffemodel(path)
        big, tail = cm.layers["big"].blobs[0], cm.layers["tail"]
        assert big.shape == (1, n) and big.data.size == n
        assert int(tail.position.split()[1]) > 1 << 32
        assert int(tail.blobs[1].position.split()[1]) > 1 << 32
        assert [float(b.data[0]) for b in tail.blobs] == [2.5, -1.0]
        assert float(big.data[-1]) == 0.0  # the far end of the hole reads back
        g = load_graph(tmp_path / "huge.prototxt", path)
        assert g.nodes[0].layer.blobs[0].shape == (1, n)
        # a truncation past 4 GiB is reported at its real offset
        del cm, g, big, tail
        os.truncate(path, st.st_size - 3)
        with pytest.raises(CaffeFormatError, match=r"byte 4294967\d\d\d"):
            load_caffemodel(path)
    finally:
        path.unlink(missing_ok=True)


def _raw_net(*layers):
    return b"".join(varint(100 << 3 | 2) + varint(len(x)) + x for x in layers)


def _ld(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _blob(shape=None, data=(), legacy=None):
    b = b""
    if legacy is not None:
        b += b"".join(varint(i + 1 << 3) + varint(d) for i, d in enumerate(legacy))
    if shape is not None:
        b += _ld(7, _ld(1, b"".join(varint(d) for d in shape)))
    b += _ld(5, np.asarray(data, "<f4").tobytes())
    return b


@pytest.mark.parametrize("blob,message", [
    (_blob((2, 3), range(5)),
     ("blob 0 of layer 'L' declares shape [2, 3] (6 values) but holds 5 values (file "
     "truncated or corrupted)")),
    (_blob((2, -3), range(6)), "blob 0 of layer 'L' has negative dimensions [2, -3]"),
    (_blob((10**6, 10**6), [1.0]), ("declares shape [1000000, 1000000]: 1000000000000 values, "
                                   "more than Caffe's limit of 2147483647 per blob")),
    (_blob((1,) * 33, [1.0]), "blob 0 of layer 'L' has 33 axes; Caffe allows at most 32"),
    (_blob(None, [1.0, 2.0]), ("has no shape (no 'shape', no num/channels/height/width), "
                              "which Caffe reads as a scalar, but holds 2 values")),
    (_blob(None, range(5), legacy=(1, 1, 2, 3)), "declares shape [1, 1, 2, 3] (6 values)"),
])
def test_malformed_blobs(tmp_path, blob, message):
    path = tmp_path / "w.caffemodel"
    path.write_bytes(_raw_net(_ld(1, b"L") + _ld(7, blob)))
    with pytest.raises(CaffeFormatError) as e:
        load_caffemodel(path)
    assert str(e.value).startswith(f"{path}:byte ")
    assert "layer 'L'" in str(e.value) and message in str(e.value)


def test_truncated_real_files_fail_with_byte_offsets(tmp_path):
    data = (MODELS / "mtcnn" / "det1.caffemodel").read_bytes()
    for cut in (1, 2, 7, 100, 1000, len(data) // 2, len(data) - 1):
        path = tmp_path / "cut.caffemodel"
        path.write_bytes(data[:cut])
        with pytest.raises(CaffeFormatError) as e:
            load_caffemodel(path)
        msg = str(e.value)
        assert "\n" not in msg
        if cut == 7:  # cut right after the net's name: a valid, empty message
            assert msg == f"{path}: holds no layers: not a Caffe weights file (or an empty " \
                          f"net); expected a .caffemodel (a binary NetParameter with layer " \
                          f"entries)"
            continue
        assert msg.startswith(f"{path}:byte "), msg
        assert "truncated" in msg or "past the end" in msg, msg


@pytest.mark.parametrize("content,message", [
    (b"", "file is empty, expected a binary caffemodel"),
    (b'name: "x"\nlayer { name: "a" }\n', ("this is a text file (a .prototxt?), expected a "
                                          "binary caffemodel")),
    (b"# a comment first\ninput: 'x'", "this is a text file"),
    (_raw_net(_ld(1, b"a")) + _ld(2, _ld(4, b"v1")),
     "holds both V2 'layer' and deprecated V1 'layers'"),
    (varint(1 << 3) + varint(1), "holds no layers: not a Caffe weights file"),
])
def test_not_a_caffemodel(tmp_path, content, message):
    path = tmp_path / "w.caffemodel"
    path.write_bytes(content)
    with pytest.raises(CaffeFormatError, match=re.escape(message)):
        load_caffemodel(path)


def test_a_mean_file_given_as_weights_is_named():
    with pytest.raises(CaffeFormatError, match=r"holds no layers: not a Caffe weights file "
                                               r"\(it holds a single blob: a mean "
                                               r"\.binaryproto\?\)"):
        load_caffemodel(MODELS / "imagenet_reference_data" / "ilsvrc_2012_mean.binaryproto")


def test_a_directory_is_not_a_caffemodel(tmp_path):
    with pytest.raises(CaffeFormatError, match="is a directory, expected a file"):
        load_caffemodel(tmp_path)
