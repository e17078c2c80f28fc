"""The fork `BN` layer (SegNet and PSPNet families) and SENet's Axpy (emit/converters/zoo_bn.py).
The Caffe build behind the goldens has neither, so each is checked against a numpy
reference written from its fork's Forward_cpu:

- SegNet: alexgkendall/caffe-segnet, src/caffe/layers/bn_layer.cpp,
  commit 03d1e9f162b43f81db301cb9bc2ad47126bad8ee
- PSPNet: hszhao/PSPNet, src/caffe/layers/bn_layer.cpp,
  commit c479f4fe941ea207cbd3ec7b6ab0de72d493e4ca (slope/bias/momentum/eps/frozen), and
  the variant stored at commit 88d0b3ee808271030497ea53a53e08176eb0101f (var_eps,
  moving_average, decay)
- Axpy: hujie-frank/SENet, src/caffe/layers/axpy_layer.cpp,
  commit 577864e84f0a9a640b24a78fd609ff3c90eb46b9
"""
import warnings

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras.errors import CaffeFormatError
from caffe2keras.graph import load_graph
from caffe2keras.writer import CaffeNetWriter, write_net

from .shared import (
    assert_blob_close,
    quiet_convert,
    run_caffe_layout,
    to_caffe_layout,
    to_keras_layout,
)

RNG = np.random.default_rng(5)
F32 = np.float32


def _run(model, feed, **kw):
    """run_caffe_layout, with call keywords (training=True)."""
    if not kw:
        return run_caffe_layout(model, feed)
    out = model({k: to_keras_layout(v) for k, v in feed.items()}, **kw)
    return {k: to_caffe_layout(v) for k, v in out.items()}


def _channel(v, rank):
    """A per-channel vector broadcast against an (N, C, ...) blob."""
    return np.asarray(v, np.float64).reshape((1, -1) + (1,) * (rank - 2))


# ---- numpy references, in float64, following each Forward_cpu

def segnet_bn(x, scale, shift, mode):
    """SegNet: INFERENCE y = scale*x + shift; LEARN normalizes by the batch mean and
    E(X^2) - (EX)^2 (spatial means, then over the batch), var_eps 1e-9."""
    x = np.asarray(x, np.float64)
    r = x.ndim
    if mode == "INFERENCE":
        return _channel(scale, r) * x + _channel(shift, r)
    axes = tuple(a for a in range(r) if a != 1)
    mean = x.mean(axis=axes, keepdims=True)
    var = (x * x).mean(axis=axes, keepdims=True) - mean * mean
    return (x - mean) / np.sqrt(var + 1e-9) * _channel(scale, r) + _channel(shift, r)


def pspnet_bn(x, slope, bias, mean, var, eps):
    """PSPNet at TEST (or frozen): the stored mean and variance, x_hat * slope + bias."""
    x = np.asarray(x, np.float64)
    r = x.ndim
    inv_std = (_channel(var, r) + eps) ** -0.5
    return (x - _channel(mean, r)) * inv_std * _channel(slope, r) + _channel(bias, r)


def variant_bn_batch(x, scale, shift, var_eps):
    """The variant without moving_average: batch mean, then the mean of (x - mean)^2."""
    x = np.asarray(x, np.float64)
    r = x.ndim
    axes = tuple(a for a in range(r) if a != 1)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + var_eps) * _channel(scale, r) + _channel(shift, r)


def axpy(a, x, y):
    a = np.asarray(a, np.float64).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
    return a * x + y


def _bn_net(tmp_path, shape, bn_param, blobs, name="bn"):
    w = CaffeNetWriter("t").input("data", shape)
    w.layer("bn", "BN", "data", "bn", blobs=blobs, bn_param=bn_param)
    deploy, weights = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    write_net(deploy, weights, w)
    return deploy, weights


