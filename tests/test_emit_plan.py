"""The plan's fusions of an element-wise activation into the layer before it: when they
happen, that they compute what the separate layers compute, and that everything keyed
by layer or blob names (outputs, weight files, .keras, codegen, write-back) still works."""

import importlib.util
import warnings

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras.emit import plan
from caffe2keras.writer import CaffeNetWriter, write_net

from .shared import quiet_convert

RNG = np.random.default_rng(12)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _net():
    """conv+ReLU, deconv+Sigmoid (in place), fc+TanH (a new top), fc2+ReLU (in place)."""
    net = CaffeNetWriter("fused")
    net.input("data", (2, 3, 6, 6))
    net.layer("conv", "Convolution", "data", "conv",
              convolution_param={"num_output": 4, "kernel_size": [3], "pad": [1]},
              blobs=[_w(4, 3, 3, 3), _w(4)])
    net.layer("relu", "ReLU", "conv", "conv")
    net.layer("up", "Deconvolution", "conv", "up",
              convolution_param={"num_output": 2, "kernel_size": [2], "stride": [2]},
              blobs=[_w(4, 2, 2, 2), _w(2)])
    net.layer("sig", "Sigmoid", "up", "up")
    net.layer("fc", "InnerProduct", "up", "fc", inner_product_param={"num_output": 5},
              blobs=[_w(5, 2 * 12 * 12), _w(5)])
    net.layer("tanh", "TanH", "fc", "t")
    net.layer("fc2", "InnerProduct", "t", "fc2", inner_product_param={"num_output": 3},
              blobs=[_w(3, 5), _w(3)])
    net.layer("relu2", "ReLU", "fc2", "fc2")
    return net


def _files(tmp_path, net):
    deploy, weights = tmp_path / "n.prototxt", tmp_path / "n.caffemodel"
    write_net(deploy, weights, net)
    return deploy, weights


def _separate(*args, **kw):
    plan.FUSE_ACTIVATIONS = False
    try:
        return quiet_convert(*args, **kw)
    finally:
        plan.FUSE_ACTIVATIONS = True


def _run(model, x):
    return {k: keras.ops.convert_to_numpy(v) for k, v in model({"data": x}).items()}


X = RNG.standard_normal((2, 6, 6, 3)).astype(np.float32)


def test_fused_layers_compute_what_the_separate_layers_compute(tmp_path):
    files = _files(tmp_path, _net())
    fused, separate = quiet_convert(*files, outputs="all"), _separate(*files, outputs="all")
    kinds = [type(la).__name__ for la in fused.layers]
    # "fc" is TanH's input under its own name: asked for, so TanH stays separate
    assert "ReLU" not in kinds and kinds.count("Activation") == 1, kinds
    assert [type(la).__name__ for la in separate.layers].count("ReLU") == 2
    acts = {la.name: keras.activations.serialize(la.activation) for la in fused.layers
            if hasattr(la, "activation")}
    assert acts == {"conv": "relu", "up": "sigmoid", "fc": "linear", "tanh": "tanh",
                    "fc2": "relu"}
    got, want = _run(fused, X), _run(separate, X)
    # every blob, the in-place ones meaning their value after the activation
    assert sorted(got) == sorted(want) == ["conv", "data", "fc", "fc2", "t", "up"]
    assert "tanh" in [la.name for la in fused.layers]
    for blob in want:
        np.testing.assert_array_equal(got[blob], want[blob], err_msg=blob)
    assert got["conv"].min() >= 0 and 0 <= got["up"].min() and got["up"].max() <= 1
    assert (got["conv"] == 0).any()  # the ReLU did something


def test_default_outputs_fuse_tanh_and_blob_lookups_still_work(tmp_path):
    files = _files(tmp_path, _net())
    model = quiet_convert(*files)
    assert "tanh" not in [la.name for la in model.layers]
    assert model.get_layer("fc").activation is keras.activations.tanh
    feats = quiet_convert(*files, outputs=["conv", "t"])   # conv: after its ReLU
    ref = _separate(*files, outputs=["conv", "t"])
    got, want = _run(feats, X), _run(ref, X)
    for blob in ("conv", "t"):
        np.testing.assert_array_equal(got[blob], want[blob])
    np.testing.assert_array_equal(_run(model, X)["fc2"], _run(_separate(*files), X)["fc2"])


