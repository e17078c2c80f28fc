"""codegen: generated Keras code builds the same model as convert() (same outputs up
to float32 rounding), passes ruff, runs."""
import importlib.util
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import caffe2keras
from caffe2keras.cli import main
from caffe2keras.codegen import generate_source, identifier, literal, write_python
from caffe2keras.preprocess import Preprocessor
from caffe2keras.writer import CaffeNetWriter

from .shared import ROOT, conformance_files, model_files, to_keras_layout

# Cases with multi-output layers (Slice), two inputs (Crop), fused BatchNorm+Scale,
# Caffe pooling (strides default to pool_size in Keras), custom layers, V1 files.
CASES = ["concat_slice_split", "crop", "batchnorm_scale", "pool_max_pad", "pool_ave_pad",
         "deconv_group_bilinear", "lrn_across", "reshape_flatten", "argmax_reduction",
         "activations", "legacy_v1"]
MODELS = ["lenet_mnist_v1", "mtcnn_det4", "open_nsfw"]


def _np(x):
    import keras
    return keras.ops.convert_to_numpy(x)


def _same(got, want, name=""):
    """Same model, same weights: equal up to float32 rounding (torch may pick other
    kernels for weights loaded from a file than for weights set from arrays)."""
    got, want = _np(got), _np(want)
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * scale, err_msg=name)