def _vectors(c, n):
    out = [RNG.standard_normal((1, c, 1, 1)).astype(F32) for _ in range(n)]
    if n == 4:
        out[3] = RNG.uniform(0.2, 2.0, (1, c, 1, 1)).astype(F32)
    return out


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (4, 6), (2, 3, 7)])
@pytest.mark.parametrize("mode", ["INFERENCE", "LEARN"])
def test_segnet_bn_matches_reference(tmp_path, shape, mode):
    scale, shift = _vectors(shape[1], 2)
    param = {"bn_mode": mode, "scale_filler": {"type": "constant", "value": 1}}
    deploy, weights = _bn_net(tmp_path, shape, param, [scale, shift])
    x = (RNG.standard_normal(shape) * 3 + 1).astype(F32)
    model = quiet_convert(deploy, weights)
    got = _run(model, {"data": x})["bn"]
    assert_blob_close(got, segnet_bn(x, scale, shift, mode), mode)
    # LEARN normalizes by the batch's statistics at inference too, as Caffe does
    if mode == "LEARN":
        half = _run(model, {"data": x[:1]})["bn"]
        assert_blob_close(half, segnet_bn(x[:1], scale, shift, mode), "one item")


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (3, 5)])
@pytest.mark.parametrize("frozen", [False, True])
def test_pspnet_bn_is_keras_batch_normalization(tmp_path, shape, frozen):
    slope, bias, mean, var = _vectors(shape[1], 4)
    param = {"slope_filler": {"type": "constant", "value": 1}, "momentum": 0.95,
             "eps": 1e-4, "frozen": frozen}
    deploy, weights = _bn_net(tmp_path, shape, param, [slope, bias, mean, var])
    x = (RNG.standard_normal(shape) * 2).astype(F32)
    model = quiet_convert(deploy, weights)
    assert_blob_close(_run(model, {"data": x})["bn"],
                      pspnet_bn(x, slope, bias, mean, var, 1e-4), "test phase")
    layer = model.get_layer("bn")
    assert isinstance(layer, keras.layers.BatchNormalization)
    assert layer.momentum == pytest.approx(0.95) and layer.epsilon == pytest.approx(1e-4)
    assert layer.trainable is not frozen
    # training: batch statistics unless frozen (Caffe's frozen keeps the stored ones)
    trained = _run(model, {"data": x}, training=True)["bn"]
    if frozen:
        assert_blob_close(trained, pspnet_bn(x, slope, bias, mean, var, 1e-4), "frozen")
    else:
        axes = tuple(a for a in range(x.ndim) if a != 1)
        bm, bv = x.astype(np.float64).mean(axes), x.astype(np.float64).var(axes)
        assert_blob_close(trained, pspnet_bn(x, slope, bias, bm, bv, 1e-4), "training")


@pytest.mark.parametrize("moving_average", [True, False])
def test_pspnet_variant_bn(tmp_path, moving_average):
    shape = (2, 4, 3, 3)
    scale, shift, mean, var = _vectors(4, 4)
    param = {"var_eps": 1e-6, "moving_average": moving_average, "decay": 0.1}
    deploy, weights = _bn_net(tmp_path, shape, param, [scale, shift, mean, var])
    x = RNG.standard_normal(shape).astype(F32)
    model = quiet_convert(deploy, weights)
    got = _run(model, {"data": x})["bn"]
    if moving_average:
        assert_blob_close(got, pspnet_bn(x, scale, shift, mean, var, 1e-6), "stored")
        assert model.get_layer("bn").momentum == pytest.approx(0.9)
    else:
        assert_blob_close(got, variant_bn_batch(x, scale, shift, 1e-6), "batch")


