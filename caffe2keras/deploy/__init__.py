"""Deployment formats: the converted model as ONNX, TFLite (LiteRT) or a TF SavedModel.

    caffe2keras.export_model("deploy.prototxt", "net.caffemodel", "net.onnx")

Formats (``format=``; by default from the output's name):

- ``keras`` (``.keras``): what ``convert`` writes.
- ``onnx`` (``.onnx``): Keras's ONNX exporter (tf2onnx under TensorFlow); run it with
  onnxruntime. Extra: ``pip install 'caffe2keras[onnx]'``.
- ``tflite`` (``.tflite``): Keras's LiteRT exporter (TensorFlow's TFLite converter),
  TFLite builtin ops only, so the file runs in the plain LiteRT interpreter with no
  TensorFlow ("Flex") delegate. Extra: ``.[tflite]``.
- ``saved_model`` (a folder): Keras's ``tf_saved_model`` export, signature
  ``serving_default``, for TF Serving. Extra: ``.[tensorflow]``.

The artifacts are always traced from the model built on the TensorFlow backend, whatever
backend this process runs: under JAX or torch the export runs in a child Python with
``KERAS_BACKEND=tensorflow``. One tracing path means one set of ops to test against Caffe's
numbers, and the TFLite and SavedModel formats need TensorFlow anyway (Keras's JAX ONNX
path needs jax2onnx, its torch path fixes the batch size to 1).

Names: outputs keep the Caffe blob names exactly in every format. Inputs keep them exactly
in ONNX; in SavedModel and TFLite an input is a TF function parameter: every character
outside ``A-Z a-z 0-9 _`` becomes ``_``, and ``arg_`` goes in front of a name that does not
start with a letter (``in/put`` -> ``in_put``, ``0.a`` -> ``arg_0_a``). Layouts are the Keras model's: 4-D blobs NHWC, other ranks in
Caffe's axis order; the batch size is free.

Every output is written to a temporary name beside it and renamed into place (a
SavedModel folder too): an error or Ctrl-C leaves no partial file or folder.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from ..errors import CaffeFormatError

FORMATS = ("keras", "onnx", "tflite", "saved_model")
SUFFIXES = {".keras": "keras", ".onnx": "onnx", ".tflite": "tflite"}
# The pip extra that installs each format's exporter and runtime, and what it holds.
EXTRAS = {"onnx": ("onnx", ("tensorflow", "tf2onnx", "onnx", "onnxruntime")),
          "tflite": ("tflite", ("tensorflow", "ai_edge_litert")),
          "saved_model": ("tensorflow", ("tensorflow",))}


class MissingExtra(CaffeFormatError):
    """A format's packages are not installed."""


def deploy_input_name(blob: str) -> str:
    """An input's name in a SavedModel or TFLite file: the Keras Input layer's name made a
    Python identifier as TensorFlow makes function parameters (every character but
    letters, digits and ``_`` becomes ``_``; ``arg_`` in front unless it starts with a
    letter)."""
    import re

    from ..emit.plan import keras_name
    name = re.sub(r"[^A-Za-z0-9_]", "_", keras_name(blob))
    return name if name[:1].isalpha() else "arg_" + name


def pick_format(out, fmt=None) -> str:
    """The format for ``out``: ``fmt`` if given (checked against the name), else from the
    suffix (.keras, .onnx, .tflite); a SavedModel is a folder and needs ``fmt``."""
    out = Path(out)
    suffix = out.suffix.lower()
    if fmt is None:
        if suffix in SUFFIXES:
            return SUFFIXES[suffix]
        raise CaffeFormatError(
            "cannot tell the format from the name; end it in .keras, .onnx or .tflite, or "
            "give the format (--format saved_model for a SavedModel folder)", path=out)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    want = {v: k for k, v in SUFFIXES.items()}.get(fmt)
    if want is not None and suffix != want:
        raise CaffeFormatError(f"a {fmt} file must end in {want}", path=out)
    if fmt == "saved_model" and suffix in SUFFIXES:
        raise CaffeFormatError(f"a SavedModel is a folder; the name ends in {suffix}, "
                               f"which is another format's", path=out)
    return fmt


def require(fmt, what="export"):
    """Raise MissingExtra naming the pip extra when a package ``fmt`` needs is missing."""
    extra, modules = EXTRAS[fmt]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        names = {"ai_edge_litert": "ai-edge-litert", "tensorflow": "tensorflow-cpu"}
        raise MissingExtra(f"{fmt} {what} needs {', '.join(names.get(m, m) for m in missing)}"
                           f": pip install 'caffe2keras[{extra}]'")


