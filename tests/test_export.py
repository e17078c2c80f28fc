"""Weights-only export (caffe2keras/export/): every format checked against the Caffe
blobs and against what real Caffe computed with them.

- keras: the file loads into convert()'s model and gives Caffe's blobs; its variables
  equal convert(deploy, caffemodel)'s bit for bit; the Keras-free paths equal the ones
  Keras itself writes.
- keras2-h5: loads by name into models written here by hand with keras.layers and the
  Caffe layer names, and gives Caffe's blobs.
- npz / pickle: every blob bit for bit; pickles are only ever read with a restricted
  unpickler that can build numpy arrays and nothing else.
"""
import pickle
import pickletools
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras import export
from caffe2keras.caffemodel import load_caffemodel
from caffe2keras.emit.layers.lrn import LRNWithinChannel
from caffe2keras.emit.layers.pooling import CaffePooling2D
from caffe2keras.emit.plan import make_plan, resolve_outputs
from caffe2keras.errors import CaffeFormatError, CaffeWarning, UnsupportedLayerError
from caffe2keras.export import pickled, sinks, slicing
from caffe2keras.graph import load_graph
from caffe2keras.writer import CaffeNetWriter

from . import compute_goldens
from .shared import (
    CONFORMANCE_CASES,
    MODELS_INDEX,
    assert_blob_close,
    conformance_files,
    model_files,
    quiet_convert,
    to_caffe_layout,
    to_keras_layout,
)

L = keras.layers
ALL_FIXTURES = [("conformance", c) for c in CONFORMANCE_CASES] + \
    [("model", k) for k in sorted(MODELS_INDEX)]
FORK_GOLDENS = Path(__file__).resolve().parent / "fixtures" / "fork_goldens"
FORK_CASES = sorted(p.name for p in FORK_GOLDENS.iterdir()
                    if (p / "weights.caffemodel").exists())


def fixture_files(kind, name):
    return conformance_files(name) if kind == "conformance" else model_files(name)


# ---------------------------------------------------------------- trusted pickles only

# What a pickle of numpy arrays in lists and dicts may name; anything else is refused.
ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def load_trusted_pickle(path):
    """Our own export, read with an unpickler that can only rebuild numpy arrays."""
    with open(path, "rb") as f:
        return ArraysOnlyUnpickler(f).load()


def pickle_globals(path):
    """Every global the pickle's opcode stream names, read without unpickling (the memo
    followed, since the pickler fetches repeated module names from it)."""
    with open(path, "rb") as f:
        data = f.read()
    names, pushed, memo = set(), [], {}
    strings = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"}
    for op, arg, _ in pickletools.genops(data):
        if op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1]
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo[arg])
        elif op.name in strings:
            pushed.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.add((pushed[-2], pushed[-1]))
            pushed.append(None)
        elif op.name == "GLOBAL":
            names.add(tuple(arg.split(" ", 1)))
            pushed.append(None)
        elif op.stack_after:
            pushed.append(None)
    return names


# ----------------------------------------------------------------------------- helpers

def quiet_export(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeWarning)
        return caffe2keras.export_weights(*args, **kwargs)


def check_outputs(got, golden, blobs):
    for blob in blobs:
        assert_blob_close(to_caffe_layout(got[blob]), golden[blob], blob)


def layout_paths(layout):
    return {name: entry.path for name, entry in layout.layers.items()}


def keras_written_paths(model, tmp_path):
    """{layer name: group} as Keras's own save_weights writes them."""
    path = tmp_path / "keras_own.weights.h5"
    model.save_weights(path)
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Group) and name.endswith("/vars") and len(obj):
                out[obj.attrs["name"]] = name[:-len("/vars")]
        f.visititems(visit)
    return out


# ------------------------------------------------------------------ keras (.weights.h5)

@pytest.mark.parametrize("case", CONFORMANCE_CASES)
def test_keras_file_gives_caffe_blobs(case, tmp_path):
    """Every blob, through convert(outputs="all")'s model with only the exported file's
    weights."""
    deploy, weights, inputs, outputs = conformance_files(case)
    path = quiet_export(deploy, weights, tmp_path / "w.weights.h5", outputs="all")
    model = quiet_convert(deploy, outputs="all")
    model.load_weights(path)
    feed = np.load(inputs)
    golden = np.load(outputs)
    got = model({k: to_keras_layout(feed[k]) for k in feed.files})
    check_outputs(got, golden, golden.files)


REAL_MODELS = ["lenet_mnist_v1", "mtcnn_det3"]


@pytest.mark.parametrize("key", REAL_MODELS)
def test_keras_file_real_models(key, tmp_path):
    """The default outputs, as convert() gives them (paths worked out for lenet, read
    from the skeleton for mtcnn's parallel heads)."""
    deploy, weights, inputs, outputs = model_files(key)
    path = quiet_export(deploy, weights, tmp_path / "w.weights.h5")
    model = quiet_convert(deploy)
    model.load_weights(path)
    feed = np.load(inputs)
    golden = np.load(outputs)
    got = model({k: to_keras_layout(feed[k]) for k in feed.files})
    check_outputs(got, golden, list(got))