def test_bn_families_by_param_and_blob_count(tmp_path):
    shape = (1, 3, 2, 2)
    # PSPNet's params with SegNet's two blobs: the blob count must agree
    deploy, weights = _bn_net(tmp_path, shape, {"frozen": True}, _vectors(3, 2))
    with pytest.raises(CaffeFormatError, match="expected 4 weight blobs"):
        quiet_convert(deploy, weights)
    deploy, _ = _bn_net(tmp_path, shape, {"bn_mode": "LEARN", "eps": 1e-3}, [], "mixed")
    with pytest.raises(CaffeFormatError, match="mixes SegNet's bn_mode"):
        load_graph(deploy)
    g = load_graph(_bn_net(tmp_path, shape, {}, [], "plain")[0])
    assert g.nodes[-1].param_shapes == [(1, 3, 1, 1)] * 2      # SegNet's, LEARN mode


def test_bn_fresh_weights_follow_the_fillers(tmp_path):
    w = CaffeNetWriter("t").input("data", (2, 3, 4, 4))
    w.layer("seg", "BN", "data", "seg", bn_param={
        "bn_mode": "INFERENCE", "scale_filler": {"type": "constant", "value": 2},
        "shift_filler": {"type": "constant", "value": 0.5}})
    w.layer("psp", "BN", "data", "psp", bn_param={
        "slope_filler": {"type": "constant", "value": 3}, "frozen": True})
    deploy = tmp_path / "fresh.prototxt"
    w.write_prototxt(deploy)
    model = quiet_convert(deploy, seed=1)
    x = RNG.standard_normal((2, 3, 4, 4)).astype(F32)
    got = _run(model, {"data": x})
    assert_blob_close(got["seg"], 2 * x + 0.5, "seg")
    assert_blob_close(got["psp"], 3 * x / np.sqrt(1 + 1e-5), "psp")


@pytest.mark.parametrize("a_shape,x_shape", [((2, 3, 1, 1), (2, 3, 4, 5)),
                                             ((2, 3), (2, 3, 4, 5)),
                                             ((3, 4, 1, 1), (3, 4, 6))])
def test_axpy_matches_senet_reference(tmp_path, a_shape, x_shape):
    w = CaffeNetWriter("t").input("a", a_shape).input("x", x_shape).input("y", x_shape)
    w.layer("axpy", "Axpy", ["a", "x", "y"], "out")
    deploy = tmp_path / "axpy.prototxt"
    w.write_prototxt(deploy)
    feed = {"a": RNG.standard_normal(a_shape).astype(F32),
            "x": RNG.standard_normal(x_shape).astype(F32),
            "y": RNG.standard_normal(x_shape).astype(F32)}
    got = _run(quiet_convert(deploy), feed)["out"]
    assert_blob_close(got, axpy(feed["a"], feed["x"], feed["y"]), "axpy")


def test_axpy_refuses_a_that_is_not_one_factor_per_channel(tmp_path):
    w = CaffeNetWriter("t").input("a", (2, 3, 2, 1)).input("x", (2, 3, 4, 4))
    w.layer("axpy", "Axpy", ["a", "x", "x"], "out")
    deploy = tmp_path / "bad.prototxt"
    w.write_prototxt(deploy)
    with pytest.raises(CaffeFormatError, match=r"a must be \(N, C, 1, 1\)"):
        load_graph(deploy)


def test_bn_and_axpy_save_and_load(tmp_path):
    w = CaffeNetWriter("t").input("data", (2, 3, 4, 4)).input("a", (2, 3, 1, 1))
    w.layer("seg", "BN", "data", "seg", blobs=_vectors(3, 2), bn_param={"bn_mode": "LEARN"})
    w.layer("inf", "BN", "data", "inf", blobs=_vectors(3, 2),
            bn_param={"bn_mode": "INFERENCE"})
    w.layer("psp", "BN", "data", "psp", blobs=_vectors(3, 4), bn_param={"frozen": True})
    w.layer("axpy", "Axpy", ["a", "seg", "psp"], "out")
    deploy, weights = tmp_path / "n.prototxt", tmp_path / "n.caffemodel"
    write_net(deploy, weights, w)
    model = quiet_convert(deploy, weights, outputs="all")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    feed = {"data": RNG.standard_normal((2, 3, 4, 4)).astype(F32),
            "a": RNG.standard_normal((2, 3, 1, 1)).astype(F32)}
    a, b = _run(model, feed), _run(loaded, feed)
    for blob in a:
        np.testing.assert_allclose(a[blob], b[blob], rtol=1e-6, atol=1e-7, err_msg=blob)
    assert loaded.get_layer("psp").trainable is False


