"""The public API: convert(), outputs, naming, fresh weights, saving, custom converters."""
import subprocess
import sys

import numpy as np
import pytest

import caffe2keras
from caffe2keras.errors import UnsupportedLayerError
from caffe2keras.net import parse_net

from .shared import (
    PROTOTXT_ONLY,
    ROOT,
    assert_blob_close,
    conformance_files,
    model_files,
    quiet_convert,
    to_caffe_layout,
    to_keras_layout,
    to_numpy,
)


def test_default_outputs_are_the_nets_outputs_keyed_by_blob_name():
    deploy, weights, inputs, outputs = model_files("mtcnn_det3")
    model = quiet_convert(deploy, weights)
    golden = np.load(outputs)
    feed = np.load(inputs)
    got = model({"data": to_keras_layout(feed["data"])})
    assert sorted(got) == ["conv6-2", "conv6-3", "prob1"]  # conv6-1 feeds prob1
    for k, v in got.items():
        assert_blob_close(to_caffe_layout(v), golden[k], k)


def test_feature_extractor_outputs():
    deploy, weights, inputs, outputs = model_files("lenet_mnist_v2")
    model = quiet_convert(deploy, weights, outputs=["ip1", "pool2"])
    feed = np.load(inputs)
    got = model({"data": to_keras_layout(feed["data"])})
    assert sorted(got) == ["ip1", "pool2"]
    golden = np.load(outputs)
    assert_blob_close(to_caffe_layout(got["pool2"]), golden["pool2"], "pool2")
    assert_blob_close(to_numpy(got["ip1"]), golden["ip1"], "ip1")  # in place: after relu1


def test_unknown_output_blob_is_named():
    deploy, weights, _, _ = model_files("lenet_mnist_v2")
    with pytest.raises(KeyError, match="fc7"):
        quiet_convert(deploy, weights, outputs=["fc7"])


def test_fresh_weights_build_and_run_with_odd_blob_names():
    model = quiet_convert(PROTOTXT_ONLY / "bvlc_googlenet_deploy.prototxt", None,
                     outputs=["inception_3a/1x1", "prob"],
                     input_shapes={"data": (1, 3, 224, 224)})
    x = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype("float32")
    got = model({"data": x})
    assert set(got) == {"inception_3a/1x1", "prob"}
    assert tuple(got["inception_3a/1x1"].shape) == (1, 28, 28, 64)
    assert np.allclose(to_numpy(got["prob"]).sum(-1), 1, atol=1e-5)


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    import keras

    from caffe2keras.saving import save_model

    deploy, weights, inputs, _outputs = model_files("ultraface_rfb320")
    model = quiet_convert(deploy, weights)
    path = save_model(model, tmp_path / "m.keras")
    loaded = keras.saving.load_model(path, safe_mode=True)
    feed = {"input": to_keras_layout(np.load(inputs)["input"])}
    a, b = model(feed), loaded(feed)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(to_numpy(a[k]), to_numpy(b[k]))