@pytest.mark.parametrize("kind,name", [
    ("conformance", "batchnorm_scale"), ("conformance", "fc_after_conv"),
    ("conformance", "conv_depthwise"), ("conformance", "deconv_group_bilinear"),
    ("conformance", "scale_bias"), ("conformance", "activations"),
    ("model", "cifar10_full_v1")])
def test_keras_file_equals_convert_weights(kind, name, tmp_path):
    """Bit for bit what convert(deploy, caffemodel) puts in every variable."""
    deploy, weights, _, _ = fixture_files(kind, name)
    path = quiet_export(deploy, weights, tmp_path / "w.weights.h5")
    want = {v.path: keras.ops.convert_to_numpy(v) for v in quiet_convert(deploy, weights).weights}
    model = quiet_convert(deploy)
    model.load_weights(path)
    got = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    assert got.keys() == want.keys()
    for k, w in want.items():
        assert np.array_equal(got[k], w), k


def check_fast_paths(deploy, weights, outputs=None):
    """Where the export works the paths out without Keras, they are the ones read from
    convert()'s model itself."""
    graph = load_graph(deploy, weights)
    keep = {graph.final(b) for b in resolve_outputs(graph, outputs)}
    fast = export.fast_layout(graph, make_plan(graph, keep), keep)
    skeleton = export.skeleton_layout(graph, outputs)
    if fast is not None:
        paths = layout_paths(skeleton)
        assert {n: p for n, p in layout_paths(fast).items() if n in paths} == paths
        weighted = {s.name for s in make_plan(graph, keep) if any(n.layer.blobs for n in s.nodes)}
        assert fast.in_model & weighted == skeleton.in_model & weighted
    return fast


@pytest.mark.parametrize("kind,name", ALL_FIXTURES)
def test_keras_free_paths_equal_the_skeleton(kind, name):
    deploy, weights, _, _ = fixture_files(kind, name)
    check_fast_paths(deploy, weights)
    check_fast_paths(deploy, weights, outputs="all")


def export_load_compare(deploy, weights, feed, golden, tmp_path):
    """Export (outputs="all"), load into convert(outputs="all")'s model, every blob."""
    path = quiet_export(deploy, weights, tmp_path / "w.weights.h5", outputs="all")
    model = quiet_convert(deploy, outputs="all")
    model.load_weights(path)
    got = model({k: to_keras_layout(v) for k, v in feed.items()})
    check_outputs(got, golden, list(golden))


@pytest.mark.parametrize("case", compute_goldens.cases(""))
def test_keras_file_compute_goldens(case, tmp_path):
    """The compute-layer variants (Embed, InnerProduct on any axis, grouped and dilated
    deconvolution, Scale/Bias axes, BatchNorm ranks...) against real Caffe."""
    deploy, weights, ins, outs = compute_goldens.write_case(case, tmp_path)
    check_fast_paths(deploy, weights, outputs="all")
    export_load_compare(deploy, weights, ins, outs, tmp_path)


@pytest.mark.parametrize("case", FORK_CASES)
def test_keras_file_fork_goldens(case, tmp_path):
    d = FORK_GOLDENS / case
    deploy, weights = d / "deploy.prototxt", d / "weights.caffemodel"
    check_fast_paths(deploy, weights, outputs="all")
    with np.load(d / "inputs.npz") as i, np.load(d / "outputs.npz") as o:
        feed, golden = dict(i), dict(o)
    export_load_compare(deploy, weights, feed, golden, tmp_path)


@pytest.mark.parametrize("kind,name", [
    ("model", "lenet_mnist_v1"), ("model", "mtcnn_det1"), ("model", "open_nsfw"),
    ("conformance", "scale_bias")])
def test_skeleton_paths_equal_what_keras_writes(kind, name, tmp_path):
    """The paths read from the weightless skeleton are the ones Keras's own save_weights
    writes for convert()'s model (branchy nets: order by graph depth, not creation)."""
    deploy, weights, _, _ = fixture_files(kind, name)
    skeleton = export.skeleton_layout(load_graph(deploy, weights), None)
    assert layout_paths(skeleton) == keras_written_paths(quiet_convert(deploy), tmp_path)


def test_fast_paths_cover_the_chain_nets():
    """The nets where every weighted class is one chain need no Keras at all."""
    for kind, name in [("model", "lenet_mnist_v1"), ("model", "cifar10_full_v1"),
                       ("conformance", "batchnorm_scale"), ("conformance", "deconv")]:
        deploy, weights, _, _ = fixture_files(kind, name)
        graph = load_graph(deploy, weights)
        keep = {graph.final(b) for b in resolve_outputs(graph, None)}
        assert export.fast_layout(graph, make_plan(graph, keep), keep) is not None, name


def _write_net(tmp_path, build, name="net"):
    net = CaffeNetWriter(name)
    build(net)
    deploy, weights = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    net.write_prototxt(deploy)
    net.write_caffemodel(weights)
    return deploy, weights


