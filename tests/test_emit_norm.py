"""BatchNorm(+Scale), Scale, Bias, LRN and MVN converters: exact against real Caffe, BN
as Keras BatchNormalization, and converted models that train."""

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras.errors import CaffeFormatError, CaffeWarning
from caffe2keras.writer import CaffeNetWriter, write_net

from .compute_goldens import cases, check_case
from .shared import conformance_files, quiet_convert

RNG = np.random.default_rng(13)


@pytest.mark.parametrize("case", cases("bn_") + cases("scale_") + cases("bias_")
                         + cases("lrn_") + cases("mvn"))
def test_against_caffe(case, tmp_path):
    check_case(case, tmp_path)



def test_bn_scale_pair_is_one_batch_normalization():
    deploy, weights, _, _ = conformance_files("batchnorm_scale")
    model = quiet_convert(deploy, weights)
    bns = [layer for layer in model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert [b.name for b in bns] == ["bn", "bn2"]
    assert all(b.center and b.scale for b in bns)
    assert not any(type(layer).__name__ == "Scale" for layer in model.layers)
    # sc2 has no bias: beta starts at zero
    assert np.all(keras.ops.convert_to_numpy(model.get_layer("bn2").beta) == 0)
    assert model.get_layer("bn").epsilon == pytest.approx(1e-3)


def _bn_net(with_scale=True, **bn_param):
    net = CaffeNetWriter("t")
    net.input("data", (2, 3, 6, 6))
    c = 4
    net.layer("conv", "Convolution", "data", "conv",
              convolution_param={"num_output": c, "kernel_size": [3]},
              blobs=[RNG.standard_normal((c, 3, 3, 3)).astype(np.float32) * 0.3,
                     np.zeros(c, np.float32)])
    net.layer("bn", "BatchNorm", "conv", "conv", batch_norm_param=bn_param,
              blobs=[RNG.standard_normal(c).astype(np.float32) * 5,
                     RNG.uniform(1, 2, c).astype(np.float32) * 5, np.array([5.0], np.float32)])
    if with_scale:
        net.layer("sc", "Scale", "conv", "conv", scale_param={"bias_term": True},
                  blobs=[RNG.uniform(0.5, 1.5, c).astype(np.float32),
                         RNG.standard_normal(c).astype(np.float32)])
    net.layer("relu", "ReLU", "conv", "conv")
    net.layer("fc", "InnerProduct", "conv", "fc", inner_product_param={"num_output": 2},
              blobs=[RNG.standard_normal((2, c * 16)).astype(np.float32) * 0.1,
                     np.zeros(2, np.float32)])
    return net


def test_unfused_batchnorm_has_no_gamma_beta(tmp_path):
    write_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel", _bn_net(with_scale=False))
    model = quiet_convert(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    bn = model.get_layer("bn")
    assert not bn.center and not bn.scale
    mean = keras.ops.convert_to_numpy(bn.moving_mean)
    assert np.allclose(mean * 5, model_blob(tmp_path, "bn", 0))
    assert bn.momentum == pytest.approx(0.999)  # Caffe's moving_average_fraction


def model_blob(tmp_path, layer, i):
    from caffe2keras.caffemodel import load_caffemodel
    return load_caffemodel(tmp_path / "n.caffemodel").layers[layer].blobs[i].array()


def test_converted_model_trains_one_step(tmp_path):
    write_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel", _bn_net())
    model = quiet_convert(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    bn = model.get_layer("bn")
    trainable = {id(v) for v in model.trainable_weights}
    assert id(bn.gamma) in trainable and id(bn.beta) in trainable
    assert id(bn.moving_mean) not in trainable and id(bn.moving_variance) not in trainable
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss={"fc": "mse"})
    x = RNG.standard_normal((4, 6, 6, 3)).astype(np.float32)
    y = RNG.standard_normal((4, 2)).astype(np.float32)
    before = {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}
    hist = model.fit({"data": x}, {"fc": y}, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    after = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    changed = {p for p in before if not np.array_equal(before[p], after[p])}
    for w in (bn.gamma, bn.beta, model.get_layer("conv").kernel, model.get_layer("fc").kernel):
        assert w.path in changed
    # moving statistics follow the batch (Keras's update), not the optimizer
    assert bn.moving_mean.path in changed


def test_use_global_stats_false_warns(tmp_path):
    write_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel",
              _bn_net(use_global_stats=False))
    with pytest.warns(CaffeWarning, match="use_global_stats"):
        caffe2keras.convert(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")


def test_learned_scale_along_batch_axis_is_refused(tmp_path):
    net = CaffeNetWriter("t")
    net.input("data", (2, 3))
    net.layer("sc", "Scale", "data", "sc", scale_param={"axis": 0, "num_axes": 1},
              blobs=[np.ones(2, np.float32)])
    write_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel", net)
    with pytest.raises(CaffeFormatError, match="batch"):
        quiet_convert(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
