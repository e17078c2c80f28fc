"""Where the shared fixtures live (../shared beside the repo, as CI lays it out), and the
project's pass criterion against real Caffe's blobs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CAFFE2KERAS_SHARED", ROOT.parent / "shared"))
CONFORMANCE = SHARED / "caffe-conformance"
MODELS = SHARED / "caffe-models"

if not CONFORMANCE.is_dir():
    raise RuntimeError(f"test fixtures not found at {SHARED} (set CAFFE2KERAS_SHARED)")

CONFORMANCE_INDEX = json.loads((CONFORMANCE / "index.json").read_text())
# legacy_v1 is a conformance case too, kept out of index.json by its generator
CONFORMANCE_CASES = sorted(CONFORMANCE_INDEX) + ["legacy_v1"]
MODELS_INDEX = json.loads((MODELS / "index.json").read_text())
PROTOTXT_ONLY = MODELS / "_prototxt_only"


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
    a = to_numpy(a)
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def to_keras_layout(a):
    a = np.asarray(a)
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def assert_blob_close(got, ref, name=""):
    """The project's criterion: rtol 1e-4, atol 1e-4 * max(1, |ref|max), shapes equal."""
    got = to_numpy(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != Caffe's {ref.shape}"
    atol = 1e-4 * max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    if not np.allclose(got, ref, rtol=1e-4, atol=atol):
        err = np.abs(got.astype(np.float64) - ref)
        i = np.unravel_index(np.argmax(err - 1e-4 * np.abs(ref)), err.shape)
        raise AssertionError(f"{name}: max abs err {err.max():.3g} (atol {atol:.3g}); at {i}: "
                             f"got {got[i]!r}, Caffe {ref[i]!r}")