def _rng_blob(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _conv(net, rng, name, bottom, c_in, c_out, k=3, **extra):
    net.layer(name, "Convolution", bottom, name,
              convolution_param={"num_output": c_out, "kernel_size": [k], **extra},
              blobs=[_rng_blob(rng, c_out, c_in, k, k), _rng_blob(rng, c_out)])


def branchy_nets():
    """Synthetic nets: (id, builder, fast path expected)."""
    def chain_with_side_branches(net, rng):
        net.input("data", (1, 3, 12, 12))
        _conv(net, rng, "c1", "data", 3, 4)
        net.layer("p", "Pooling", "c1", "p", pooling_param={"pool": "MAX", "kernel_size": 3,
                                                           "stride": 1, "pad": 1})
        net.layer("r", "ReLU", "c1", "r")
        net.layer("cat", "Concat", ["p", "r"], "cat")
        _conv(net, rng, "c2", "cat", 8, 5, pad=[1])
        net.layer("ip", "InnerProduct", "c2", "ip", inner_product_param={"num_output": 3},
                  blobs=[_rng_blob(rng, 3, 5 * 10 * 10), _rng_blob(rng, 3)])

    def parallel_convs(net, rng):  # conv heads: order depends on depth -> Keras decides
        net.input("data", (1, 3, 10, 10))
        _conv(net, rng, "trunk", "data", 3, 4)
        _conv(net, rng, "head_a", "trunk", 4, 2, k=1)
        _conv(net, rng, "head_b", "trunk", 4, 6, k=3, pad=[1], stride=[2])
        net.layer("relu_a", "ReLU", "head_a", "out_a")
        net.layer("sm_a", "Softmax", "out_a", "prob_a")

    def weightless_scale_counts(net, rng):  # a Scale by a second input has no variable
        net.input("data", (1, 3, 6, 6))
        net.input("s", (1, 3))
        _conv(net, rng, "c", "data", 3, 3, pad=[1])
        net.layer("mul", "Scale", ["c", "s"], "mul", scale_param={"axis": 0})
        net.layer("sc", "Scale", "mul", "sc", scale_param={"bias_term": True},
                  blobs=[_rng_blob(rng, 3), _rng_blob(rng, 3)])

    return [("chain_with_side_branches", chain_with_side_branches, True),
            ("parallel_convs", parallel_convs, False),
            ("weightless_scale_counts", weightless_scale_counts, True)]


@pytest.mark.parametrize("name,build,fast_expected", branchy_nets())
def test_synthetic_nets_paths_and_values(name, build, fast_expected, tmp_path):
    rng = np.random.default_rng(7)
    deploy, weights = _write_net(tmp_path, lambda net: build(net, rng), name)
    graph = load_graph(deploy, weights)
    keep = {graph.final(b) for b in resolve_outputs(graph, None)}
    fast = export.fast_layout(graph, make_plan(graph, keep), keep)
    assert (fast is not None) == fast_expected
    own = keras_written_paths(quiet_convert(deploy), tmp_path)
    if fast is not None:
        assert {n: p for n, p in layout_paths(fast).items() if n in own} == own
    path = quiet_export(deploy, weights, tmp_path / "w.weights.h5")
    model = quiet_convert(deploy)
    model.load_weights(path)
    ref = quiet_convert(deploy, weights)
    for v, w in zip(model.weights, ref.weights, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(v), keras.ops.convert_to_numpy(w))


def test_keras_outputs_subset(tmp_path):
    """outputs= leaves later layers out of the model, and out of the file."""
    deploy, weights, inputs, outputs = model_files("lenet_mnist_v2")
    path = quiet_export(deploy, weights, tmp_path / "w.weights.h5", outputs=["conv2"])
    with h5py.File(path, "r") as f:
        assert sorted(f["layers"]) == ["conv2d", "conv2d_1"]
    model = quiet_convert(deploy, outputs=["conv2"])
    model.load_weights(path)
    got = model({"data": to_keras_layout(np.load(inputs)["data"])})
    check_outputs(got, np.load(outputs), ["conv2"])


def test_keras_format_refuses_unsupported_types(tmp_path):
    deploy, weights = _unknown_net(tmp_path)
    with pytest.raises(UnsupportedLayerError, match="keras2-h5 and npz export any net"):
        caffe2keras.export_weights(deploy, weights, tmp_path / "w.weights.h5")
    assert not list(tmp_path.glob("*.h5*"))


def test_converter_without_weights_function(tmp_path, monkeypatch):
    """A converter that sets its layer's weights itself: its blobs go into the keras file
    unchanged (with a warning) when they fit the layer's variables exactly."""
    from caffe2keras.emit import registry

    registry.load_builtin()

    def mix(ctx):
        layer = keras.layers.Dense(4, use_bias=False, name=ctx.name)
        out = ctx.add(layer, ctx.inputs[0])
        if ctx.blobs is not None:
            ctx.set_weights(layer, [ctx.blobs[0]])
        return [out]
    monkeypatch.setitem(registry.CONVERTERS, "Mix", mix)
    rng = np.random.default_rng(5)

    def build(net):
        net.input("data", (2, 4))
        net.layer("ip", "InnerProduct", "data", "ip", inner_product_param={"num_output": 4},
                  blobs=[_rng_blob(rng, 4, 4), _rng_blob(rng, 4)])
        net.layer("mix", "Mix", "ip", "mix", blobs=[_rng_blob(rng, 4, 4)])
    deploy, weights = _write_net(tmp_path, build, "mix")
    with pytest.warns(CaffeWarning, match=r"mix \(Mix, no weights function\)"):
        path = caffe2keras.export_weights(deploy, weights, tmp_path / "w.weights.h5")
    model = quiet_convert(deploy)
    model.load_weights(path)
    ref = quiet_convert(deploy, weights)
    for v, w in zip(model.weights, ref.weights, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(v), keras.ops.convert_to_numpy(w))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("mix").kernel),
                                  load_graph(deploy, weights).nodes[-1].layer.blobs[0])


