"""Where the shared fixtures live (../shared beside the repo, as CI lays it out), and the
project's pass criterion against real Caffe's blobs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from caffe2keras import criterion, layout

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CAFFE2KERAS_SHARED", ROOT.parent / "shared"))
CONFORMANCE = SHARED / "caffe-conformance"
MODELS = SHARED / "caffe-models"

# Without them every test that reads them is skipped (tests/conftest.py), the rest run.
SHARED_PRESENT = (CONFORMANCE / "index.json").is_file() and (MODELS / "index.json").is_file()
SKIP_REASON = (f"needs the shared Caffe fixtures at {SHARED} (../shared beside the "
               f"checkout, or set CAFFE2KERAS_SHARED)")


def _index(d):
    return json.loads((d / "index.json").read_text()) if SHARED_PRESENT else {}


CONFORMANCE_INDEX = _index(CONFORMANCE)
# legacy_v1 is a conformance case too, kept out of index.json by its generator
CONFORMANCE_CASES = sorted(CONFORMANCE_INDEX) + ["legacy_v1"] if SHARED_PRESENT else []
MODELS_INDEX = _index(MODELS)
PROTOTXT_ONLY = MODELS / "_prototxt_only"
# what a test module names when it reads the fixtures (conftest.py skips it without them)
FIXTURE_NAMES = ("SHARED", "CONFORMANCE", "MODELS", "CONFORMANCE_INDEX", "CONFORMANCE_CASES",
                 "MODELS_INDEX", "PROTOTXT_ONLY", "conformance_files", "model_files")


def conformance_files(case):
    d = CONFORMANCE / case
    return d / "deploy.prototxt", d / "weights.caffemodel", d / "inputs.npz", d / "outputs.npz"


def model_files(key):
    info = MODELS_INDEX[key]
    d = MODELS / info["dir"]
    g = d / info["golden"]
    return d / info["deploy"], d / info["weights"], g / "inputs.npz", g / "outputs.npz"


def to_numpy(a):
    """Any backend's tensor (torch ones may require grad) as numpy."""
    if isinstance(a, np.ndarray):
        return a
    import keras
    return keras.ops.convert_to_numpy(a)


def to_caffe_layout(a):
    """Keras output -> Caffe layout (4-D NHWC -> NCHW)."""
    return layout.to_caffe(to_numpy(a))


def to_keras_layout(a):
    return layout.to_keras(a)


def assert_blob_close(got, ref, name=""):
    """The project's one criterion (caffe2keras.criterion: rtol 1e-4, atol 1e-4 *
    max(1, |ref|max), NaN only where Caffe has NaN), shapes equal."""
    problem = criterion.mismatch(to_numpy(got), np.asarray(ref))
    if problem is not None:
        raise AssertionError(f"{name}: {problem}")


# ------------------------------------------------------------ converting and running

def quiet_convert(*args, **kw):
    """caffe2keras.convert with its warnings silenced (tests of the warnings use
    pytest.warns around caffe2keras.convert itself)."""
    import warnings

    import caffe2keras

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return caffe2keras.convert(*args, **kw)


def convert_net(tmp_path, net, name="n", **kw):
    """Write a CaffeNetWriter ``net`` (prototxt + caffemodel) under ``tmp_path`` and
    convert it."""
    from caffe2keras.writer import write_net

    deploy, weights = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    write_net(deploy, weights, net)
    return quiet_convert(deploy, weights, **kw)


def run_caffe_layout(model, feed):
    """Run a converted model on Caffe-layout inputs {blob: NCHW array}; its outputs
    {blob: array} in Caffe layout."""
    out = model({k: to_keras_layout(v) for k, v in feed.items()})
    if not isinstance(out, dict):
        out = dict(zip(model.output_names, out if isinstance(out, (list, tuple)) else [out]))
    return {k: to_caffe_layout(v) for k, v in out.items()}


def check_layer(model, feed, golden, blobs=None):
    """The one check of a converted model against real Caffe: run ``model`` (built with
    outputs covering ``blobs``) on ``feed`` (Caffe layout) and hold every blob of
    ``golden`` ({blob: Caffe's array}; ``blobs``: only these) to the criterion. Returns
    the outputs (Caffe layout)."""
    got = run_caffe_layout(model, feed)
    names = list(golden) if blobs is None else list(blobs)
    missing = [b for b in names if b not in got]
    assert not missing, f"the model does not output {missing}"
    for b in names:
        assert_blob_close(got[b], golden[b], b)
    return got
