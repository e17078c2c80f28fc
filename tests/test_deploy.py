"""Deployment formats (caffe2keras/deploy/): every real-Caffe golden the test suite holds
(the conformance cases and model goldens in ../shared, the fork goldens in
tests/fixtures/fork_goldens, the archives in tests/data) exported to ONNX, TFLite and a
SavedModel, run in onnxruntime, the LiteRT interpreter and TensorFlow, against the blobs
real Caffe computed (the project's criterion). Small cases are exported in batches, one
file holding many nets side by side, to keep the test time down. Layers with no Caffe
golden here (Interp, ShuffleChannel, SegNet Upsample and BN, Axpy, the detection heads...)
are checked against the Keras model, itself checked against references in test_emit_*.

The exports are traced on the TensorFlow backend whatever backend runs, so these run
once, in the KERAS_BACKEND=tensorflow run (with the [onnx] and [tflite] extras); under
JAX and torch only the child-process path is exercised.
"""
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras import deploy
from caffe2keras.cli import main
from caffe2keras.deploy import MissingExtra, export_model, pick_format
from caffe2keras.deploy.runtime import load_artifact
from caffe2keras.errors import CaffeFormatError

from . import test_emit_ssd as ssd
from .compute_goldens import ARCHIVE as COMPUTE_ARCHIVE
from .compute_goldens import LAYERS_ARCHIVE, write_case
from .compute_goldens import cases as archive_cases
from .shared import (
    CONFORMANCE_CASES,
    MODELS,
    MODELS_INDEX,
    assert_blob_close,
    conformance_files,
    model_files,
    to_caffe_layout,
    to_keras_layout,
)
from .test_emit_detect import assert_proposals
from .test_emit_zoo import FILTER_CASES

FORMATS = ["onnx", "tflite", "saved_model"]
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "saved_model": ""}
ON_TF = keras.backend.backend() == "tensorflow"
TESTS = Path(__file__).resolve().parent
FORK_GOLDENS = TESTS / "fixtures" / "fork_goldens"
TENSOR_ARCHIVE = TESTS / "data" / "tensor_goldens.npz"
DUPLICATE_NAMES = TESTS / "data" / "duplicate_names_golden.npz"
# exported one net per file: the big nets, and those compared in their own way (SSD's
# detections, Proposal's padded rows)
ALONE = {"ssd_detection", "proposal"}
FIXTURES = ([("model", k) for k in sorted(MODELS_INDEX)] +
            [("fork", p.name) for p in sorted(FORK_GOLDENS.iterdir())
             if p.is_dir() and p.name in ALONE])
FORK_SMALL = sorted(p.name for p in FORK_GOLDENS.iterdir() if p.is_dir() and p.name not in ALONE)
F32 = np.float32

tensorflow_run = pytest.mark.skipif(
    not ON_TF, reason="deployment exports are traced on TensorFlow: tested once, in the "
                      "KERAS_BACKEND=tensorflow run")


def available(fmt):
    try:
        deploy.require(fmt)
    except MissingExtra:
        return False
    return True


def needs(fmt):
    if not available(fmt):
        pytest.skip(f"{fmt}: extra not installed (pip install "
                    f"'caffe2keras[{deploy.EXTRAS[fmt][0]}]')")


def fixture_files(kind, name):
    if kind == "conformance":
        return conformance_files(name)
    if kind == "model":
        return model_files(name)
    d = FORK_GOLDENS / name
    weights = d / "weights.caffemodel"
    return (d / "deploy.prototxt", weights if weights.exists() else None,
            d / "inputs.npz", d / "outputs.npz")


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def export(deploy_path, weights, tmp_path, fmt, **kwargs):
    out = tmp_path / f"net{SUFFIX[fmt]}"
    quiet(export_model, deploy_path, weights, out, format=fmt, **kwargs)
    return out


def is_detection(name, blob):
    return blob == "detection_out" or (name == "ssd_detection" and blob.startswith("det"))