# ------------------------------------------------------------- keras2-h5, by layer name

def build_lenet():
    x = inp = keras.Input((28, 28, 1))
    x = L.Conv2D(20, 5, name="conv1")(x)
    x = L.MaxPooling2D(2, 2)(x)
    x = L.Conv2D(50, 5, name="conv2")(x)
    x = L.MaxPooling2D(2, 2)(x)
    x = L.Dense(500, activation="relu", name="ip1")(L.Flatten()(x))
    x = L.Softmax()(L.Dense(10, name="ip2")(x))
    return keras.Model(inp, {"prob": x})


def build_cifar10_full():
    x = inp = keras.Input((32, 32, 3))
    x = L.Conv2D(32, 5, padding="same", name="conv1")(x)
    x = CaffePooling2D("max", 3, 2)(x)
    x = LRNWithinChannel(3, alpha=5e-05, beta=0.75)(L.ReLU()(x))
    x = L.Conv2D(32, 5, padding="same", activation="relu", name="conv2")(x)
    x = LRNWithinChannel(3, alpha=5e-05, beta=0.75)(CaffePooling2D("ave", 3, 2)(x))
    x = L.Conv2D(64, 5, padding="same", activation="relu", name="conv3")(x)
    x = CaffePooling2D("ave", 3, 2)(x)
    x = L.Softmax()(L.Dense(10, name="ip1")(L.Flatten()(x)))
    return keras.Model(inp, {"prob": x})


def build_mtcnn_onet():
    x = inp = keras.Input((48, 48, 3))
    for i, (c, pool) in enumerate([(32, 3), (64, 3), (64, 2)], 1):
        x = L.Conv2D(c, 3, name=f"conv{i}")(x)
        x = L.PReLU(shared_axes=[1, 2], name=f"prelu{i}")(x)
        x = CaffePooling2D("max", pool, 2)(x)
    x = L.Conv2D(128, 2, name="conv4")(x)
    x = L.PReLU(shared_axes=[1, 2], name="prelu4")(x)
    x = L.Dense(256, name="conv5")(L.Flatten()(x))
    x = L.PReLU(name="prelu5")(x)
    return keras.Model(inp, {"prob1": L.Softmax()(L.Dense(2, name="conv6-1")(x)),
                             "conv6-2": L.Dense(4, name="conv6-2")(x),
                             "conv6-3": L.Dense(10, name="conv6-3")(x)})


def build_batchnorm_scale():
    x = inp = keras.Input((6, 6, 3))
    x = L.Conv2D(5, 3, name="conv")(x)
    conv = L.BatchNormalization(epsilon=0.001, name="bn")(x)  # bn + sc, in place on conv
    sc2 = L.BatchNormalization(epsilon=1e-5, name="bn2")(conv)  # bn2 + sc2 (no bias)
    return keras.Model(inp, {"conv": conv, "sc2": sc2})


def build_conv_depthwise():
    x = inp = keras.Input((10, 10, 6))
    dw = L.DepthwiseConv2D(3, strides=2, name="dw")(L.ZeroPadding2D(1)(x))
    return keras.Model(inp, {"dw": dw, "pw": L.Conv2D(4, 1, name="pw")(dw)})


def build_conv_group():
    x = inp = keras.Input((9, 9, 8))
    c1 = L.Conv2D(12, 3, groups=4, name="c1")(x)
    return keras.Model(inp, {"c1": c1, "c2": L.Conv2D(6, 3, padding="same", groups=2,
                                                       name="c2")(c1)})


def build_deconv():
    x = inp = keras.Input((6, 7, 4))
    up = L.Cropping2D(1)(L.Conv2DTranspose(5, 4, strides=2, name="up")(x))
    return keras.Model(inp, {"up": up,
                             "up2": L.Conv2DTranspose(3, 3, use_bias=False, name="up2")(up)})


