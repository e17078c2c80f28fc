"""Real-Caffe goldens for compute-layer variants beyond the shared conformance suite
(tests/data/compute_goldens.npz, made by tests/data/make_compute_goldens.py; and
tests/data/layers_goldens.npz, made by tests/data/make_layers_goldens.py)."""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from .shared import assert_blob_close, to_caffe_layout, to_keras_layout

ARCHIVE = Path(__file__).resolve().parent / "data" / "compute_goldens.npz"
LAYERS_ARCHIVE = ARCHIVE.with_name("layers_goldens.npz")


@lru_cache(maxsize=2)
def _archive(path=ARCHIVE):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def cases(prefix, archive=ARCHIVE):
    names = sorted({k.split("/")[0] for k in _archive(archive)})
    return [n for n in names if n.startswith(prefix)]


def write_case(name, tmp_path, archive=ARCHIVE):
    """(deploy, caffemodel, inputs, outputs) of a golden case, files under tmp_path."""
    a = _archive(archive)
    deploy = tmp_path / f"{name}.prototxt"
    weights = tmp_path / f"{name}.caffemodel"
    deploy.write_text(str(a[f"{name}/prototxt"]))
    weights.write_bytes(a[f"{name}/caffemodel"].tobytes())
    ins = {k.split("/", 2)[2]: v for k, v in a.items() if k.startswith(f"{name}/in/")}
    outs = {k.split("/", 2)[2]: v for k, v in a.items() if k.startswith(f"{name}/out/")}
    return deploy, weights, ins, outs


def check_case(name, tmp_path, archive=ARCHIVE):
    """Convert the case's net and compare every blob Caffe computed."""
    import keras

    import caffe2keras

    deploy, weights, ins, outs = write_case(name, tmp_path, archive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = caffe2keras.convert(deploy, weights, outputs="all")
    got = model({k: to_keras_layout(v) for k, v in ins.items()})
    assert outs
    for blob, ref in outs.items():
        out = keras.ops.convert_to_numpy(got[blob])
        assert_blob_close(to_caffe_layout(out), ref, f"{name}:{blob}")
    return model