def _import(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_same_as_convert(files, tmp_path, name):
    deploy, weights, inputs, _ = files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, weights_path = write_python(deploy, tmp_path / f"{name}.py", weights,
                                           outputs="all")
    assert weights_path == tmp_path / f"{name}.weights.h5" and weights_path.exists()
    module = _import(tmp_path / f"{name}.py", f"generated_{name}")
    built = module.build_model()
    assert [layer.name for layer in built.layers] == [layer.name for layer in model.layers]
    feed = np.load(inputs)
    x = {k: to_keras_layout(feed[k]) for k in feed.files}
    want, got = model(x), built(x)
    assert sorted(got) == sorted(want)
    for blob in want:
        _same(got[blob], want[blob], blob)
    return tmp_path / f"{name}.py"


def _ruff(paths):
    ruff = shutil.which("ruff") or str(ROOT / ".venv" / "bin" / "ruff")
    if not shutil.which(ruff):
        pytest.skip("ruff not installed")
    # --isolated: the user's default rules, not this project's configuration
    return subprocess.run([ruff, "check", "--isolated", *map(str, paths)],
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize("case", CASES)
def test_generated_code_equals_convert_on_conformance_cases(case, tmp_path):
    path = _check_same_as_convert(conformance_files(case), tmp_path, case)
    proc = _ruff([path])
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("key", MODELS)
def test_generated_code_equals_convert_on_real_models(key, tmp_path):
    path = _check_same_as_convert(model_files(key), tmp_path, key)
    proc = _ruff([path])
    assert proc.returncode == 0, proc.stdout
    source = path.read_text()
    if key == "open_nsfw":
        # one statement per layer; the fused pairs name both Caffe layers
        assert "# Caffe BatchNorm 'bn_1' + Scale 'scale_1'" in source
        assert 'conv_1 = keras.layers.Conv2D(64, (7, 7), strides=(2, 2), name="conv_1")' \
            in source
        assert "from caffe2keras.emit.layers.pooling import CaffePooling2D" in source


def test_generated_file_runs_as_a_script(tmp_path):
    deploy, weights, _, _ = conformance_files("conv_group")
    write_python(deploy, tmp_path / "model.py", weights)
    proc = subprocess.run([sys.executable, str(tmp_path / "model.py")], capture_output=True,
                          text=True, cwd=tmp_path.parent, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "conv_group: 3 layers, 558 parameters" in proc.stdout


def test_shared_layer_and_sanitised_names(tmp_path):
    """A convolution with two bottoms shares its weights (one Keras layer called twice);
    blob and layer names that are not Python identifiers become variables, with the
    Caffe name in a comment where the Keras name differs."""
    rng = np.random.default_rng(0)
    w = CaffeNetWriter("shared")
    w.input("in/a", (1, 2, 5, 5))
    w.input("in-b", (1, 2, 5, 5))
    w.layer("conv/1", "Convolution", ["in/a", "in-b"], ["x/a", "x/b"],
            convolution_param={"num_output": 3, "kernel_size": 3},
            blobs=[rng.standard_normal((3, 2, 3, 3)).astype("f4"),
                   rng.standard_normal(3).astype("f4")])
    w.layer("sum", "Eltwise", ["x/a", "x/b"], "class")
    w.write_prototxt(tmp_path / "deploy.prototxt")
    w.write_caffemodel(tmp_path / "w.caffemodel")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = write_python(tmp_path / "deploy.prototxt", tmp_path / "shared.py",
                                tmp_path / "w.caffemodel")
    source = (tmp_path / "shared.py").read_text()
    assert "# Caffe Convolution 'conv/1'" in source
    assert source.count("keras.layers.Conv2D(") == 1
    assert "conv_1_layer = keras.layers.Conv2D(" in source
    built = _import(tmp_path / "shared.py", "generated_shared").build_model()
    x = {"in/a": rng.standard_normal((2, 5, 5, 2)).astype("f4"),
         "in-b": rng.standard_normal((2, 5, 5, 2)).astype("f4")}
    _same(built(x)["class"], model(x)["class"])
    assert _ruff([tmp_path / "shared.py"]).returncode == 0


def test_preprocessing_and_fresh_weights(tmp_path):
    deploy, weights, _, _ = conformance_files("conv_basic")
    mean = np.random.default_rng(1).uniform(0, 200, (3, 11, 13)).astype("f4")
    pre = Preprocessor.from_net(deploy, mean=mean, input_scale=0.25)
    model, _ = write_python(deploy, tmp_path / "pre.py", weights, preprocessor=pre)
    source = (tmp_path / "pre.py").read_text()
    assert "ChannelReorder([2, 1, 0]" in source and "MeanSubtraction(shape=(11, 13, 3)" in source
    built = _import(tmp_path / "pre.py", "generated_pre").build_model()
    images = np.random.default_rng(2).integers(0, 256, (2, 11, 13, 3)).astype("uint8")
    _same(built({"data": images})["conv"], model({"data": images})["conv"])
    # no weights: the code builds a fresh model and writes no weights file
    _, none = write_python(deploy, tmp_path / "fresh.py")
    assert none is None and not (tmp_path / "fresh.weights.h5").exists()
    fresh = _import(tmp_path / "fresh.py", "generated_fresh").build_model()
    assert fresh.count_params() == model.count_params() - 11 * 13 * 3   # no mean image
    assert "WEIGHTS" not in (tmp_path / "fresh.py").read_text()


def test_codegen_command(tmp_path, capsys):
    deploy, weights, inputs, _ = model_files("lenet_mnist_v2")
    out = tmp_path / "lenet.py"
    assert main(["codegen", str(deploy), "--weights", str(weights), "-o", str(out)]) == 0
    assert "lenet.weights.h5" in capsys.readouterr().out
    built = _import(out, "generated_lenet_cli").build_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = caffe2keras.convert(deploy, weights)
    x = {"data": to_keras_layout(np.load(inputs)["data"])}
    _same(built(x)["prob"], model(x)["prob"])
    assert main(["codegen", str(deploy), "-o", str(tmp_path / "x.txt")]) == 1


def test_literals_and_identifiers():
    assert literal((3,)) == "(3,)"
    assert literal({"a": [1, 2.5, None]}) == '{"a": [1, 2.5, None]}'
    assert literal(float("inf")) == 'float("inf")'
    init = {"module": "keras.initializers", "class_name": "Constant",
            "config": {"value": 0.25}, "registered_name": None}
    assert literal(init) == "keras.initializers.Constant(value=0.25)"
    used = set()
    assert [identifier(n, used) for n in ("conv1/7x7_s2", "245", "class", "a-b", "a_b")] == \
        ["conv1_7x7_s2", "x245", "class_", "a_b", "a_b_1"]


def test_generate_source_of_a_plain_keras_model():
    import keras

    inp = keras.Input((4,), name="x")
    out = keras.layers.Dense(3, activation="relu", name="d")(inp)
    source = generate_source(keras.Model(inp, out, name="plain"))
    assert 'd = keras.layers.Dense(3, activation="relu", name="d")(x)' in source
    assert "outputs=d," in source