def build_deconv_group_bilinear():
    x = inp = keras.Input((5, 5, 6))
    up = L.Cropping2D(1)(L.Conv2DTranspose(6, 4, strides=2, use_bias=False, name="up")(x))
    up2 = L.Cropping2D(2)(L.Conv2DTranspose(4, 3, strides=3, name="up2")(up))
    return keras.Model(inp, {"up": up, "up2": up2})


def build_fc_after_conv():
    x = inp = keras.Input((8, 8, 3))
    x = L.MaxPooling2D(2)(L.Conv2D(4, 3, name="conv")(x))
    fc1 = L.ReLU()(L.Dense(10, name="fc1")(L.Flatten()(x)))
    return keras.Model(inp, {"fc1": fc1, "fc2": L.Dense(5, name="fc2")(fc1)})


HAND_BUILT = {
    ("model", "lenet_mnist_v2"): build_lenet,
    ("model", "cifar10_full_v1"): build_cifar10_full,
    ("model", "mtcnn_det3"): build_mtcnn_onet,
    ("conformance", "batchnorm_scale"): build_batchnorm_scale,
    ("conformance", "conv_depthwise"): build_conv_depthwise,
    ("conformance", "conv_group"): build_conv_group,
    ("conformance", "deconv"): build_deconv,
    ("conformance", "deconv_group_bilinear"): build_deconv_group_bilinear,
    ("conformance", "fc_after_conv"): build_fc_after_conv,
}


@pytest.mark.parametrize("kind,name", sorted(HAND_BUILT))
def test_keras2_h5_loads_by_name_into_hand_built_model(kind, name, tmp_path):
    deploy, weights, inputs, outputs = fixture_files(kind, name)
    path = quiet_export(deploy, weights, tmp_path / "w.h5")
    model = HAND_BUILT[kind, name]()
    with h5py.File(path, "r") as f:  # every weighted layer of the model is in the file
        assert {lay.name for lay in model.layers if lay.weights} == \
            {n.decode() for n in f.attrs["layer_names"]}
    model.load_weights(path, by_name=True)
    feed = np.load(inputs)
    got = model(to_keras_layout(feed["data"]))
    check_outputs(got, np.load(outputs), list(got))


def test_keras2_h5_layout_is_keras_legacy(tmp_path):
    """Root layer_names/backend/keras_version, per layer weight_names and datasets, read
    by Keras's own legacy by-name loader."""
    from caffe2keras.keras_compat import legacy_h5_loader
    legacy_h5_format = legacy_h5_loader()

    deploy, weights, inputs, outputs = model_files("lenet_mnist_v2")
    path = quiet_export(deploy, weights, tmp_path / "w.hdf5")
    with h5py.File(path, "r") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        assert names == ["conv1", "conv2", "ip1", "ip2"]
        assert f.attrs["backend"] in (b"tensorflow", "tensorflow")
        assert f.attrs["keras_version"]
        assert [n.decode() for n in f["ip1"].attrs["weight_names"]] == ["ip1/kernel", "ip1/bias"]
        assert f["ip1/ip1/kernel"].shape == (800, 500)
        model = build_lenet()
        legacy_h5_format.load_weights_from_hdf5_group_by_name(f, model)
    got = model(to_keras_layout(np.load(inputs)["data"]))
    check_outputs(got, np.load(outputs), ["prob"])


def test_keras2_h5_batchnorm_values(tmp_path):
    """Caffe's stored sums divided by its scale factor (0.999 and 37.5 here); gamma/beta
    from the Scale (beta 0 when it has no bias); a lone BatchNorm gets gamma 1, beta 0."""
    deploy, weights, _, _ = conformance_files("batchnorm_scale")
    graph = load_graph(deploy, weights)
    blobs = {n.name: n.layer.blobs for n in graph.nodes}
    path = quiet_export(deploy, weights, tmp_path / "w.h5")
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == ["conv", "bn", "bn2"]
        for bn, sc in (("bn", "sc"), ("bn2", "sc2")):
            g = f[bn][bn]
            factor = np.float32(blobs[bn][2][0])
            assert factor in (np.float32(0.999), np.float32(37.5))
            np.testing.assert_array_equal(g["moving_mean"][()],
                                          blobs[bn][0] * (np.float32(1) / factor))
            np.testing.assert_array_equal(g["moving_variance"][()],
                                          blobs[bn][1] * (np.float32(1) / factor))
            np.testing.assert_array_equal(g["gamma"][()], blobs[sc][0])
            beta = blobs[sc][1] if len(blobs[sc]) > 1 else np.zeros(5, np.float32)
            np.testing.assert_array_equal(g["beta"][()], beta)

    def lone_bn(net):
        net.input("data", (1, 2, 3, 3))
        net.layer("bn", "BatchNorm", "data", "bn",
                  blobs=[np.array([1, 2], np.float32), np.array([3, 4], np.float32),
                         np.array([0], np.float32)])
    deploy, weights = _write_net(tmp_path, lone_bn, "lone")
    path = quiet_export(deploy, weights, tmp_path / "lone.h5")
    with h5py.File(path, "r") as f:
        g = f["bn/bn"]
        np.testing.assert_array_equal(g["gamma"][()], [1, 1])
        np.testing.assert_array_equal(g["beta"][()], [0, 0])
        np.testing.assert_array_equal(g["moving_mean"][()], [0, 0])  # factor 0 -> 0
        np.testing.assert_array_equal(g["moving_variance"][()], [0, 0])


