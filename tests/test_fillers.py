"""Fresh weights follow the prototxt's fillers, as Caffe draws them."""
import math

import numpy as np
import pytest

import caffe2keras
from caffe2keras.errors import CaffeFormatError
from caffe2keras.fillers import fill, fresh_blobs
from caffe2keras.net import Layer, parse_net
from caffe2keras.proto.text import parse_text

from .shared import PROTOTXT_ONLY, conformance_files, to_numpy


def _filler(text):
    return parse_text(text, "FillerParameter")


def test_filler_distributions():
    rng = np.random.default_rng(0)
    shape = (64, 32, 3, 3)  # fan_in 288, fan_out 576
    c = fill(_filler('type: "constant" value: 0.5'), shape, rng)
    assert c.dtype == np.float32 and np.all(c == 0.5)
    u = fill(_filler('type: "uniform" min: -2 max: 3'), shape, rng)
    assert u.min() >= -2 and u.max() <= 3 and abs(u.mean() - 0.5) < 0.1
    g = fill(_filler('type: "gaussian" mean: 1 std: 0.1'), shape, rng)
    assert abs(g.mean() - 1) < 0.01 and abs(g.std() - 0.1) < 0.01
    x = fill(_filler('type: "xavier"'), shape, rng)  # uniform(+-sqrt(3 / fan_in))
    assert abs(np.abs(x).max() - math.sqrt(3 / 288)) < 1e-3
    x = fill(_filler('type: "xavier" variance_norm: AVERAGE'), shape, rng)
    assert abs(np.abs(x).max() - math.sqrt(3 / 432)) < 1e-3
    m = fill(_filler('type: "msra" variance_norm: FAN_OUT'), shape, rng)
    assert abs(m.std() - math.sqrt(2 / 576)) < 2e-3
    s = fill(_filler('type: "gaussian" std: 1 sparse: 16'), shape, rng)
    assert abs((s != 0).mean() - 16 / 64) < 0.02  # kept with probability sparse / rows


def test_bilinear_filler_is_caffes_upsampling_kernel():
    b = fill(_filler('type: "bilinear"'), (2, 1, 4, 4), np.random.default_rng(0))
    ramp = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    np.testing.assert_allclose(b[1, 0], np.outer(ramp, ramp))
    with pytest.raises(CaffeFormatError, match="bilinear filler needs a square"):
        fill(_filler('type: "bilinear"'), (2, 1, 3, 4), np.random.default_rng(0))
    with pytest.raises(CaffeFormatError, match="unknown filler type 'fancy'"):
        fill(_filler('type: "fancy"'), (2, 2), np.random.default_rng(0))


def test_unset_fillers_start_trainable_not_at_zero():
    net = parse_net('''
        input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
        layer { name: "c" type: "Convolution" bottom: "data" top: "c"
                convolution_param { num_output: 4 kernel_size: 3 } }
        layer { name: "p" type: "PReLU" bottom: "c" top: "c" }
        layer { name: "s" type: "Scale" bottom: "c" top: "s" scale_param { bias_term: true } }
    ''', "t.prototxt")
    rng = np.random.default_rng(0)
    conv, prelu, scale = net.layers
    w, b = fresh_blobs(conv, [(4, 3, 3, 3), (4,)], rng)
    limit = math.sqrt(6 / (27 + 36))  # Keras's Glorot uniform
    assert w.std() > 0 and np.abs(w).max() <= limit and np.all(b == 0)
    assert np.all(fresh_blobs(prelu, [(4,)], rng)[0] == 0.25)
    s, sb = fresh_blobs(scale, [(4,), (4,)], rng)
    assert np.all(s == 1) and np.all(sb == 0)
    # a type without a filler table keeps its Keras initializers
    assert fresh_blobs(Layer("x", "Frobnicate", [], [], conv.params), [(2,)], rng) is None


def test_fresh_models_are_seeded_and_follow_the_prototxt():
    deploy = PROTOTXT_ONLY / "bvlc_googlenet_deploy.prototxt"  # xavier, constant 0.2 biases
    a = caffe2keras.convert(deploy, seed=3, outputs=["conv1/7x7_s2"])
    b = caffe2keras.convert(deploy, seed=3, outputs=["conv1/7x7_s2"])
    kernel, bias = (to_numpy(w.value) for w in a.get_layer("conv1_7x7_s2").weights)
    np.testing.assert_array_equal(kernel, to_numpy(b.get_layer("conv1_7x7_s2").weights[0].value))
    assert np.abs(kernel).max() <= math.sqrt(3 / 147) and kernel.std() > 0.05
    np.testing.assert_allclose(bias, 0.2)


def test_fresh_batchnorm_starts_as_keras_does():
    deploy, _, _, _ = conformance_files("batchnorm_scale")
    model = caffe2keras.convert(deploy, seed=0, outputs=["sc2"])
    bn = model.get_layer("bn2")
    mean, var = (to_numpy(w.value) for w in bn.weights[-2:])
    assert np.all(mean == 0) and np.all(var == 1)


def test_bilinear_filler_equals_the_weights_real_caffe_drew():
    """deconv_group_bilinear's first layer was initialised by Caffe's bilinear filler."""
    from caffe2keras.caffemodel import load_caffemodel

    _, weights, _, _ = conformance_files("deconv_group_bilinear")
    caffe = load_caffemodel(weights).layers["up"].blobs[0]
    ours = fill(_filler('type: "bilinear"'), caffe.shape, np.random.default_rng(0))
    np.testing.assert_array_equal(ours, caffe.array())
