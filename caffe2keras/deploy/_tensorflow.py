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

from ..errors import CaffeFormatError
from . import MissingExtra, preprocessor_from_state, require

# Layers a format cannot express, checked before anything is traced: {format: {Keras
# layer class: why}}. Filled from running every conformance case, model golden and fork
# golden through each exporter (tests/test_deploy.py); a class absent here survives.
UNEXPRESSIBLE = {
    "onnx": {"Yolov3DetectionOutput": "its traced graph holds a TensorFlow Bitcast, which "
                                      "has no ONNX operator (tf2onnx leaves it unconverted)"},
    "tflite": {"PSROIPooling": "its position-sensitive sums are einsums that TFLite's "
                               "builtin ops cannot express (they would need the Flex "
                               "delegate)",
               "Yolov3DetectionOutput": "its traced graph holds TensorFlow bit operations "
                                        "(BitwiseAnd) that have no TFLite builtin op"},
    "saved_model": {},
}
NAMES = {"onnx": "ONNX", "tflite": "TFLite", "saved_model": "SavedModel"}
# Keras's TensorFlow ops.scan needs a static length, and Caffe's recurrent layers scan over
# the blob's first axis (time), which is the Keras batch axis: a net with one of these is
# exported with its inputs' first axis fixed to the prototxt's size (free elsewhere).
STATIC_FIRST_AXIS = {"CaffeLSTM", "CaffeRNN"}


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
    first_axis = {graph.values[b].blob: graph.values[b].shape[0] for b in graph.inputs}
    del graph   # its weights are the model's now; the export needs them only once
    return write(model, fmt, out, source=spec["prototxt"], first_axis=first_axis)