def test_not_fused_where_the_value_before_the_activation_is_read(tmp_path):
    net = CaffeNetWriter("t")
    net.input("data", (1, 2, 4, 4))
    for name in ("a", "b", "c"):
        net.layer(name, "Convolution", "data", name,
                  convolution_param={"num_output": 2, "kernel_size": [1]},
                  blobs=[_w(2, 2, 1, 1), _w(2)])
    net.layer("copy", "Power", "a", "a_copy")     # reads conv a before its ReLU
    net.layer("relu_a", "ReLU", "a", "a")
    net.layer("leaky", "ReLU", "b", "b", relu_param={"negative_slope": 0.1})
    net.layer("relu_c", "ReLU", "c", "c")
    net.layer("sum", "Eltwise", ["a", "b", "c", "a_copy"], "sum")
    model = quiet_convert(*_files(tmp_path, net))
    names = [la.name for la in model.layers]
    assert "relu_a" in names and "leaky" in names and "relu_c" not in names
    np.testing.assert_array_equal(
        _run(model, X[:1, :4, :4, :2])["sum"],
        _run(_separate(*_files(tmp_path, net)), X[:1, :4, :4, :2])["sum"])


def test_a_replaced_activation_converter_is_called(tmp_path):
    from caffe2keras.emit.registry import TYPES, layer_type

    calls = []
    original = layer_type("Sigmoid")

    @caffe2keras.register_converter("Sigmoid")
    def sigmoid(ctx):
        calls.append(ctx.name)
        return [ctx.add(keras.layers.Activation("sigmoid", name=ctx.name), ctx.inputs[0])]

    try:
        quiet_convert(*_files(tmp_path, _net()))
    finally:
        TYPES["Sigmoid"] = original
    assert calls == ["sig"]


def test_weight_files_keras_files_codegen_and_write_back(tmp_path):
    deploy, weights = _files(tmp_path, _net())
    model = quiet_convert(deploy, weights)
    want = _run(model, X)["fc2"]
    # .weights.h5 written without Keras into the fused model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        caffe2keras.export_weights(deploy, weights, tmp_path / "w.weights.h5")
        fresh = caffe2keras.convert(deploy, seed=1)
    fresh.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(_run(fresh, X)["fc2"], want)
    # .keras round trip
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(_run(loaded, X)["fc2"], want)
    # codegen: the activation is a constructor argument, the comment names both layers
    from caffe2keras.codegen import write_python
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_python(deploy, tmp_path / "gen.py", weights)
    source = (tmp_path / "gen.py").read_text()
    assert "Caffe Convolution 'conv' + ReLU 'relu'" in source and "'relu'" in source
    spec = importlib.util.spec_from_file_location("gen_fused", tmp_path / "gen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    np.testing.assert_array_equal(_run(module.build_model(), X)["fc2"], want)
    # write-back: the caffemodel's blobs come back unchanged
    caffe2keras.save_caffemodel(model, deploy, tmp_path / "back.caffemodel")
    a, b = caffe2keras.load_caffemodel(weights), \
        caffe2keras.load_caffemodel(tmp_path / "back.caffemodel")
    for name in ("conv", "up", "fc", "fc2"):
        for x, y in zip(a.layers[name].blobs, b.layers[name].blobs):
            np.testing.assert_array_equal(x.array(), y.array())


@pytest.mark.parametrize("fuse", [False, True])
def test_switch_gives_the_same_plan_names(tmp_path, fuse):
    graph = caffe2keras.load_graph(_files(tmp_path, _net())[0])
    plan.FUSE_ACTIVATIONS = fuse
    try:
        steps = plan.make_plan(graph, {graph.final("fc2")})
    finally:
        plan.FUSE_ACTIVATIONS = True
    fused = {s.name: s.activation for s in steps if s.activation}
    assert fused == ({"conv": "relu", "up": "sigmoid", "fc": "tanh", "fc2": "relu"}
                     if fuse else {})


def test_layers_sharing_parameters_keep_their_activations_apart(tmp_path):
    # one Keras layer serves the owner and the sharer (sharing.py): a ReLU after only
    # one of them must stay a layer of its own
    w, b = _w(2, 2, 1, 1), _w(2)
    net = CaffeNetWriter("siamese")
    net.input("data", (1, 2, 4, 4))
    net.input("data_p", (1, 2, 4, 4))
    share = [{"name": "w"}, {"name": "b"}]
    net.layer("c", "Convolution", "data", "c", param=share, blobs=[w, b],
              convolution_param={"num_output": 2, "kernel_size": [1]})
    net.layer("relu", "ReLU", "c", "c")
    net.layer("c_p", "Convolution", "data_p", "c_p", param=share, blobs=[w, b],
              convolution_param={"num_output": 2, "kernel_size": [1]})
    model = quiet_convert(*_files(tmp_path, net))
    x = X[:1, :4, :4, :2]
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model({"data": x, "data_p": x}).items()}
    np.testing.assert_array_equal(out["c"], np.maximum(out["c_p"], 0))
    assert (out["c_p"] < 0).any()