def compare(name, got, feed, golden, fmt):
    """Hold every blob of ``golden`` (Caffe layout) to the criterion; ``got``: the
    artifact's outputs (Keras layouts). Returns how many blobs were compared."""
    checked = 0
    for blob, ref in golden.items():
        if blob in feed and blob not in got:
            assert fmt == "onnx", f"{name}:{blob}: input blob missing from the {fmt} outputs"
            continue   # ONNX files leave out outputs that are their inputs
        if blob not in got and "_split_" in blob and any(
                np.array_equal(ref, v) for v in feed.values()):
            continue   # Caffe's automatic split of an input blob: a copy of it
        if is_detection(name, blob):
            if got[blob].ndim == 3:   # DetectionOutput's fixed-size rows
                ssd.assert_detections(got[blob], ref, blob,
                                      any_tie_order=blob in ssd.STD_SORT_TIES)
                checked += 1
            continue
        if name == "proposal" and blob.startswith("prop_"):
            if not blob.endswith("_scores"):
                # Caffe stacks the valid rows of every image; the converted layer gives
                # each image a fixed block of post_nms_topn rows padded with -1
                post = len(got[blob]) // len(feed["rpn_cls_prob"])
                assert_proposals(got[blob], got[f"{blob}_scores"], ref,
                                 golden[f"{blob}_scores"], post, blob)
                checked += 1
            continue
        mine = to_caffe_layout(got[blob])
        if name in FILTER_CASES:
            # Caffe's Filter top holds the kept items only (a data-dependent batch); the
            # converted layer gives them first, then zero rows
            kept = int(np.count_nonzero(feed["sel"]))
            assert not mine[kept:].any(), f"{name}:{blob}: rows after the kept items"
            mine = mine[:kept]
        assert_blob_close(mine, ref, f"{name}:{blob}")
        checked += 1
    return checked


# ------------------------------------------------------ every golden, every format

@tensorflow_run
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind,name", FIXTURES)
def test_golden_in_its_runtime(kind, name, fmt, tmp_path):
    needs(fmt)
    deploy_path, weights, inputs, outputs = fixture_files(kind, name)
    out = export(deploy_path, weights, tmp_path, fmt, outputs="all")
    artifact = load_artifact(out)
    assert artifact.format == fmt
    with np.load(inputs) as i, np.load(outputs) as o:
        feed, golden = dict(i), dict(o)
    got = artifact.run({k: to_keras_layout(v) for k, v in feed.items()})
    assert compare(name, got, feed, golden, fmt) >= 1


def files_case(name, deploy_path, weights, inputs, outputs):
    with np.load(inputs) as i, np.load(outputs) as o:
        return name, deploy_path, weights, dict(i), dict(o)


def batch_cases(batch, tmp_path):
    """[(name, prototxt, caffemodel, inputs, Caffe's blobs)] of a batch of small goldens."""
    if batch == "conformance":
        return ([files_case(c, *conformance_files(c)) for c in CONFORMANCE_CASES] +
                [files_case(f"fork_{c}", *fixture_files("fork", c)) for c in FORK_SMALL])
    if batch == "tensor+names":
        with np.load(DUPLICATE_NAMES) as g:
            deploy_path, weights = tmp_path / "dup.prototxt", tmp_path / "dup.caffemodel"
            deploy_path.write_text(str(g["prototxt"]))
            weights.write_bytes(g["caffemodel"].tobytes())
            dup = ("duplicate_names", deploy_path, weights, {"data": g["in/data"]},
                   {k: g[f"out/{k}"] for k in ("c1", "c2", "p", "k1", "k2", "out")})
        return [(c, *write_case(c, tmp_path, TENSOR_ARCHIVE))
                for c in archive_cases("", TENSOR_ARCHIVE)] + [dup]
    archive = {"compute": COMPUTE_ARCHIVE, "layers": LAYERS_ARCHIVE}[batch]
    return [(c, *write_case(c, tmp_path, archive)) for c in archive_cases("", archive)]


def side_by_side(cases):
    """One Keras model running every case's net on its own inputs (named CASE.BLOB), with
    outputs CASE.BLOB; and the feed for it (Keras layouts; each input its own batch)."""
    from caffe2keras.emit.plan import keras_name

    inputs, outputs, feed = {}, {}, {}
    for name, deploy_path, weights, ins, _ in cases:
        model = quiet(caffe2keras.convert, deploy_path, weights, outputs="all")
        model = keras.Model(model.input, model.output, name=keras_name(name))
        mine = {}
        for blob, t in model.input.items():
            key = keras_name(f"{name}.{blob}")
            mine[blob] = inputs[key] = keras.Input(t.shape[1:], dtype=t.dtype, name=key)
            feed[key] = to_keras_layout(ins[blob])
        for blob, t in model(mine).items():
            if blob not in ins:   # an input passed through a nested model is no output
                outputs[f"{name}.{blob}"] = t
    return keras.Model(inputs, outputs, name="side_by_side"), feed


