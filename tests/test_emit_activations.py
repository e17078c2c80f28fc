"""Activation converters (Caffe's neuron layers, PReLU, Dropout) against real Caffe."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from caffe2keras import layout
from caffe2keras.errors import CaffeFormatError
from caffe2keras.net import parse_net
from caffe2keras.writer import CaffeNetWriter

from .test_emit_tensor import check_golden, golden_cases


@pytest.mark.parametrize("name", golden_cases("act_"))
def test_matches_caffe(name, tmp_path):
    check_golden(name, tmp_path)


def _build(text, **kwargs):
    from caffe2keras.emit.builder import build_model
    from caffe2keras.graph import build_graph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(build_graph(parse_net(text, "t.prototxt")), **kwargs)


def _np(x):
    import keras

    return keras.ops.convert_to_numpy(x)


def test_prelu_alphas_follow_the_channel_axis_in_every_rank(tmp_path):
    import caffe2keras

    rng = np.random.default_rng(0)
    net = CaffeNetWriter("prelu")
    shapes = {"x4": (2, 3, 4, 5), "x2": (2, 6), "x3": (2, 4, 7)}
    alphas = {}
    for blob, shape in shapes.items():
        net.input(blob, shape)
        alphas[blob] = rng.uniform(-1, 1, shape[1]).astype("float32")
        net.layer(f"p_{blob}", "PReLU", blob, f"p_{blob}", blobs=[alphas[blob]])
    net.layer("shared", "PReLU", "x4", "shared", prelu_param={"channel_shared": True},
              blobs=[np.array(0.3, "float32")])
    net.write_prototxt(tmp_path / "d.prototxt")
    net.write_caffemodel(tmp_path / "w.caffemodel")
    model = caffe2keras.convert(tmp_path / "d.prototxt", tmp_path / "w.caffemodel",
                                outputs="all")
    feed = {b: rng.standard_normal(s).astype("float32") * 2 for b, s in shapes.items()}
    got = model({b: layout.to_keras(x) for b, x in feed.items()})
    for blob, x in feed.items():
        a = alphas[blob].reshape((1, -1) + (1,) * (x.ndim - 2))
        ref = np.maximum(x, 0) + a * np.minimum(x, 0)
        out = _np(got[f"p_{blob}"])
        out = layout.to_caffe(out)
        np.testing.assert_allclose(out, ref, rtol=1e-6)
    x = feed["x4"]
    np.testing.assert_allclose(layout.to_caffe(_np(got["shared"])),
                               np.maximum(x, 0) + 0.3 * np.minimum(x, 0), rtol=1e-6)
    assert tuple(model.get_layer("p_x4").weights[0].shape) == (1, 1, 3)
    assert tuple(model.get_layer("shared").weights[0].shape) == (1, 1, 1)
    assert tuple(model.get_layer("p_x2").weights[0].shape) == (6,)


def test_fresh_prelu_starts_as_caffe_fills_it():
    model = _build('''
        input: "x" input_shape { dim: 1 dim: 3 dim: 2 dim: 2 }
        layer { name: "a" type: "PReLU" bottom: "x" top: "a" }
        layer { name: "b" type: "PReLU" bottom: "x" top: "b"
                prelu_param { filler { type: "constant" value: 0.1 } } }
    ''', with_weights=False, fill_fresh=True)
    np.testing.assert_allclose(_np(model.get_layer("a").weights[0]), 0.25)
    np.testing.assert_allclose(_np(model.get_layer("b").weights[0]), 0.1)


def test_dropout_is_identity_at_inference_and_drops_in_training():
    model = _build('''
        input: "x" input_shape { dim: 1 dim: 20000 }
        layer { name: "d" type: "Dropout" bottom: "x" top: "d"
                dropout_param { dropout_ratio: 0.25 } }
    ''')
    x = np.ones((1, 20000), "float32")
    np.testing.assert_array_equal(_np(model({"x": x})["d"]), x)
    y = _np(model({"x": x}, training=True)["d"])
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)


def test_dropout_without_scale_train_scales_at_inference():
    model = _build('''
        input: "x" input_shape { dim: 1 dim: 20000 }
        layer { name: "d" type: "Dropout" bottom: "x" top: "d"
                dropout_param { dropout_ratio: 0.25 scale_train: false } }
    ''')
    x = np.ones((1, 20000), "float32")
    np.testing.assert_allclose(_np(model({"x": x})["d"]), 0.75, rtol=1e-6)
    y = _np(model({"x": x}, training=True)["d"])
    assert 0.7 < (y != 0).mean() < 0.8
    np.testing.assert_allclose(y[y != 0], 1.0, rtol=1e-6)


def test_clip_and_swish():
    """Caffe master's Clip and Swish (the fork Caffe here has neither)."""
    model = _build('''
        input: "x" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
        layer { name: "c" type: "Clip" bottom: "x" top: "c" clip_param { min: -0.5 max: 1.5 } }
        layer { name: "s" type: "Swish" bottom: "x" top: "s" swish_param { beta: 1.7 } }
        layer { name: "s1" type: "Swish" bottom: "x" top: "s1" }
    ''')
    x = np.random.default_rng(3).standard_normal((2, 4, 5, 3)).astype("float32") * 3
    got = model({"x": x})
    np.testing.assert_allclose(_np(got["c"]), np.clip(x, -0.5, 1.5))
    np.testing.assert_allclose(_np(got["s"]), x / (1 + np.exp(-1.7 * x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(got["s1"]), x / (1 + np.exp(-x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer,message", [
    ('type: "Exp" exp_param { base: 0 }', "base must be positive"),
    ('type: "Log" log_param { base: 1 }', "not 1"),
    ('type: "Clip" clip_param { min: 0 }', "min and max"),
    ('type: "Clip" clip_param { min: 2 max: 1 }', "exceeds max"),
    ('type: "Dropout" dropout_param { dropout_ratio: 1 }', "dropout_ratio"),
])
def test_bad_parameters_name_the_layer(layer, message):
    with pytest.raises(CaffeFormatError, match=message) as e:
        _build(f'''
            input: "x" input_shape {{ dim: 1 dim: 2 }}
            layer {{ name: "odd" {layer} bottom: "x" top: "y" }}
        ''')
    assert "odd" in str(e.value) and "t.prototxt" in str(e.value)