def test_bn_weights_export_loads_into_the_model(tmp_path):
    shape = (2, 3, 4, 4)
    blobs = _vectors(3, 4)
    deploy, weights = _bn_net(tmp_path, shape, {"eps": 1e-3}, blobs)
    out = tmp_path / "w.weights.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        caffe2keras.export_weights(deploy, weights, out)
    model = quiet_convert(deploy)
    model.load_weights(out)
    x = RNG.standard_normal(shape).astype(F32)
    assert_blob_close(_run(model, {"data": x})["bn"], pspnet_bn(x, *blobs, 1e-3), "export")


def test_bn_and_axpy_export_paths_are_the_models(tmp_path):
    """Where export works the .weights.h5 paths out without Keras (BN of every family,
    Axpy), they are the converted model's."""
    from .test_export import check_fast_paths

    conv = {"num_output": 3, "kernel_size": [1]}
    w = CaffeNetWriter("t").input("data", (1, 3, 4, 4))
    w.layer("c1", "Convolution", "data", "c1", convolution_param=conv,
            blobs=[RNG.standard_normal((3, 3, 1, 1)).astype(F32), np.zeros(3, F32)])
    w.layer("b1", "BN", "c1", "c1", blobs=_vectors(3, 4), bn_param={"frozen": True})
    w.layer("c2", "Convolution", "c1", "c2", convolution_param=conv,
            blobs=[RNG.standard_normal((3, 3, 1, 1)).astype(F32), np.zeros(3, F32)])
    w.layer("b2", "BN", "c2", "c2", blobs=_vectors(3, 4), bn_param={"frozen": True})
    w.layer("b3", "BN", "c2", "b3", blobs=_vectors(3, 2), bn_param={"bn_mode": "INFERENCE"})
    w.layer("gap", "Pooling", "c2", "gap", pooling_param={"pool": "AVE", "global_pooling": True})
    w.layer("axpy", "Axpy", ["gap", "b3", "data"], "out")
    deploy, weights = tmp_path / "se.prototxt", tmp_path / "se.caffemodel"
    write_net(deploy, weights, w)
    check_fast_paths(deploy, weights)          # weights off the first inputs: no fast path
    check_fast_paths(deploy, weights, outputs="all")
    # a chain of every BN family: the fast path applies
    w = CaffeNetWriter("t").input("data", (1, 3, 4, 4))
    w.layer("c1", "Convolution", "data", "c1", convolution_param=conv,
            blobs=[RNG.standard_normal((3, 3, 1, 1)).astype(F32), np.zeros(3, F32)])
    w.layer("b1", "BN", "c1", "c1", blobs=_vectors(3, 4), bn_param={"frozen": True})
    w.layer("b2", "BN", "c1", "c1", blobs=_vectors(3, 2), bn_param={"bn_mode": "INFERENCE"})
    w.layer("b3", "BN", "c1", "c1", blobs=_vectors(3, 2), bn_param={"bn_mode": "LEARN"})
    w.layer("b4", "BN", "c1", "c1", blobs=_vectors(3, 4), bn_param={"momentum": 0.9})
    write_net(deploy, weights, w)
    assert check_fast_paths(deploy, weights) is not None
    assert check_fast_paths(deploy, weights, outputs="all") is not None