def test_keras2_h5_names_keras_accepts(tmp_path):
    """A Caffe name Keras refuses ('conv1/dw') is written as Keras would name the layer."""
    rng = np.random.default_rng(0)

    def net_with_slash(net):
        net.input("data", (1, 2, 5, 5))
        _conv(net, rng, "conv1/dw", "data", 2, 3)
    deploy, weights = _write_net(tmp_path, net_with_slash, "slash")
    path = quiet_export(deploy, weights, tmp_path / "w.h5")
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == ["conv1_dw"]
        assert f["conv1_dw/conv1_dw/kernel"].shape == (3, 3, 2, 3)


def test_long_layer_name_lists_split_like_keras(tmp_path):
    from caffe2keras.keras_compat import legacy_h5_loader
    load_attributes_from_hdf5_group = legacy_h5_loader().load_attributes_from_hdf5_group

    names = [f"layer_with_a_long_name_{i:05d}" for i in range(5000)]
    with h5py.File(tmp_path / "a.h5", "w") as f:
        sinks.set_list_attr(f, "layer_names", names)
        assert "layer_names" not in f.attrs and "layer_names0" in f.attrs
        assert load_attributes_from_hdf5_group(f, "layer_names") == names


# ------------------------------------------------------------------------ npz, pickle

@pytest.mark.parametrize("kind,name", ALL_FIXTURES)
def test_npz_and_pickle_hold_the_caffe_blobs(kind, name, tmp_path):
    deploy, weights, _, _ = fixture_files(kind, name)
    graph = load_graph(deploy, weights)
    raw = load_caffemodel(weights)
    blobs = {n.name: n.layer.blobs for n in graph.nodes if n.layer.blobs}
    npz = quiet_export(deploy, weights, tmp_path / "w.npz")
    with np.load(npz, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(f"{n}/{i}" for n, bs in blobs.items()
                                         for i in range(len(bs)))
        for n, bs in blobs.items():
            for i, b in enumerate(bs):
                a = z[f"{n}/{i}"]
                assert a.dtype == b.dtype and a.shape == b.shape
                assert a.tobytes() == raw.layers[n].blobs[i].data.tobytes()
    pkl = quiet_export(deploy, weights, tmp_path / "w.pkl")
    assert pickle_globals(pkl) <= ALLOWED_GLOBALS
    layers = load_trusted_pickle(pkl)
    assert [d["name"] for d in layers] == [n.name for n in graph.nodes]
    for d, node in zip(layers, graph.nodes):
        assert d["type"] == node.type
        assert d["bottoms"] == node.layer.bottoms and d["tops"] == node.layer.tops
        assert len(d["weights"]) == len(node.layer.blobs)
        for a, b in zip(d["weights"], node.layer.blobs):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
            assert a.flags.writeable


def test_double_blobs_stay_double(tmp_path):
    rng = np.random.default_rng(1)
    net = CaffeNetWriter("d")
    net.input("data", (1, 2, 4, 4))
    _conv(net, rng, "c", "data", 2, 3)
    deploy, weights = tmp_path / "d.prototxt", tmp_path / "d.caffemodel"
    net.write_prototxt(deploy)
    net.write_caffemodel(weights, double=True)
    with np.load(quiet_export(deploy, weights, tmp_path / "w.npz")) as z:
        assert z["c/0"].dtype == np.float64
    layers = load_trusted_pickle(quiet_export(deploy, weights, tmp_path / "w.pkl"))
    assert layers[0]["weights"][0].dtype == np.float64
    with h5py.File(quiet_export(deploy, weights, tmp_path / "w.h5"), "r") as f:
        assert f["c/c/kernel"].dtype == np.float32  # Keras layers hold float32


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([{"x": print}]))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_trusted_pickle(path)


@pytest.mark.parametrize("kind,name", [("model", "mtcnn_det3"),
                                       ("conformance", "batchnorm_scale"),
                                       ("conformance", "deconv_group_bilinear")])
def test_npz_keras_layout_is_keras2_h5(kind, name, tmp_path):
    deploy, weights, _, _ = fixture_files(kind, name)
    h5 = quiet_export(deploy, weights, tmp_path / "w.h5")
    npz = quiet_export(deploy, weights, tmp_path / "w.npz", layout="keras")
    with h5py.File(h5, "r") as f, np.load(npz) as z:
        layers = [n.decode() for n in f.attrs["layer_names"]]
        want = {}
        for lay in layers:
            for i, w in enumerate(f[lay].attrs["weight_names"]):
                want[f"{lay}/{i}"] = f[lay][w.decode()][()]
        assert sorted(z.files) == sorted(want)
        for k, v in want.items():
            assert np.array_equal(z[k], v), k


# ------------------------------------------------------------------- unknown layer types

