"""Writing .keras files: atomically, and for big models without ever holding the model.

`save_model` saves a live Keras model (Keras's saver, routed through a temp file).

`convert_to_file` goes from a Caffe graph straight to a .keras file: the architecture is
built with deferred (never allocated) variables for its config, and the weights stream
from the mapped caffemodel into model.weights.h5, layer by layer, through the same
weights functions convert() uses, written in place inside the zip (export/keras_zip.py):
no copy of the 500 MB weights file is made, and memory stays at about one layer.
"""
from __future__ import annotations

from .files import atomic_output

_ZIP_LIMIT = 0xFFFFFFFF  # beyond this a zip needs zip64 records; Keras's saver writes them


def save_model(model, path):
    """Write ``model`` to a .keras file; an error or Ctrl-C leaves no partial file."""
    from .keras_compat import weights_via_temp_file

    with atomic_output(path, suffix=".keras") as tmp, weights_via_temp_file():
        model.save(tmp)
    return str(path)


def convert_to_file(graph, path, outputs=None, wrap=None, progress=None):
    """Write the model ``convert()`` would build from ``graph`` (with its weights) to the
    .keras file ``path``, optionally wrapped by ``wrap(model) -> model`` (preprocessing).
    ``progress(bytes_done)`` is called as the weights are written. Returns the model
    built without weights (for its summary)."""
    from .emit.builder import build_model
    from .export.keras3 import export_keras3
    from .export.keras_zip import KerasZipSink
    from .export.loop import Report, writing
    from .keras_compat import stateless_variables

    if graph.weights_path is None or graph_bytes(graph) > _ZIP_LIMIT - (64 << 20):
        # fresh weights come from Keras's initializers; a model this big needs zip64
        model = build_model(graph, outputs=outputs, with_weights=graph.weights_path is not None)
        if wrap is not None:
            model = wrap(model)
        save_model(model, path)
        return model
    with stateless_variables() as scope:
        model = build_model(graph, outputs=outputs, with_weights=False)
        if wrap is not None:
            model = wrap(model)
    config, metadata = _model_json(model)
    with atomic_output(path, suffix=".keras") as tmp:
        entries = [("config.json", config.encode()), ("metadata.json", metadata.encode())]
        with writing(KerasZipSink(tmp, entries)) as sink:
            export_keras3(graph, sink, outputs, False, Report(False, None, progress),
                          model=model, scope=scope)
    return model


def graph_bytes(graph):
    """Bytes of the graph's weights as float32."""
    return sum(4 * b.size for n in graph.nodes for b in n.layer.blobs)


def _model_json(model):
    """config.json and metadata.json as Keras's saver writes them."""
    import datetime
    import json

    import keras

    from .keras_compat import serialize_model

    config = json.dumps(serialize_model(model))
    metadata = json.dumps({"keras_version": keras.__version__,
                           "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")})
    return config, metadata