BATCHES = ["conformance", "compute", "layers", "tensor+names"]


@tensorflow_run
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", BATCHES)
def test_small_goldens_in_their_runtime(batch, fmt, tmp_path):
    """The small goldens, a batch of nets per file, through the exporter's own path
    (``write``: the expressibility check, the ONNX bridges, the atomic write)."""
    from caffe2keras.deploy import _tensorflow

    needs(fmt)
    cases = batch_cases(batch, tmp_path)
    assert len(cases) >= 8
    model, feed = side_by_side(cases)
    out = tmp_path / f"batch{SUFFIX[fmt]}"
    quiet(_tensorflow.write, model, fmt, out, first_axis={k: len(v) for k, v in feed.items()})
    got = load_artifact(out).run(feed)
    for name, _, _, ins, golden in cases:
        mine = {blob[len(name) + 1:]: v for blob, v in got.items()
                if blob.startswith(f"{name}.")}
        golden = {b: v for b, v in golden.items() if b not in ins}
        assert compare(name, mine, ins, golden, fmt) >= 1, name


# ------------------------------------------- layers without a Caffe golden in ../shared

ZOO_INPUTS = {"data": (2, 6, 5, 4), "mask": (2, 6, 5, 4)}
ZOO = """
layer { name: "ip" type: "Interp" bottom: "data" top: "ip" interp_param { zoom_factor: 2 } }
layer { name: "sh" type: "ShuffleChannel" bottom: "data" top: "sh"
        shuffle_channel_param { group: 3 } }
layer { name: "un" type: "Upsample" bottom: "data" bottom: "mask" top: "un"
        upsample_param { scale: 2 } }
layer { name: "nn" type: "Upsample" bottom: "data" top: "nn" upsample_param { scale: 2 } }
layer { name: "mvn" type: "MVN" bottom: "data" top: "mvn" }
layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }
layer { name: "pw" type: "Power" bottom: "abs" top: "pw"
        power_param { power: 1.5 scale: 0.5 shift: 0.1 } }
layer { name: "ex" type: "Exp" bottom: "data" top: "ex" exp_param { base: 2 scale: 0.5 } }
layer { name: "lg" type: "Log" bottom: "pw" top: "lg" }
layer { name: "bnll" type: "BNLL" bottom: "data" top: "bnll" }
layer { name: "elu" type: "ELU" bottom: "data" top: "elu" }
layer { name: "th" type: "Threshold" bottom: "data" top: "th" threshold_param { threshold: 0.2 } }
layer { name: "cl" type: "Clip" bottom: "data" top: "cl" clip_param { min: -0.5 max: 0.5 } }
layer { name: "sw" type: "Swish" bottom: "data" top: "sw" }
layer { name: "r6" type: "ReLU6" bottom: "data" top: "r6" }
layer { name: "pr" type: "PReLU" bottom: "data" top: "pr" }
layer { name: "tile" type: "Tile" bottom: "data" top: "tile" tile_param { axis: 1 tiles: 2 } }
layer { name: "red" type: "Reduction" bottom: "data" top: "red"
        reduction_param { operation: SUMSQ axis: 2 } }
layer { name: "perm" type: "Permute" bottom: "data" top: "perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "norm" type: "Normalize" bottom: "data" top: "norm"
        norm_param { across_spatial: false channel_shared: false } }
layer { name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param { axis: 1 } }
layer { name: "dw" type: "Convolution" bottom: "data" top: "dw"
        convolution_param { num_output: 6 group: 6 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "dc" type: "Deconvolution" bottom: "data" top: "dc"
        convolution_param { num_output: 4 group: 2 kernel_size: 3 stride: 2 } }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "lrnw" type: "LRN" bottom: "data" top: "lrnw"
        lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
"""


def zoo_net(tmp_path):
    head = "".join(f'input: "{k}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in s)} }}\n'
                   for k, s in ZOO_INPUTS.items())
    path = tmp_path / "zoo.prototxt"
    path.write_text(f'name: "zoo"\n{head}{ZOO}')
    return path