def test_keras_file_loads_in_a_fresh_process_after_import(tmp_path):
    from caffe2keras.saving import save_model

    deploy, weights, _, _ = conformance_files("pool_ave_pad")
    save_model(quiet_convert(deploy, weights), tmp_path / "m.keras")
    code = ("import caffe2keras, keras; "
            f"m = keras.saving.load_model({str(tmp_path / 'm.keras')!r}, safe_mode=True); "
            "print(sorted(m.output_names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert "p1" in out.stdout


def test_unsupported_layers_are_all_listed_before_building():
    net = parse_net('''
        input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
        layer { name: "a" type: "Frobnicate" bottom: "data" top: "a" }
        layer { name: "r" type: "ReLU" bottom: "a" top: "r" }
        layer { name: "b" type: "Python" bottom: "r" top: "b" }
    ''', "t.prototxt")
    from caffe2keras.emit.builder import build_model
    from caffe2keras.graph import build_graph

    with pytest.raises(UnsupportedLayerError) as e:
        build_model(build_graph(net))
    msg = str(e.value)
    assert "a (Frobnicate)" in msg and "b (Python)" in msg and "register_converter" in msg


def test_register_converter_adds_a_type_with_or_without_a_shape_function():
    import keras

    from caffe2keras.emit.builder import build_model
    from caffe2keras.emit.registry import unregister
    from caffe2keras.graph import build_graph

    def same_shape(layer, bottoms):
        return [bottoms[0]], []

    def double(ctx):
        return [ctx.add(keras.layers.Rescaling(2.0, name=ctx.name), ctx.inputs[0])]

    text = '''
        input: "data" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }
        layer { name: "d" type: "Double" bottom: "data" top: "d" }
        layer { name: "p" type: "Pooling" bottom: "d" top: "p"
                pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    '''
    x = np.arange(18, dtype="float32").reshape(1, 3, 3, 2)
    try:
        for shape_fn in (same_shape, None):
            unregister("Double")
            caffe2keras.register_converter("Double", shape=shape_fn)(double)
            graph = build_graph(parse_net(text, "t.prototxt"))
            model = build_model(graph)
            got = to_numpy(model({"data": x})["p"])
            # ceil mode: 3x3 pooled 2/2 -> 2x2, the last window clipped to the edge
            np.testing.assert_allclose(got[0, :, :, 0], [[16, 20], [28, 32]])
            assert graph.shape("p") == (1, 2, 2, 2)
    finally:
        unregister("Double")


def test_importing_and_inspecting_does_not_import_keras():
    code = ("import sys, caffe2keras; from caffe2keras.support import supported_types; "
            "assert 'Convolution' in supported_types(); "
            "from caffe2keras.cli import main; main(['inspect', sys.argv[1]]); "
            "assert 'keras' not in sys.modules, 'keras imported'")
    subprocess.run([sys.executable, "-c", code, str(model_files("mtcnn_det1")[0])],
                   check=True, capture_output=True, cwd=ROOT)


def test_weights_after_a_custom_type_without_shape_function_are_fitted(tmp_path):
    import keras

    from caffe2keras.emit.registry import CONVERTERS
    from caffe2keras.writer import CaffeNetWriter

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((5, 12)).astype("f4"), rng.standard_normal(5).astype("f4")
    net = CaffeNetWriter("t")
    net.input("data", (2, 3, 2, 2))
    net.layer("d", "Double", "data", "d")
    net.layer("fc", "InnerProduct", "d", "fc", inner_product_param={"num_output": 5},
              blobs=[w, b])
    net.write_prototxt(tmp_path / "d.prototxt")
    net.write_caffemodel(tmp_path / "w.caffemodel", legacy_dims=True)  # (1, 1, 5, 12)

    @caffe2keras.register_converter("Double")
    def double(ctx):
        return [ctx.add(keras.layers.Rescaling(2.0, name=ctx.name), ctx.inputs[0])]

    try:
        model = quiet_convert(tmp_path / "d.prototxt", tmp_path / "w.caffemodel")
        x = rng.standard_normal((2, 3, 2, 2)).astype("f4")
        got = to_numpy(model({"data": to_keras_layout(x)})["fc"])
        np.testing.assert_allclose(got, (2 * x).reshape(2, -1) @ w.T + b, rtol=1e-5, atol=1e-5)
        bad = CaffeNetWriter("t")
        bad.input("data", (2, 3, 2, 2))
        bad.layer("d", "Double", "data", "d")
        bad.layer("fc", "InnerProduct", "d", "fc", inner_product_param={"num_output": 5},
                  blobs=[w[:, :10], b])
        bad.write_caffemodel(tmp_path / "bad.caffemodel")
        with pytest.raises(caffe2keras.CaffeFormatError, match=r"fc.*\[5, 10\].*\[5, 12\]"):
            quiet_convert(tmp_path / "d.prototxt", tmp_path / "bad.caffemodel")
    finally:
        CONVERTERS.pop("Double", None)


def test_python_layers_are_listed_with_their_module_and_class():
    net = parse_net('''
        input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
        layer { name: "prop" type: "Python" bottom: "data" top: "rois"
                python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" } }
    ''', "t.prototxt")
    from caffe2keras.emit.builder import build_model
    from caffe2keras.graph import build_graph

    with pytest.raises(UnsupportedLayerError) as e:
        build_model(build_graph(net))
    msg = str(e.value)
    assert "prop (Python:rpn.proposal_layer.ProposalLayer)" in msg
    assert 'register_converter("Python", module="rpn.proposal_layer", ' \
           'layer="ProposalLayer")' in msg


def test_a_user_registers_a_converter_for_one_python_layer_class():
    import keras

    from caffe2keras.emit.registry import unregister

    text = '''
        input: "data" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }
        layer { name: "twice" type: "Python" bottom: "data" top: "t"
                python_param { module: "my.layers" layer: "Double" } }
        layer { name: "other" type: "Python" bottom: "t" top: "o"
                python_param { module: "my.layers" layer: "Triple" } }
    '''
    from caffe2keras.emit.builder import build_model
    from caffe2keras.graph import build_graph

    @caffe2keras.register_converter("Python", module="my.layers", layer="Double")
    def double(ctx):
        assert ctx.layer.param("python_param").layer == "Double"
        return [ctx.add(keras.layers.Rescaling(2.0, name=ctx.name), ctx.inputs[0])]

    try:
        with pytest.raises(UnsupportedLayerError, match=r"other \(Python:my.layers.Triple\)"):
            build_model(build_graph(parse_net(text, "t.prototxt")))
        caffe2keras.register_converter("Python", module="my.layers", layer="Triple")(
            lambda ctx: [ctx.add(keras.layers.Rescaling(3.0, name=ctx.name), ctx.inputs[0])])
        model = build_model(build_graph(parse_net(text, "t.prototxt")))
        x = np.arange(18, dtype="float32").reshape(1, 3, 3, 2)
        np.testing.assert_allclose(to_numpy(model({"data": x})["o"]), 6 * x)
    finally:
        unregister("Python:my.layers.Double", "Python:my.layers.Triple")
    with pytest.raises(TypeError, match="module= and layer= go with the type"):
        caffe2keras.register_converter("Python", module="my.layers")


def _peak_rss_reset():
    """Restart VmHWM from the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _conv_ip_net(tmp_path, name, channels, n_out):
    from caffe2keras.writer import CaffeNetWriter

    rng = np.random.default_rng(0)
    w = CaffeNetWriter(name)
    w.input("data", (1, channels, 8, 8))
    w.layer("conv", "Convolution", "data", "conv",
            convolution_param={"num_output": channels, "kernel_size": [3], "pad": [1]},
            blobs=[rng.standard_normal((channels, channels, 3, 3), np.float32),
                   np.zeros(channels, np.float32)])
    w.layer("ip", "InnerProduct", "conv", "ip", inner_product_param={"num_output": n_out},
            blobs=[rng.standard_normal((n_out, channels * 64), np.float32),
                   np.zeros(n_out, np.float32)])
    w.write_prototxt(tmp_path / f"{name}.prototxt")
    w.write_caffemodel(tmp_path / f"{name}.caffemodel")
    return tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"


def test_convert_holds_each_weight_once(tmp_path):
    """Peak memory of convert() grows by about the caffemodel's size (issue 12: at most
    1.3x): each kernel is transposed once into a buffer its variable takes over. Before,
    TensorFlow grew by 3x a 64 MB file and torch by 2x."""
    import gc
    import os

    if not _peak_rss_reset():
        pytest.skip("peak RSS cannot be reset here (needs Linux /proc/self/clear_refs)")
    small = _conv_ip_net(tmp_path, "small", 4, 8)
    deploy, weights = _conv_ip_net(tmp_path, "big", 64, 4096)   # a 64 MB InnerProduct
    caffe2keras.convert(*small)  # the backend's first-use allocations are not ours
    gc.collect()
    _peak_rss_reset()
    before = _status_bytes("VmRSS")
    model = caffe2keras.convert(deploy, weights)
    growth = (_status_bytes("VmHWM") - before) / os.path.getsize(weights)
    assert growth <= 1.3, f"convert() grew peak memory by {growth:.2f}x the caffemodel"
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 64)).astype(np.float32)
    assert np.isfinite(to_numpy(model({"data": x})["ip"])).all()