def _unknown_net(tmp_path):
    rng = np.random.default_rng(3)

    def build(net):
        net.input("data", (1, 2, 6, 6))
        _conv(net, rng, "c1", "data", 2, 3)
        net.layer("fancy", "FancyLayer", "c1", "fancy",
                  blobs=[_rng_blob(rng, 3, 2), _rng_blob(rng, 4)])
        _conv(net, rng, "c2", "fancy", 3, 2, k=1)
        net.layer("ip", "InnerProduct", "c2", "ip", inner_product_param={"num_output": 2},
                  blobs=[_rng_blob(rng, 2, 32), _rng_blob(rng, 2)])
    return _write_net(tmp_path, build, "unknown")


def test_unknown_types_pass_through_with_a_warning(tmp_path):
    deploy, weights = _unknown_net(tmp_path)
    graph = load_graph(deploy, weights)
    blobs = {n.name: n.layer.blobs for n in graph.nodes}
    with pytest.warns(CaffeWarning, match=r"fancy \(FancyLayer, no weights function\).*"
                                          r"ip \(InnerProduct, input shape unknown\)"):
        path = caffe2keras.export_weights(deploy, weights, tmp_path / "w.h5")
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == ["c1", "fancy", "c2", "ip"]
        np.testing.assert_array_equal(f["fancy/fancy/0"][()], blobs["fancy"][0])
        np.testing.assert_array_equal(f["fancy/fancy/1"][()], blobs["fancy"][1])
        np.testing.assert_array_equal(f["ip/ip/0"][()], blobs["ip"][0])  # unchanged
        # after the unknown layer, a conv still gets its Keras layout (from its blob)
        np.testing.assert_array_equal(f["c2/c2/kernel"][()],
                                      blobs["c2"][0].transpose(2, 3, 1, 0))


def test_skip_unknown_leaves_them_out(tmp_path):
    deploy, weights = _unknown_net(tmp_path)
    with pytest.warns(CaffeWarning, match=r"left out 2 layer\(s\).*fancy \(FancyLayer\)"):
        path = caffe2keras.export_weights(deploy, weights, tmp_path / "w.h5",
                                          skip_unknown=True)
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == ["c1", "c2"]
    with pytest.warns(CaffeWarning, match="left out"):
        npz = caffe2keras.export_weights(deploy, weights, tmp_path / "w.npz",
                                         skip_unknown=True)
    with np.load(npz) as z:  # Caffe layout: only types without any Keras layout go
        assert sorted(z.files) == ["c1/0", "c1/1", "c2/0", "c2/1", "ip/0", "ip/1"]


# --------------------------------------------------------------- streaming in slices

@pytest.mark.parametrize("kind,name", [("model", "lenet_mnist_v2"), ("model", "mtcnn_det3"),
                                       ("conformance", "conv_depthwise"),
                                       ("conformance", "fc_after_conv")])
def test_slices_give_the_same_files(kind, name, tmp_path, monkeypatch):
    """Writing in slices of a few output channels changes no value: each format, with
    slices of 16 bytes against whole layers."""
    deploy, weights, _, _ = fixture_files(kind, name)
    whole = {fmt: quiet_export(deploy, weights, tmp_path / f"whole{suf}", format=fmt)
             for fmt, suf in (("keras", ".weights.h5"), ("keras2-h5", ".h5"))}
    monkeypatch.setattr(slicing, "BLOCK_BYTES", 16)
    sliced = {fmt: quiet_export(deploy, weights, tmp_path / f"sliced{suf}", format=fmt)
              for fmt, suf in (("keras", ".weights.h5"), ("keras2-h5", ".h5"))}
    chunked = 0
    for fmt, whole_path in whole.items():
        a, b = _datasets(whole_path), _datasets(sliced[fmt])
        assert a.keys() == b.keys()
        for k, (arr, _) in a.items():
            assert np.array_equal(arr, b[k][0]), (fmt, k)
        chunked += sum(c is not None for _, c in b.values())
    assert chunked  # the sliced path did run
    npz_whole = quiet_export(deploy, weights, tmp_path / "s.npz", layout="keras")
    with np.load(npz_whole) as z, h5py.File(whole["keras2-h5"], "r") as f:
        for lay in (n.decode() for n in f.attrs["layer_names"]):
            for i, w in enumerate(f[lay].attrs["weight_names"]):
                assert np.array_equal(z[f"{lay}/{i}"], f[lay][w.decode()][()])


