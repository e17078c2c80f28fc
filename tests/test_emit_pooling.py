"""Pooling converter: exact against real Caffe (padding, ceil/floor, AVE divisor, global),
plain Keras pooling where it is exact, STOCHASTIC at test time, clear refusals."""
import warnings

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras.errors import CaffeFormatError
from caffe2keras.writer import CaffeNetWriter

from .compute_goldens import cases, check_case
from .test_emit_layers import caffe_pool, nchw, nhwc

RNG = np.random.default_rng(5)


@pytest.mark.parametrize("case", cases("pool_"))
def test_against_caffe(case, tmp_path):
    check_case(case, tmp_path)


def _model(tmp_path, shape, tops=("p",), **param):
    net = CaffeNetWriter("t")
    net.input("data", shape)
    net.layer("p", "Pooling", "data", list(tops), pooling_param=param)
    net.write_prototxt(tmp_path / "n.prototxt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return caffe2keras.convert(tmp_path / "n.prototxt", None)


@pytest.mark.parametrize("param,kind", [
    ({"pool": "MAX", "kernel_size": 2, "stride": 2}, "MaxPooling2D"),           # VGG
    ({"pool": "AVE", "kernel_size": 3, "stride": 1}, "AveragePooling2D"),
    ({"pool": "MAX", "kernel_size": 3, "stride": 2}, "CaffePooling2D"),         # ceil overhang
    ({"pool": "MAX", "kernel_size": 3, "stride": 2, "ceil_mode": False}, "MaxPooling2D"),
    ({"pool": "MAX", "kernel_size": 3, "stride": 2, "pad": 1}, "CaffePooling2D"),
    ({"pool": "AVE", "global_pooling": True}, "GlobalAveragePooling2D"),
    ({"pool": "MAX", "global_pooling": True}, "GlobalMaxPooling2D"),
])
def test_fast_path_only_where_exact(tmp_path, param, kind):
    model = _model(tmp_path, (1, 2, 8, 8), **param)
    assert type(model.get_layer("p")).__name__ == kind


def test_stochastic_pooling_is_caffes_test_time_weighted_average(tmp_path):
    # Caffe runs STOCHASTIC only on GPU (its CPU path is NOT_IMPLEMENTED), so the
    # reference is its test-time kernel: sum(x*x) / (FLT_MIN + sum(x)), windows from
    # i*stride clipped to the input.
    model = _model(tmp_path, (2, 3, 9, 8), pool="STOCHASTIC", kernel_size=3, stride=2)
    x = np.abs(RNG.standard_normal((2, 3, 9, 8))).astype(np.float32)
    got = keras.ops.convert_to_numpy(model({"data": nhwc(x)})["p"])
    ref = caffe_pool(x, "stochastic", (3, 3), (2, 2), (0, 0))
    assert got.shape == nhwc(ref).shape == (2, 4, 4, 3)  # ceil: last window overhangs
    np.testing.assert_allclose(nchw(got), ref, rtol=1e-5, atol=1e-5)


def test_max_padding_never_wins_on_negative_inputs(tmp_path):
    model = _model(tmp_path, (1, 2, 5, 5), pool="MAX", kernel_size=3, stride=2, pad=1)
    x = -1 - np.abs(RNG.standard_normal((1, 2, 5, 5))).astype(np.float32)
    got = keras.ops.convert_to_numpy(model({"data": nhwc(x)})["p"])
    assert got.max() < -1
    np.testing.assert_allclose(nchw(got), caffe_pool(x, "max", (3, 3), (2, 2), (1, 1)),
                               rtol=1e-6)


def test_a_mask_top_on_ave_pooling_is_refused_clearly(tmp_path):
    # MAX pooling's mask top is checked against Caffe in test_emit_zoo.py (pool_mask)
    with pytest.raises(CaffeFormatError, match="only MAX pooling has a second"):
        _model(tmp_path, (1, 2, 6, 6), tops=("p", "mask"), pool="AVE", kernel_size=2,
               stride=2)


def test_stochastic_with_padding_is_refused(tmp_path):
    with pytest.raises(CaffeFormatError, match="STOCHASTIC"):
        _model(tmp_path, (1, 2, 6, 6), pool="STOCHASTIC", kernel_size=3, stride=2, pad=1)
