"""Convolution and Deconvolution converters: exact against real Caffe, and the Keras
layers they choose (fast built-ins wherever Keras computes the same thing)."""

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras.emit.converters.conv import _split_stride
from caffe2keras.writer import CaffeNetWriter

from .compute_goldens import cases, check_case
from .shared import convert_net

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("case", cases("conv_") + cases("deconv_"))
def test_against_caffe(case, tmp_path):
    check_case(case, tmp_path)



def _kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def _conv_net(shape, typ="Convolution", blobs=None, **param):
    net = CaffeNetWriter("t")
    net.input("data", shape)
    net.layer("c", typ, "data", "c", convolution_param=param, blobs=blobs or [])
    return net


def test_symmetric_pad_is_keras_same_padding(tmp_path):
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = convert_net(tmp_path, _conv_net((1, 3, 8, 8), blobs=[w, np.zeros(4, np.float32)],
                                         num_output=4, kernel_size=[3], pad=[1]))
    assert _kinds(model).count("Conv2D") == 1 and "ZeroPadding2D" not in _kinds(model)
    assert model.get_layer("c").padding == "same"


@pytest.mark.parametrize("s,d,expect", [
    ((2, 2), (2, 2), ((2, 2), (1, 1), (1, 1), (1, 1))),   # sample input, then plain conv
    ((2, 2), (4, 4), ((2, 2), (1, 1), (2, 2), (1, 1))),   # sample input, dilation 2
    ((6, 6), (4, 4), ((2, 2), (1, 1), (2, 2), (3, 3))),   # gcd 2, then still both: sample out
    ((2, 1), (1, 3), ((1, 1), (1, 1), (1, 3), (2, 1))),   # coprime: stride-1 conv, sample out
    ((2, 2), (1, 1), ((1, 1), (2, 2), (1, 1), (1, 1))),   # plain strided conv untouched
])
def test_stride_with_dilation_split(s, d, expect):
    assert _split_stride(s, d) == expect


def test_stride_with_dilation_costs_no_extra_conv_work_when_gcd_divides(tmp_path):
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = convert_net(tmp_path, _conv_net((1, 3, 13, 14), blobs=[w],
                                         num_output=4, kernel_size=[3], stride=[2],
                                         dilation=[2], pad=[2], bias_term=False))
    conv = model.get_layer("c")
    assert conv.strides == (1, 1) and conv.dilation_rate == (1, 1)
    # the conv runs on the sampled input: its output is Caffe's output, no extra rows
    assert tuple(conv.output.shape[1:3]) == (7, 7)


def test_deconv_group_one_uses_keras_conv2d_transpose(tmp_path):
    w = RNG.standard_normal((3, 2, 4, 4)).astype(np.float32)
    model = convert_net(tmp_path, _conv_net((1, 3, 5, 5), "Deconvolution",
                                         blobs=[w, np.zeros(2, np.float32)], num_output=2,
                                         kernel_size=[4], stride=[2], pad=[1]))
    assert "Conv2DTranspose" in _kinds(model) and "Cropping2D" in _kinds(model)
    assert model.get_layer("c").kernel.shape == (4, 4, 2, 3)


def test_deconv_groups_use_one_grouped_layer(tmp_path):
    w = RNG.standard_normal((6, 1, 4, 4)).astype(np.float32)
    model = convert_net(tmp_path, _conv_net((1, 6, 5, 5), "Deconvolution", blobs=[w],
                                         num_output=6, group=6, kernel_size=[4], stride=[2],
                                         pad=[1], bias_term=False))
    assert _kinds(model) == ["InputLayer", "GroupedConv2DTranspose"]
    x = RNG.standard_normal((1, 5, 5, 6)).astype(np.float32)
    y = keras.ops.convert_to_numpy(model({"data": x})["c"])
    # channel c depends on input channel c only
    x2 = x.copy()
    x2[..., 0] += 1
    y2 = keras.ops.convert_to_numpy(model({"data": x2})["c"])
    changed = np.abs(y2 - y).reshape(-1, 6).max(axis=0) > 0
    assert changed.tolist() == [True] + [False] * 5


def test_fresh_build_of_grouped_and_dilated_layers(tmp_path):
    net = CaffeNetWriter("t")
    net.input("data", (1, 4, 9, 9))
    net.layer("d", "Deconvolution", "data", "d", convolution_param={
        "num_output": 4, "group": 2, "kernel_size": [3], "stride": [2], "dilation": [2]})
    net.layer("c", "Convolution", "d", "c", convolution_param={
        "num_output": 8, "group": 4, "kernel_size": [3], "stride": [2], "dilation": [3]})
    net.write_prototxt(tmp_path / "n.prototxt")
    model = caffe2keras.convert(tmp_path / "n.prototxt", None)
    out = model({"data": np.ones((2, 9, 9, 4), np.float32)})["c"]
    assert tuple(out.shape) == (2, 8, 8, 8)  # 9 -> 21 -> (21 - 7) // 2 + 1


@pytest.mark.parametrize("typ, field", [("Convolution", "hole"),
                                        ("HoleConvolution", "hole")])
def test_deeplab_hole_is_caffes_dilation(typ, field, tmp_path):
    # real Caffe's blobs for the dilated case, with the net rewritten in DeepLab's words
    from .shared import SHARED_PRESENT, SKIP_REASON, check_layer, conformance_files
    if not SHARED_PRESENT:
        pytest.skip(SKIP_REASON)
    deploy, weights, inputs, outputs = conformance_files("conv_dilated")
    text = deploy.read_text().replace("dilation:", f"{field}:")
    text = text.replace('type: "Convolution"', f'type: "{typ}"')
    assert "hole:" in text
    (tmp_path / "hole.prototxt").write_text(text)
    model = caffe2keras.convert(tmp_path / "hole.prototxt", weights, outputs="all")
    golden = dict(np.load(outputs))
    check_layer(model, dict(np.load(inputs)), golden, blobs=["d2", "d3"])