def write(model, fmt, out, source=None, first_axis=None):
    """Write a Keras model built on the TensorFlow backend to ``out`` in ``fmt``.
    ``source``: the file errors name (the prototxt); ``first_axis``: {input blob: the
    prototxt's size of its first axis}, kept where a layer needs it (STATIC_FIRST_AXIS)."""
    import keras
    import tensorflow as tf

    from ..keras_compat import producer

    _check_expressible(model, fmt, source)
    if fmt == "onnx":
        model = _without_input_outputs(model)
    static = first_axis is not None and any(
        type(la).__name__ in STATIC_FIRST_AXIS
        for la in model._flatten_layers(include_self=False, recursive=True))
    if static:
        model = _with_static_first_axis(model, first_axis)
    unsigned = _inner_models_unsigned(model) if static else contextlib.nullcontext()
    signature = [{blob: tf.TensorSpec(t.shape, t.dtype, name=producer(t).name)
                  for blob, t in model.input.items()}]
    # Keras's exporters want a model that has been called; a symbolic call does (a call
    # on zeros would fail for a net whose Reshape fixes the batch size)
    model({k: keras.KerasTensor(v.shape, v.dtype) for k, v in model.input.items()})
    with _quiet(), unsigned:
        if fmt == "saved_model":
            with atomic_directory(out) as tmp:
                _trace(model, fmt, source, lambda: model.export(
                    tmp, format="tf_saved_model", verbose=False, input_signature=signature))
        elif fmt == "onnx":
            from ..files import atomic_output
            from ._onnx import write_onnx
            with (atomic_output(out, suffix=".onnx") as tmp, _grouped_conv_unrolled(),
                  _scan_unrolled()):
                _trace(model, fmt, source,
                       lambda: write_onnx(model, tmp, signature[0],
                                          _onnx_input_names(model)))
        else:
            from ..files import atomic_output
            with atomic_output(out, suffix=".tflite") as tmp, _softplus_without_overflow():
                # builtin ops only: a file that needs the TF ("Flex") delegate does not run
                # in the plain LiteRT interpreter, so that is an error here, not at run time
                _trace(model, fmt, source, lambda: model.export(
                    tmp, format="litert", verbose=False, input_signature=signature,
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


def _with_static_first_axis(model, first_axis):
    """``model`` called on Inputs whose first axis has the prototxt's size."""
    import keras

    from ..keras_compat import producer

    inputs = {blob: keras.Input(batch_shape=(first_axis.get(blob), *t.shape[1:]),
                                dtype=t.dtype, name=producer(t).name)
              for blob, t in model.input.items()}
    return keras.Model(inputs, model(inputs), name=f"{model.name}_static")


@contextlib.contextmanager
def _inner_models_unsigned(root):
    """Saving a SavedModel (TFLite goes through one) traces every tracked Keras model's
    default serving signature from its Input shapes; for the model inside
    _with_static_first_axis that is a free first axis, which the recurrent layers cannot
    trace. Only ``root``'s is wanted (the export's own endpoint is another)."""
    from ..keras_compat import tensorflow_layer_class

    TFLayer = tensorflow_layer_class()
    original = TFLayer.__dict__["_default_save_signature"]
    TFLayer._default_save_signature = property(
        lambda self: original.fget(self) if self is root else None)
    try:
        yield
    finally:
        TFLayer._default_save_signature = original


def _check_expressible(model, fmt, source):
    bad = UNEXPRESSIBLE[fmt]
    for layer in model.layers:
        why = bad.get(type(layer).__name__)
        if why:
            raise CaffeFormatError(f"{NAMES[fmt]} cannot express this layer "
                                   f"({type(layer).__name__}): {why}", path=source,
                                   layer=layer.name)


def _trace(model, fmt, source, run):
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
                               path=source,
                               layer=layer.name if layer is not None else None) from None


def _layer_in(text, model):
    """The model layer a converter message points at first (ops are scoped by layer name,
    which tracing may suffix: ``det_1/BitwiseAnd``); a longer name wins at one place."""
    found = []
    for la in model.layers:
        if la.name:
            m = re.search(rf"(^|[\s'\"/@(]){re.escape(la.name)}(_\d+)?(/|['\"\s)@]|$)", text)
            if m:
                found.append((m.start(), -len(la.name), la))
    return min(found, key=lambda f: f[:2])[2] if found else None


def _onnx_input_names(model):
    """{Keras Input name: Caffe blob}: tf2onnx names graph inputs after the TF placeholders
    (the Keras Input names); ONNX allows any string, so they get their Caffe blob names
    back. (Keras's exporter has no option for it.)"""
    from ..keras_compat import producer
    return {producer(t).name: blob for blob, t in model.input.items()}


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
def _softplus_without_overflow():
    """TFLite's converter writes softplus (Caffe's BNLL) as log(1 + exp(x)), which is inf
    from x = 89 on, where Caffe (and TensorFlow) give x. While tracing for TFLite it is
    max(x, 0) + log(1 + exp(-|x|)): the same function, with exp of no positive number."""
    import tensorflow as tf

    from ..keras_compat import tensorflow_backend_nn

    tf_nn = tensorflow_backend_nn()
    original = tf_nn.softplus

    def softplus(x):
        x = tf.convert_to_tensor(x)
        return tf.nn.relu(x) + tf.math.log(1 + tf.exp(-tf.abs(x)))

    tf_nn.softplus = softplus
    try:
        yield
    finally:
        tf_nn.softplus = original


@contextlib.contextmanager
def _scan_unrolled():
    """Keras's TensorFlow ops.scan is a tf.while_loop, which tf2onnx converts only in its
    simplest form (it fails where the last carry is an output too: Caffe's LSTM/RNN with
    expose_hidden). While tracing for ONNX, a scan of static length (the recurrent nets'
    time axis is static in an export, see STATIC_FIRST_AXIS) is written out step by step:
    plain ops ONNX has."""
    import keras
    import tensorflow as tf

    from ..keras_compat import tensorflow_backend_core

    core = tensorflow_backend_core()
    original = core.scan

    def scan(f, init, xs=None, length=None, reverse=False, unroll=1):
        n = int(length) if length is not None else keras.tree.flatten(xs)[0].shape[0]
        if n is None:
            return original(f, init, xs, length, reverse, unroll)
        carry, ys = init, []
        for i in (reversed(range(n)) if reverse else range(n)):
            x = None if xs is None else keras.tree.map_structure(lambda a, i=i: a[i], xs)
            carry, y = f(carry, x)
            ys.append(y)
        if reverse:
            ys.reverse()
        if not ys or ys[0] is None:
            return carry, None
        return carry, keras.tree.map_structure(lambda *a: tf.stack(a), *ys)

    core.scan = scan
    try:
        yield
    finally:
        core.scan = original


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