def zoo_feed():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(ZOO_INPUTS["data"]).astype(F32)
    mask = rng.integers(0, 10 * 8, ZOO_INPUTS["mask"]).astype(F32)
    return {"data": to_keras_layout(x), "mask": to_keras_layout(mask)}


@tensorflow_run
@pytest.mark.parametrize("fmt", FORMATS)
def test_layers_without_goldens_survive(fmt, tmp_path):
    """Fresh weights (seed 0): the artifact computes what the Keras model computes."""
    needs(fmt)
    path = zoo_net(tmp_path)
    model = quiet(caffe2keras.convert, path, seed=0, outputs="all")
    feed = zoo_feed()
    want = {k: keras.ops.convert_to_numpy(v) for k, v in model(feed).items()}
    got = load_artifact(export(path, None, tmp_path, fmt, outputs="all", seed=0)).run(feed)
    for blob, ref in want.items():
        if blob in feed:
            continue
        assert_blob_close(got[blob], ref, blob)


FORK_ZOO = """
name: "fork_zoo"
input: "data"  input_shape { dim: 2 dim: 8 dim: 12 dim: 16 }
input: "rois"  input_shape { dim: 5 dim: 5 }
input: "s32" input_shape { dim: 1 dim: 16 dim: 4 dim: 4 }
input: "s16" input_shape { dim: 1 dim: 16 dim: 8 dim: 8 }
layer { name: "roi" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi"
        roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.0625 } }
layer { name: "psroi" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "psroi"
        psroi_pooling_param { spatial_scale: 0.0625 output_dim: 2 group_size: 2 } }
layer { name: "reorg" type: "Reorg" bottom: "data" top: "reorg" reorg_param { stride: 2 } }
layer { name: "region" type: "Region" bottom: "data" top: "region"
        region_param { classes: 1 coords: 2 num: 2 } }
layer { name: "bn" type: "BN" bottom: "data" top: "bn"
        bn_param { scale_filler { type: "gaussian" } shift_filler { type: "gaussian" } } }
layer { name: "gap" type: "Pooling" bottom: "data" top: "gap"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "axpy" type: "Axpy" bottom: "gap" bottom: "bn" bottom: "data" top: "axpy" }
layer { name: "hole" type: "Convolution" bottom: "data" top: "hole"
        convolution_param { num_output: 4 kernel_size: 3 hole: 2
                            weight_filler { type: "gaussian" } } }
layer { name: "det" type: "Yolov3DetectionOutput" bottom: "s32" bottom: "s16" top: "det"
        yolov3_detection_output_param {
          num_classes: 3 num_box: 2 confidence_threshold: 0.3 nms_threshold: 0.45
          biases: 10 biases: 14 biases: 23 biases: 27 biases: 37 biases: 58
          biases: 81 biases: 82 biases: 135 biases: 169 biases: 344 biases: 319
          anchors_scale: 32 anchors_scale: 16 mask_group_num: 2
          mask: 3 mask: 4 mask: 0 mask: 1 } }
"""


def fork_zoo_without(layers):
    """FORK_ZOO less the named layers (one layer a line once indentation is joined)."""
    return "\n".join(ln for ln in FORK_ZOO.replace("\n        ", " ").splitlines()
                     if not any(f'name: "{name}"' in ln for name in layers))


@tensorflow_run
@pytest.mark.parametrize("fmt", FORMATS)
def test_fork_layers_without_goldens_survive(fmt, tmp_path):
    """The fork layers checked against numpy references of their forks' C++ (test_emit_
    detect, test_emit_zoo_bn): ROIPooling, PSROIPooling, Reorg, Region, SegNet's BN, Axpy,
    DeepLab's hole convolution, the YOLOv3 head; the artifact computes what the Keras model
    computes (fresh weights, seed 0)."""
    from caffe2keras.deploy._tensorflow import UNEXPRESSIBLE

    from .test_emit_detect import _rois_with_edge_cases

    needs(fmt)
    path = tmp_path / "fork_zoo.prototxt"
    # a layer the format cannot express is left out (test_unexpressible_layers_are_named)
    left_out = {"Yolov3DetectionOutput": "det", "PSROIPooling": "psroi"}
    path.write_text(fork_zoo_without({left_out[c] for c in UNEXPRESSIBLE[fmt]}))
    rng = np.random.default_rng(0)
    feed = {"data": to_keras_layout(rng.normal(size=(2, 8, 12, 16)).astype(F32)),
            "rois": _rois_with_edge_cases(rng, 2, 12, 16, 1 / 16, count=0)[:5],
            "s32": to_keras_layout(rng.normal(size=(1, 16, 4, 4)).astype(F32)),
            "s16": to_keras_layout(rng.normal(size=(1, 16, 8, 8)).astype(F32))}
    model = quiet(caffe2keras.convert, path, seed=0, outputs="all")
    want = {k: keras.ops.convert_to_numpy(v) for k, v in model(feed).items()}
    got = load_artifact(export(path, None, tmp_path, fmt, outputs="all", seed=0)).run(feed)
    for blob, ref in want.items():
        if blob not in feed:
            assert_blob_close(got[blob], ref, blob)