def _datasets(path):
    """{path: (values, chunk shape)} of every dataset in an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.update({n: (o[()], o.chunks)})
                     if isinstance(o, h5py.Dataset) else None)
    return out


def test_compute_checks_that_slicing_commutes(monkeypatch):
    """A function that does not act row by row (or fails on slices) runs whole."""
    deploy, weights, _, _ = model_files("lenet_mnist_v2")
    graph = load_graph(deploy, weights)
    step = next(s for s in make_plan(graph) if s.name == "ip1")
    from caffe2keras.emit.context import LayerContext
    ctx = LayerContext(step, graph)
    monkeypatch.setattr(slicing, "BLOCK_BYTES", 4096)
    w = ctx.layer.blobs[0]

    def mixes_rows(c):  # depends on the slice's own statistics: not row by row
        return {"ip1": [c.blobs[0] - c.blobs[0].mean(axis=0)]}

    def needs_all_rows(c):
        return {"ip1": [c.blobs[0].reshape(500, -1).T]}

    def row_by_row(c):
        return {"ip1": [c.blobs[0].T * 2, c.blobs[1]]}

    for fn, want in ((mixes_rows, [w - w.mean(axis=0)]), (needs_all_rows, [w.T]),
                     (row_by_row, [w.T * 2, ctx.layer.blobs[1]])):
        res = export.compute(fn, ctx)
        got = {}
        for part in res.blocks():
            for key, (lo, hi, block) in part.items():
                got.setdefault(key, []).append((lo, block))
        for i, arr in enumerate(want):
            axis = res.axes["ip1", i]
            blocks = [b for _, b in sorted(got["ip1", i], key=lambda t: t[0])]
            full = blocks[0] if axis is None else np.concatenate(blocks, axis=axis)
            np.testing.assert_array_equal(full, arr.astype(np.float32))
        sliced = any(a is not None for a in res.axes.values())
        assert sliced == (fn is row_by_row), fn.__name__


# ------------------------------------------------------------------- files and options

@pytest.mark.parametrize("fmt,name,target", [
    ("keras", "w.weights.h5", "compute"), ("keras2-h5", "w.h5", "compute"),
    ("npz", "w.npz", "stream_raw"), ("pickle", "w.pkl", "reducer_override")])
def test_interrupted_export_leaves_no_file(fmt, name, target, tmp_path, monkeypatch):
    """Ctrl-C in the middle (at the third layer or array): no partial file, no temporary
    file, and an existing file of that name untouched."""
    deploy, weights, _, _ = model_files("lenet_mnist_v2")
    out = tmp_path / name
    out.write_bytes(b"previous")
    owner = {"compute": slicing, "stream_raw": sinks, "reducer_override": pickled._Pickler}[target]
    original = getattr(owner, target)
    calls = []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, target, interrupting)
    with pytest.raises(KeyboardInterrupt):
        quiet_export(deploy, weights, out, format=fmt)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_format_from_suffix_and_option_errors(tmp_path):
    deploy, weights, _, _ = conformance_files("conv_basic")
    for name, fmt in (("a.weights.h5", "keras"), ("a.h5", "keras2-h5"), ("a.hdf5", "keras2-h5"),
                      ("a.npz", "npz"), ("a.pkl", "pickle"), ("a.pickle", "pickle")):
        assert export._pick_format(tmp_path / name, None) == fmt
    with pytest.raises(CaffeFormatError, match="cannot tell the format"):
        caffe2keras.export_weights(deploy, weights, tmp_path / "a.bin")
    with pytest.raises(CaffeFormatError, match="must end in .weights.h5"):
        caffe2keras.export_weights(deploy, weights, tmp_path / "a.h5", format="keras")
    with pytest.raises(CaffeFormatError, match="but not .weights.h5"):
        caffe2keras.export_weights(deploy, weights, tmp_path / "a.weights.h5",
                                   format="keras2-h5")
    with pytest.raises(ValueError, match="layout='keras' is for the npz format"):
        caffe2keras.export_weights(deploy, weights, tmp_path / "a.h5", layout="keras")
    with pytest.raises(ValueError, match="outputs= only applies to the keras format"):
        caffe2keras.export_weights(deploy, weights, tmp_path / "a.npz", outputs=["conv"])
    with pytest.raises(CaffeFormatError, match="no such file"):
        caffe2keras.export_weights(deploy, tmp_path / "missing.caffemodel", tmp_path / "a.npz")
    # the binary npz format needs its suffix no more than pickle does
    out = caffe2keras.export_weights(deploy, weights, tmp_path / "weights.data", format="npz")
    assert out == tmp_path / "weights.data" and np.load(out).files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_verbose_lists_each_layer(tmp_path):
    deploy, weights, _, _ = model_files("lenet_mnist_v1")
    lines = []
    quiet_export(deploy, weights, tmp_path / "w.weights.h5", verbose=True, log=lines.append)
    assert lines == [
        "conv1 (Convolution): [(20,1,5,5), (20)] -> layers/conv2d: [(5,5,1,20), (20)]",
        "conv2 (Convolution): [(50,20,5,5), (50)] -> layers/conv2d_1: [(5,5,20,50), (50)]",
        "ip1 (InnerProduct): [(500,800), (500)] -> layers/dense: [(800,500), (500)]",
        "ip2 (InnerProduct): [(10,500), (10)] -> layers/dense_1: [(500,10), (10)]",
    ]
    lines.clear()
    quiet_export(deploy, weights, tmp_path / "w.npz", verbose=True, log=lines.append)
    assert lines[0] == "conv1 (Convolution): [(20,1,5,5), (20)] -> conv1/*: [(20,1,5,5), (20)]"
