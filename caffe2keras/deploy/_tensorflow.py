"""The export itself, on the TensorFlow backend (in this process when it runs TensorFlow,
else in a child: ``python -m caffe2keras.deploy._tensorflow`` reads the spec as JSON on
stdin)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import CaffeFormatError
from . import MissingExtra, preprocessor_from_state, require

# Layers a format cannot express, checked before anything is traced: {format: {Keras
# layer class: why}}. Filled from running every conformance case, model golden and fork
# golden through each exporter (tests/test_deploy.py); a class absent here survives.
UNEXPRESSIBLE = {
    "onnx": {},
    "tflite": {},
    "saved_model": {},
}
NAMES = {"onnx": "ONNX", "tflite": "TFLite", "saved_model": "SavedModel"}


def export(spec):
    import keras

    from ..emit.builder import build_model
    from ..graph import load_graph

    fmt, out = spec["format"], Path(spec["out"])
    require(fmt)
    if keras.backend.backend() != "tensorflow":
        raise CaffeFormatError("internal: the deployment export runs on the TensorFlow "
                               "backend", path=out)
    shapes = {k: tuple(v) for k, v in spec["input_shapes"].items()} or None
    graph = load_graph(spec["prototxt"], spec["caffemodel"], input_shapes=shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(graph, outputs=spec["outputs"],
                            with_weights=spec["caffemodel"] is not None, fill_fresh=True,
                            seed=spec["seed"])
    if spec["preprocessor"] is not None:
        model = preprocessor_from_state(spec["preprocessor"]).wrap(model)
    _check_expressible(model, fmt, graph)
    if fmt == "onnx":
        model = _without_input_outputs(model)
    # Keras's exporters want a model that has run once
    model({k: np.zeros((1, *v.shape[1:]), v.dtype) for k, v in model.input.items()})
    with _quiet():
        if fmt == "saved_model":
            with atomic_directory(out) as tmp:
                _trace(model, fmt, graph, lambda: model.export(
                    tmp, format="tf_saved_model", verbose=False))
        elif fmt == "onnx":
            from ..files import atomic_output
            with atomic_output(out, suffix=".onnx") as tmp, _grouped_conv_unrolled():
                _trace(model, fmt, graph, lambda: model.export(tmp, format="onnx",
                                                               verbose=False))
                _onnx_caffe_input_names(tmp, model)
        else:
            import tensorflow as tf

            from ..files import atomic_output
            with atomic_output(out, suffix=".tflite") as tmp:
                # builtin ops only: a file that needs the TF ("Flex") delegate does not run
                # in the plain LiteRT interpreter, so that is an error here, not at run time
                _trace(model, fmt, graph, lambda: model.export(
                    tmp, format="litert", verbose=False,
                    target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}))
    return out


def _without_input_outputs(model):
    """tf2onnx fails on a graph output that is a graph input (outputs="all" asks for the
    input blobs too): leave those out of an ONNX file; they are the inputs unchanged."""
    import keras

    inputs = {id(t) for t in model.inputs}
    outputs = {k: t for k, t in model.output.items() if id(t) not in inputs}
    if len(outputs) == len(model.output) or not outputs:
        return model
    return keras.Model(model.input, outputs, name=model.name)


def _check_expressible(model, fmt, graph):
    bad = UNEXPRESSIBLE[fmt]
    for layer in model.layers:
        why = bad.get(type(layer).__name__)
        if why:
            raise CaffeFormatError(f"{NAMES[fmt]} cannot express this layer "
                                   f"({type(layer).__name__}): {why}", path=graph.net.path,
                                   layer=layer.name)


def _trace(model, fmt, graph, run):
    """Run the exporter; its failure becomes one line naming the format and, where the
    message names one, the layer (Keras layer names are the Caffe ones, sanitised)."""
    try:
        run()
    except CaffeFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - any exporter failure is reported the same way
        text = str(e)
        layer = _layer_in(text, model)
        first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()),
                     text.strip().splitlines()[0] if text.strip() else type(e).__name__)
        what = f" ({type(layer).__name__})" if layer is not None else ""
        raise CaffeFormatError(f"the {NAMES[fmt]} exporter failed{what}: {first[:300]}",
                               path=graph.net.path,
                               layer=layer.name if layer is not None else None) from None


def _layer_in(text, model):
    """The model layer a converter message points at (ops are scoped by layer name)."""
    names = sorted((la for la in model.layers if la.name), key=lambda la: -len(la.name))
    for la in names:
        if re.search(rf"(^|[\s'\"/@(]){re.escape(la.name)}(/|['\"\s)@]|$)", text):
            return la
    return None


def _onnx_caffe_input_names(path, model):
    """tf2onnx names graph inputs after the TF placeholders (the Keras Input names); ONNX
    allows any string, so give them back their Caffe blob names. (Keras's exporter has no
    option for it.)"""
    import onnx

    from ..keras_compat import producer

    rename = {}
    for blob, tensor in model.input.items():
        kname = producer(tensor).name
        if kname != blob:
            rename[kname] = blob
    if not rename:
        return
    proto = onnx.load(path)
    for value in proto.graph.input:
        if value.name in rename:
            value.name = rename[value.name]
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    onnx.save(proto, path)


@contextlib.contextmanager
def _grouped_conv_unrolled():
    """Keras's TensorFlow backend runs a grouped convolution as a nested XLA-compiled
    tf.function (TF's CPU kernel lacks groups), which tf2onnx cannot convert (it leaves a
    StatefulPartitionedCall node onnxruntime rejects). While tracing for ONNX, run it as
    one convolution per group, concatenated: plain Conv ops ONNX has."""
    import tensorflow as tf

    from ..keras_compat import standardize_data_format, tensorflow_backend_nn

    tf_nn = tensorflow_backend_nn()
    original = tf_nn.conv

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None,
             dilation_rate=1):
        channels_last = standardize_data_format(data_format) == "channels_last"
        channels = inputs.shape[-1] if channels_last else None
        if not channels_last or len(inputs.shape) != 4 or channels == kernel.shape[-2]:
            return original(inputs, kernel, strides, padding, data_format, dilation_rate)
        groups = channels // kernel.shape[-2]
        xs = tf.split(inputs, groups, axis=-1)
        ks = tf.split(kernel, groups, axis=-1)
        return tf.concat([tf.nn.convolution(x, k, strides, padding.upper(),
                                            dilations=dilation_rate)
                          for x, k in zip(xs, ks)], axis=-1)

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = original


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an old
    folder there is moved aside, then deleted). An error leaves no partial folder."""
    dest = Path(path)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise CaffeFormatError("output folder does not exist", path=parent)
    if dest.exists() and not dest.is_dir():
        raise CaffeFormatError("is a file, expected a SavedModel folder name", path=dest)
    tmp = tempfile.mkdtemp(prefix=f".{dest.name}.", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if dest.exists():
            old = tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=parent)
            os.replace(dest, Path(old) / "x")
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _quiet():
    """TensorFlow's converters print progress to stdout/stderr; keep the CLI's own lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def main():
    from . import _tensorflow_error_tag

    spec = json.loads(sys.stdin.read())
    try:
        export(spec)
    except CaffeFormatError as e:
        print(_tensorflow_error_tag() + json.dumps(
            {"detail": e.detail, "path": e.path, "position": e.position, "layer": e.layer,
             "missing": isinstance(e, MissingExtra)}), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