@tensorflow_run
@pytest.mark.parametrize("fmt,layer,kind", [("onnx", "det", "Yolov3DetectionOutput"),
                                            ("tflite", "det", "Yolov3DetectionOutput"),
                                            ("tflite", "psroi", "PSROIPooling")])
def test_unexpressible_layers_are_named(fmt, layer, kind, tmp_path):
    """The layers the README's table marks "no" for a format stop the export before
    tracing, naming the layer and the format."""
    from caffe2keras.deploy import _tensorflow

    needs(fmt)
    path = tmp_path / "fork_zoo.prototxt"
    path.write_text(fork_zoo_without({"det"} - {layer}))
    with pytest.raises(CaffeFormatError, match=rf"layer '{layer}': {_tensorflow.NAMES[fmt]} "
                                               rf"cannot express this layer \({kind}\)"):
        export(path, None, tmp_path, fmt, outputs="all", seed=0)
    assert [p.name for p in tmp_path.iterdir()] == ["fork_zoo.prototxt"]


# --------------------------------------------------------------------- names, batch

ODD = """name: "odd"
input: "in/put"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "c/1" type: "Convolution" bottom: "in/put" top: "245"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "r" type: "ReLU" bottom: "245" top: "a.b-c/1x1" }
"""


@tensorflow_run
@pytest.mark.parametrize("fmt", FORMATS)
def test_names_and_free_batch(fmt, tmp_path):
    """Outputs keep the Caffe names; inputs too in ONNX, sanitised as the Keras Input in
    SavedModel and TFLite; any batch size runs."""
    needs(fmt)
    path = tmp_path / "odd.prototxt"
    path.write_text(ODD)
    artifact = load_artifact(export(path, None, tmp_path, fmt, outputs=["245", "a.b-c/1x1"],
                                    seed=1))
    assert artifact.inputs == (["in/put"] if fmt == "onnx" else ["in_put"])
    assert sorted(artifact.output_names()) == ["245", "a.b-c/1x1"]
    model = quiet(caffe2keras.convert, path, seed=1, outputs=["245", "a.b-c/1x1"])
    x = np.random.default_rng(1).standard_normal((3, 8, 8, 3)).astype(F32)
    want = model({"in/put": x})
    got = artifact.run({"in/put": x})
    for blob in want:
        assert got[blob].shape == (3, 6, 6, 4)
        assert_blob_close(got[blob], keras.ops.convert_to_numpy(want[blob]), blob)


# ------------------------------------------------------------------ errors, atomicity

def test_format_from_the_name():
    assert pick_format("m.onnx") == "onnx"
    assert pick_format("m.TFLITE") == "tflite"
    assert pick_format("m.keras") == "keras"
    assert pick_format("served", "saved_model") == "saved_model"
    with pytest.raises(CaffeFormatError, match="cannot tell the format"):
        pick_format("served")
    with pytest.raises(CaffeFormatError, match="must end in .onnx"):
        pick_format("m.tflite", "onnx")
    with pytest.raises(CaffeFormatError, match="SavedModel is a folder"):
        pick_format("m.onnx", "saved_model")