@pytest.mark.parametrize("param,text", [
    ({"bn_mode": "LEARN"}, "each batch's own statistics"),
    ({"bn_mode": "INFERENCE"}, "scale * x + shift"),
    ({"frozen": True}, "BatchNormalization, frozen"),
    ({"var_eps": 1e-5, "moving_average": False}, "each batch's own statistics"),
])
def test_inspect_names_the_bn_family(tmp_path, param, text):
    from caffe2keras.inspect import describe

    deploy, _ = _bn_net(tmp_path, (1, 3, 2, 2), param, [])
    layers = describe(load_graph(deploy))["layers"]
    assert text in layers[-1]["note"]


def test_bn_layers_train_as_caffe_would(tmp_path):
    w = CaffeNetWriter("t").input("data", (4, 3, 2, 2))
    w.layer("seg", "BN", "data", "seg", blobs=_vectors(3, 2), bn_param={"bn_mode": "LEARN"})
    w.layer("psp", "BN", "data", "psp", blobs=_vectors(3, 4), bn_param={"frozen": True})
    w.layer("free", "BN", "data", "free", blobs=_vectors(3, 4), bn_param={"momentum": 0.5})
    deploy, weights = tmp_path / "t.prototxt", tmp_path / "t.caffemodel"
    write_net(deploy, weights, w)
    model = quiet_convert(deploy, weights, outputs=["seg", "psp", "free"])
    before = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    model.compile(keras.optimizers.SGD(0.1), loss={k: "mse" for k in ("seg", "psp", "free")})
    x = RNG.standard_normal((4, 2, 2, 3)).astype(F32)
    target = {k: np.zeros_like(x) for k in ("seg", "psp", "free")}
    model.fit({"data": x}, target, batch_size=4, epochs=1, verbose=0)
    after = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    changed = {k for k in before if not np.allclose(before[k], after[k])}
    assert changed == {"seg/gamma", "seg/beta", "free/gamma", "free/beta",
                       "free/moving_mean", "free/moving_variance"}


def test_segnet_block_pools_with_mask_and_unpools(tmp_path):
    """SegNet's encoder/decoder step: BN (INFERENCE), MAX pooling with its mask top
    (checked against Caffe in test_emit_zoo.py), Upsample by that mask, BN (LEARN)."""
    from .test_emit_fork import unpool_reference

    scale, shift = _vectors(3, 2)
    gamma, beta = _vectors(3, 2)
    w = CaffeNetWriter("t").input("data", (2, 3, 7, 8))
    w.layer("bn1", "BN", "data", "data", blobs=[scale, shift],
            bn_param={"bn_mode": "INFERENCE"})
    w.layer("pool", "Pooling", "data", ["pool", "mask"],
            pooling_param={"pool": "MAX", "kernel_size": 2, "stride": 2})
    w.layer("up", "Upsample", ["pool", "mask"], "up",
            upsample_param={"scale": 2, "pad_out_h": True})
    w.layer("bn2", "BN", "up", "bn2", blobs=[gamma, beta], bn_param={"bn_mode": "LEARN"})
    deploy, weights = tmp_path / "seg.prototxt", tmp_path / "seg.caffemodel"
    write_net(deploy, weights, w)
    x = RNG.standard_normal((2, 3, 7, 8)).astype(F32)
    got = _run(quiet_convert(deploy, weights, outputs="all"), {"data": x})
    y = segnet_bn(x, scale, shift, "INFERENCE")
    assert_blob_close(got["data"], y, "bn1")
    # the mask names each window's maximum; unpooling puts the maxima back there
    pooled, mask = got["pool"], got["mask"]
    assert pooled.shape == mask.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(got["data"].reshape(2, 3, -1)[np.arange(2)[:, None, None],
                                                   np.arange(3)[None, :, None],
                                                   mask.reshape(2, 3, -1).astype(int)],
                               pooled.reshape(2, 3, -1), rtol=1e-6)
    up = unpool_reference(pooled, mask, (7, 8))
    assert_blob_close(got["up"], up, "up")
    assert_blob_close(got["bn2"], segnet_bn(up, gamma, beta, "LEARN"), "bn2")