def export_model(prototxt, caffemodel, out, format=None, *, outputs=None, input_shapes=None,
                 preprocessor=None, seed=None):
    """Convert the Caffe net and write it to ``out`` in a deployment format.

    format:       "keras", "onnx", "tflite" or "saved_model"; None picks it from ``out``'s
                  suffix (.keras, .onnx, .tflite).
    outputs, input_shapes, seed: as for ``convert()``.
    preprocessor: a ``Preprocessor`` whose steps go in front of its input (the artifact
                  then takes RGB pixels, as ``convert --preprocess`` makes it).
    A layer a format cannot express fails here, naming the layer and the format.
    Returns the path written.
    """
    out = Path(out)
    fmt = pick_format(out, format)
    if fmt == "keras":
        from ..graph import load_graph
        from ..saving import convert_to_file, save_model
        wrap = preprocessor.wrap if preprocessor is not None else (lambda m: m)
        if caffemodel is None:  # fresh weights drawn from the prototxt's fillers
            from ..api import convert
            save_model(wrap(convert(prototxt, None, outputs=outputs, input_shapes=input_shapes,
                                    seed=seed)), out)
            return out
        graph = load_graph(prototxt, caffemodel, input_shapes=input_shapes)
        convert_to_file(graph, out, outputs=outputs, wrap=wrap)
        return out
    require(fmt)
    _check_here(prototxt, caffemodel, outputs, input_shapes)
    spec = {"prototxt": str(prototxt), "caffemodel": None if caffemodel is None else
            str(caffemodel), "out": str(out), "format": fmt, "outputs": outputs,
            "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
            "preprocessor": None if preprocessor is None else _preprocessor_state(preprocessor),
            "seed": seed}
    if _backend() == "tensorflow":
        from . import _tensorflow
        _tensorflow.export(spec)
    else:
        _export_in_child(spec)
    return out


def _check_here(prototxt, caffemodel, outputs, input_shapes):
    """What can be checked without tracing (bad files, unknown blobs, unsupported layer
    types) fails here, in this process, with its own error type."""
    from ..emit.plan import check_supported, resolve_outputs
    from ..graph import load_graph

    graph = load_graph(prototxt, caffemodel, input_shapes=input_shapes)
    resolve_outputs(graph, outputs)
    check_supported(graph)
    if _backend() != "tensorflow":
        from ..emit.registry import CONVERTERS
        own = sorted({n.type for n in graph.nodes
                      if not CONVERTERS[n.type].__module__.startswith("caffe2keras.")})
        if own:
            raise CaffeFormatError(
                f"layer type(s) {', '.join(own)} use converters registered in this process, "
                f"which the TensorFlow process that exports cannot see; export with "
                f"KERAS_BACKEND=tensorflow (then the export runs here)", path=graph.net.path)


def _backend():
    import keras
    return keras.backend.backend()


def _export_in_child(spec):
    """Run the export in a Python with KERAS_BACKEND=tensorflow; its CaffeFormatError
    comes back as ours."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "caffe2keras.deploy._tensorflow"],
                          input=json.dumps(spec), capture_output=True, text=True, env=env,
                          check=False)
    if proc.returncode == 0:
        return
    for line in reversed(proc.stderr.splitlines()):
        if line.startswith(_tensorflow_error_tag()):
            err = json.loads(line[len(_tensorflow_error_tag()):])
            cls = MissingExtra if err.pop("missing", False) else CaffeFormatError
            raise cls(err["detail"], path=err["path"], position=err["position"],
                      layer=err["layer"])
    if proc.returncode < 0:
        why = " (out of memory?)" if proc.returncode == -9 else ""
        raise CaffeFormatError(f"the TensorFlow export process was killed by signal "
                               f"{-proc.returncode}{why}", path=spec["out"])
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
    raise CaffeFormatError(f"the TensorFlow export process failed (exit {proc.returncode}): "
                           f"{tail}", path=spec["out"])


def _tensorflow_error_tag():
    return "caffe2keras-deploy-error: "


def _preprocessor_state(pre):
    """A Preprocessor's attributes as JSON (the child rebuilds it; nothing is pickled)."""
    import numpy as np
    state = {}
    for k, v in vars(pre).items():
        if isinstance(v, np.ndarray):
            v = {"ndarray": v.tolist(), "dtype": str(v.dtype)}
        elif isinstance(v, os.PathLike):
            v = str(v)
        state[k] = v
    return state


def preprocessor_from_state(state):
    import numpy as np

    from ..preprocess import Preprocessor
    pre = Preprocessor.__new__(Preprocessor)
    for k, v in state.items():
        if isinstance(v, dict) and "ndarray" in v:
            v = np.asarray(v["ndarray"], dtype=v["dtype"])
        elif isinstance(v, list):
            v = tuple(v)
        setattr(pre, k, v)
    return pre


def sanitized_collisions(blobs):
    """Input blobs whose SavedModel/TFLite names coincide."""
    seen = {}
    for b in blobs:
        seen.setdefault(deploy_input_name(b).lower(), []).append(b)
    return [v for v in seen.values() if len(v) > 1]