def test_missing_package_names_the_extra(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    deploy_path, weights, _, _ = conformance_files("conv_basic")
    with pytest.raises(MissingExtra, match=r"needs [^:]*\btf2onnx\b[^:]*: pip install 'caffe2keras\[onnx\]'"):
        export_model(deploy_path, weights, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_missing_package_is_one_cli_line(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ai_edge_litert" else real(name, *a))
    deploy_path, weights, _, _ = conformance_files("conv_basic")
    assert main(["convert", str(deploy_path), str(weights), "-o",
                 str(tmp_path / "m.tflite")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'caffe2keras[tflite]'" in err


@tensorflow_run
@pytest.mark.parametrize("fmt", FORMATS)
def test_unexpressible_layer_fails_at_conversion_naming_it(fmt, tmp_path, monkeypatch):
    """The check behind the README's table: a layer class listed for a format stops the
    export before tracing, naming layer and format, and writes nothing."""
    needs(fmt)
    from caffe2keras.deploy import _tensorflow
    monkeypatch.setitem(_tensorflow.UNEXPRESSIBLE, fmt, {"LRNAcrossChannels": "no such op"})
    deploy_path, weights, _, _ = conformance_files("lrn_across")
    with pytest.raises(CaffeFormatError, match=rf"layer 'n1': {_tensorflow.NAMES[fmt]} cannot "
                                               r"express this layer \(LRNAcrossChannels\)"):
        export(deploy_path, weights, tmp_path, fmt)
    assert not list(tmp_path.iterdir())


@tensorflow_run
@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_export_leaves_old_output_alone(fmt, tmp_path, monkeypatch):
    needs(fmt)
    deploy_path, weights, _, _ = conformance_files("conv_basic")
    out = export(deploy_path, weights, tmp_path, fmt)
    before = sorted(p.name for p in tmp_path.iterdir())

    def broken(self, path, *a, **k):
        Path(path).mkdir(exist_ok=True) if fmt == "saved_model" else None
        (Path(path) / "half" if fmt == "saved_model" else Path(path)).write_bytes(b"half")
        raise RuntimeError("converter error: boom at model/conv/Conv2D")

    if fmt == "onnx":   # written by deploy/_onnx.py, not keras.Model.export
        from caffe2keras.deploy import _onnx
        monkeypatch.setattr(_onnx, "write_onnx", lambda model, path, *a: broken(model, path))
    else:
        monkeypatch.setattr(keras.Model, "export", broken)
    with pytest.raises(CaffeFormatError,
                       match=r"layer 'conv': the .* exporter failed \(Conv2D\): converter error"):
        export(deploy_path, weights, tmp_path, fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert load_artifact(out).format == fmt   # the earlier file is whole


# ------------------------------------------------------------------ CLI, verify, child

@tensorflow_run
def test_cli_convert_then_verify_against_each_format(tmp_path, capsys):
    for fmt in FORMATS:
        needs(fmt)
    deploy_path, weights, _, outputs = model_files("lenet_mnist_v2")
    for fmt in FORMATS:
        out = tmp_path / f"lenet{SUFFIX[fmt]}"
        args = ["convert", str(deploy_path), str(weights), "-o", str(out)]
        assert main(args + (["--format", fmt] if fmt == "saved_model" else [])) == 0
        assert "wrote" in capsys.readouterr().out
        assert main(["verify", str(deploy_path), str(weights), "--against", str(out),
                     "--reference", str(outputs)]) == 0
        text = capsys.readouterr().out
        assert f"{out} in " in text and "prob" in text and "FAIL" not in text


@tensorflow_run
def test_verify_against_catches_a_wrong_artifact(tmp_path, capsys):
    """An artifact with other weights (fresh ones) fails the check."""
    needs("onnx")
    deploy_path, weights, _, outputs = conformance_files("conv_basic")
    out = tmp_path / "fresh.onnx"
    quiet(export_model, deploy_path, None, out, seed=3)
    assert main(["verify", str(deploy_path), str(weights), "--against", str(out),
                 "--reference", str(outputs)]) == 1
    assert "FAIL" in capsys.readouterr().out


@tensorflow_run
def test_preprocessing_inside_the_artifact(tmp_path, capsys):
    """convert --preprocess to TFLite: the file takes RGB pixels; verify --against
    --preprocess feeds it the image and compares with OpenCV on the preprocessed blob."""
    needs("tflite")
    pytest.importorskip("cv2")
    d = MODELS / MODELS_INDEX["mtcnn_det1"]["dir"]
    deploy_path, weights = d / "det1.prototxt", d / "det1.caffemodel"
    cat = MODELS / "imagenet_reference_data" / "cat.jpg"
    pre = ["--mean-value", "127.5,127.5,127.5", "--scale", "0.0078125",
           "--input-shape", "data=1,3,24,24"]
    out = tmp_path / "det1.tflite"
    assert main(["convert", str(deploy_path), str(weights), "-o", str(out),
                 "--preprocess", *pre]) == 0
    capsys.readouterr()
    assert main(["verify", str(deploy_path), str(weights), "--against", str(out),
                 "--input", str(cat), "--preprocess", *pre]) == 0
    assert "FAIL" not in capsys.readouterr().out


@pytest.mark.skipif(ON_TF or importlib.util.find_spec("tensorflow") is None
                    or not available("onnx"),
                    reason="the child-process export runs under JAX or torch with TF and "
                           "the [onnx] extra installed")
def test_export_from_another_backend_runs_tensorflow_in_a_child(tmp_path):
    deploy_path, weights, inputs, outputs = conformance_files("conv_group")
    out = tmp_path / "g.onnx"
    quiet(export_model, deploy_path, weights, out, outputs="all")
    with np.load(inputs) as i, np.load(outputs) as o:
        got = load_artifact(out).run({k: to_keras_layout(v) for k, v in i.items()})
        assert_blob_close(to_caffe_layout(got["c2"]), o["c2"], "c2")
    with pytest.raises(KeyError, match="no blob named 'nope'"):
        export_model(deploy_path, weights, tmp_path / "h.onnx", outputs=["nope"])


def test_keras_format_is_convert(tmp_path):
    """format="keras" writes what convert writes: Caffe's weights, or seeded fresh ones."""
    deploy_path, weights, inputs, outputs = conformance_files("conv_basic")
    with np.load(inputs) as i, np.load(outputs) as o:
        feed, golden = {k: to_keras_layout(v) for k, v in i.items()}, o["conv"]
    got = load_artifact(quiet(export_model, deploy_path, weights, tmp_path / "m.keras")).run(feed)
    assert_blob_close(to_caffe_layout(got["conv"]), golden, "conv")
    fresh = load_artifact(quiet(export_model, deploy_path, None, tmp_path / "f.keras", seed=4))
    want = quiet(caffe2keras.convert, deploy_path, seed=4)(feed)["conv"]
    np.testing.assert_array_equal(fresh.run(feed)["conv"], keras.ops.convert_to_numpy(want))


def test_export_model_is_public():
    assert caffe2keras.export_model is export_model
    assert "export_model" in caffe2keras.__all__


# --------------------------------------------------------------- data-parallel training

DATA_PARALLEL = r'''
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["KERAS_BACKEND"] = "jax"
import jax, keras, numpy as np
import caffe2keras
assert len(jax.devices("cpu")) == 2, jax.devices()
deploy, weights, out = sys.argv[1:4]

def step(distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    model = caffe2keras.convert(deploy, weights)
    model.compile(keras.optimizers.SGD(0.01), {"prob": "sparse_categorical_crossentropy"})
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, (8,))
    loss = model.train_on_batch({"data": x}, {"prob": y})
    return loss, [np.asarray(w) for w in model.get_weights()]

one_loss, one = step(None)
two_loss, two = step(keras.distribution.DataParallel(devices=jax.devices("cpu")))
np.savez(out, one_loss=one_loss, two_loss=two_loss, *[a for pair in zip(one, two) for a in pair])
'''


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="a JAX feature: tested once, in the KERAS_BACKEND=jax run")
def test_one_data_parallel_step_on_two_devices_equals_one_device(tmp_path):
    """A converted LeNet trained one SGD step under keras.distribution.DataParallel on two
    (forced) CPU devices gives the loss and weights of the same step on one device."""
    deploy_path, weights, _, _ = model_files("lenet_mnist_v2")
    out = tmp_path / "steps.npz"
    proc = subprocess.run([sys.executable, "-c", DATA_PARALLEL, str(deploy_path),
                           str(weights), str(out)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(out) as r:
        assert np.allclose(r["one_loss"], r["two_loss"], rtol=1e-5, atol=1e-6)
        arrays = [r[f"arr_{i}"] for i in range(len(r.files) - 2)]
    before = [a for a in (quiet(caffe2keras.convert, deploy_path, weights).get_weights())]
    for i in range(0, len(arrays), 2):
        one, two = arrays[i], arrays[i + 1]
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(b, a) for b, a in zip(before, arrays[::2])), "no step taken"
