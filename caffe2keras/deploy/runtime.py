"""Running an exported artifact in its own runtime: onnxruntime for .onnx, the LiteRT
interpreter for .tflite, TensorFlow for a SavedModel folder, Keras for .keras.

    art = load_artifact("net.onnx")
    outs = art.run({"data": x_nhwc})        # {Caffe blob name: array}, Keras layouts
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CaffeFormatError
from ..quiet import muted_stderr
from . import deploy_input_name, require


def artifact_format(path) -> str:
    p = Path(path)
    if p.is_dir():
        if not (p / "saved_model.pb").exists():
            raise CaffeFormatError("is a folder without saved_model.pb, expected a "
                                   "SavedModel", path=p)
        return "saved_model"
    if not p.exists():
        raise CaffeFormatError("no such file", path=p)
    fmt = {".onnx": "onnx", ".tflite": "tflite", ".keras": "keras"}.get(p.suffix.lower())
    if fmt is None:
        raise CaffeFormatError("cannot tell the format: expected a .onnx, .tflite or .keras "
                               "file or a SavedModel folder", path=p)
    return fmt


class Artifact:
    """An exported model loaded in its runtime. ``inputs``: the artifact's input names;
    ``run(feed)`` takes {Caffe blob: array} and returns {output name: array}."""

    def __init__(self, path, fmt=None):
        self.path = Path(path)
        self.format = fmt or artifact_format(path)
        if self.format != "keras":
            require(self.format, "running")
        self._load()

    # --- loading ---------------------------------------------------------------------

    def _load(self):
        getattr(self, f"_load_{self.format}")()

    def _load_onnx(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(self.path), opts,
                                             providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self._session.get_inputs()]
        self.runtime = f"onnxruntime {ort.__version__}"

    def _load_tflite(self):
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(self.path))
        self._tflite_ran = False
        sigs = self._interpreter.get_signature_list()
        self._signature = "serving_default" if "serving_default" in sigs else next(iter(sigs))
        self.inputs = list(sigs[self._signature]["inputs"])
        self.runtime = f"LiteRT interpreter {getattr(ai_edge_litert, '__version__', '')}".strip()

    def _load_saved_model(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TF's first import
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(self.path))
        self._fn = self._loaded.signatures["serving_default"]
        self.inputs = list(self._fn.structured_input_signature[1])
        self.runtime = f"TensorFlow {tf.__version__} (SavedModel serving_default)"

    def _load_keras(self):
        import keras

        from .. import _keras_hook  # noqa: F401  (registers our layers)

        self._model = keras.saving.load_model(self.path)
        self.inputs = list(self._model.input) if isinstance(self._model.input, dict) else \
            [self._model.input.name]
        self.runtime = f"Keras {keras.__version__} ({keras.backend.backend()})"

    # --- running ---------------------------------------------------------------------

    def input_for(self, blob):
        """The artifact's name for the Caffe input ``blob``."""
        if blob in self.inputs:
            return blob
        name = deploy_input_name(blob)
        if name in self.inputs:
            return name
        if len(self.inputs) == 1:
            return self.inputs[0]
        raise CaffeFormatError(f"has no input for blob '{blob}' (inputs: "
                               f"{', '.join(self.inputs)})", path=self.path)

    def output_names(self):
        if self.format == "onnx":
            return [o.name for o in self._session.get_outputs()]
        if self.format == "tflite":
            return list(self._interpreter.get_signature_list()[self._signature]["outputs"])
        if self.format == "saved_model":
            return sorted(self._fn.structured_outputs)
        return list(self._model.output_names)

    def run(self, feed):
        x = {self.input_for(b): np.ascontiguousarray(v, np.float32) for b, v in feed.items()}
        out = getattr(self, f"_run_{self.format}")(x)
        return {k: np.asarray(v) for k, v in out.items()}

    def _run_onnx(self, x):
        names = [o.name for o in self._session.get_outputs()]
        return dict(zip(names, self._session.run(names, x)))

    def _run_tflite(self, x):
        runner = self._interpreter.get_signature_runner(self._signature)
        if self._tflite_ran:
            return runner(**x)
        try:
            with muted_stderr():  # LiteRT's "Created ... XNNPACK delegate" line, first run
                out = runner(**x)
        except (RuntimeError, ValueError):  # run again where LiteRT's own reason reaches stderr
            return runner(**x)
        self._tflite_ran = True
        return out

    def _run_saved_model(self, x):
        import tensorflow as tf
        return {k: v.numpy() for k, v in self._fn(**{k: tf.constant(v) for k, v in
                                                     x.items()}).items()}

    def _run_keras(self, x):
        from keras import ops
        model = self._model
        if not isinstance(model.input, dict):
            x = next(iter(x.values()))
        out = model(x)
        if not isinstance(out, dict):
            out = {model.output_names[0]: out}
        return {k: ops.convert_to_numpy(v) for k, v in out.items()}


def load_artifact(path, fmt=None) -> Artifact:
    return Artifact(path, fmt)


def artifact_bytes(path) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def describe_artifact(path, fmt=None) -> str:
    """One line: format, size, input and output names as the runtime sees them."""
    fmt = fmt or artifact_format(path)
    if fmt == "onnx":   # names only: an onnxruntime session would hold the weights twice
        ins, outs = onnx_io_names(path)
    else:
        art = load_artifact(path, fmt)
        ins, outs = art.inputs, art.output_names()
    label = {"onnx": "ONNX", "tflite": "TFLite", "saved_model": "SavedModel",
             "keras": "Keras"}[fmt]
    size = artifact_bytes(path)
    size = f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
    return (f"{label}, {size}; inputs {', '.join(ins)}; "
            f"outputs {', '.join(outs)}")


def onnx_io_names(path):
    """An ONNX file's graph inputs (less initializers, as onnxruntime lists them) and
    outputs, read from its protobuf fields without parsing the weights."""
    import mmap

    def fields(buf, start, end):
        """(field number, wire type, value or (start, end) of a length-delimited one)."""
        pos = start
        while pos < end:
            key, pos = _varint(buf, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = _varint(buf, pos)
            elif wire == 1:
                value, pos = None, pos + 8
            elif wire == 5:
                value, pos = None, pos + 4
            elif wire == 2:
                n, pos = _varint(buf, pos)
                value, pos = (pos, pos + n), pos + n
            else:
                raise CaffeFormatError(f"not an ONNX file (protobuf wire type {wire})",
                                       path=path)
            yield field, wire, value

    def name(buf, span, field_no):
        for f, w, v in fields(buf, *span):
            if f == field_no and w == 2:
                return bytes(buf[v[0]:v[1]]).decode()
        return ""

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        ins, outs, weights = [], [], set()
        for f, w, graph in fields(buf, 0, len(buf)):
            if f != 7 or w != 2:   # ModelProto.graph
                continue
            for g, gw, span in fields(buf, *graph):
                if gw != 2:
                    continue
                if g == 11:        # GraphProto.input: ValueInfoProto, name = 1
                    ins.append(name(buf, span, 1))
                elif g == 12:      # GraphProto.output
                    outs.append(name(buf, span, 1))
                elif g == 5:       # GraphProto.initializer: TensorProto, name = 8
                    weights.add(name(buf, span, 8))
    return [i for i in ins if i not in weights], outs


def _varint(buf, pos):
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos
