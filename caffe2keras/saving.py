"""Writing .keras files: atomically, and for big models without ever holding the model.

`save_model` saves a live Keras model (Keras's saver, routed through a temp file).

`convert_to_file` goes from a Caffe graph straight to a .keras file: the architecture is
built with deferred (never allocated) variables for its config, and the weights stream
from the mapped caffemodel into model.weights.h5, layer by layer, through the same
weights functions convert() uses. The h5 is written in place inside the zip: HDF5
leaves a "userblock" free at the start of its file, the small entries and the zip headers go there (the JSON
padded with spaces), and the weights entry's data begin 512 bytes before the HDF5
superblock (HDF5 looks for its superblock at 0, 512, 1024... bytes into its file). No copy of
the 500 MB weights file is made, and memory stays at about one layer.
"""
from __future__ import annotations

import contextlib
import struct
import time
import zlib

from .files import atomic_output

_WEIGHTS = "model.weights.h5"
_ZIP_LIMIT = 0xFFFFFFFF  # beyond this a zip needs zip64 records; Keras's saver writes them


@contextlib.contextmanager
def _weights_via_temp_file():
    """Keras builds model.weights.h5 in a BytesIO (a second full copy of the weights)
    whenever it thinks memory suffices, and streams it through a temp file otherwise.
    For 500 MB+ models we always want the temp file. If a Keras version lacks the hook,
    saving still works, just with its default buffering."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        yield
        return
    original = getattr(saving_lib, "is_memory_sufficient", None)
    if original is None:
        yield
        return
    saving_lib.is_memory_sufficient = lambda model: False
    try:
        yield
    finally:
        saving_lib.is_memory_sufficient = original


def save_model(model, path):
    """Write ``model`` to a .keras file; an error or Ctrl-C leaves no partial file."""
    with atomic_output(path, suffix=".keras") as tmp, _weights_via_temp_file():
        model.save(tmp)
    return str(path)


def convert_to_file(graph, path, outputs=None, wrap=None, progress=None):
    """Write the model ``convert()`` would build from ``graph`` (with its weights) to the
    .keras file ``path``, optionally wrapped by ``wrap(model) -> model`` (preprocessing).
    ``progress(bytes_done)`` is called as the weights are written. Returns the model
    built without weights (for its summary)."""
    from .emit.builder import build_model
    from .export import _export_keras3, _Report, stateless_variables

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
        prefix, userblock, weights_header_at = _layout_prefix(entries)
        _export_keras3(graph, tmp, outputs, False, _Report(False, None, progress),
                       model=model, userblock=userblock, scope=scope)
        _finish_zip(tmp, prefix, userblock, weights_header_at)
    return model


def graph_bytes(graph):
    """Bytes of the graph's weights as float32."""
    return sum(4 * b.size for n in graph.nodes for b in n.layer.blobs)


def _model_json(model):
    """config.json and metadata.json as Keras's saver writes them."""
    import datetime
    import json

    import keras
    from keras.src.saving.serialization_lib import ObjectSharingScope, serialize_keras_object

    with ObjectSharingScope(), _without_tensorflow_probe():
        config = json.dumps(serialize_keras_object(model))
    metadata = json.dumps({"keras_version": keras.__version__,
                           "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")})
    return config, metadata


@contextlib.contextmanager
def _without_tensorflow_probe():
    """Keras's serializer imports TensorFlow, if installed, to check for TF objects (2-3 s
    on the JAX or torch backend). A config holds TF objects only if TF is loaded."""
    import sys

    try:
        from keras.src.utils import module_utils
        lazy = module_utils.tensorflow
        before = lazy._available
    except (ImportError, AttributeError):
        yield
        return
    if "tensorflow" in sys.modules or before is not None:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = before


def _dos_time():
    t = time.localtime()
    return ((t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
            ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday)


def _local_header(name: bytes, crc, size):
    tm, dt = _dos_time()
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, tm, dt, crc, size, size,
                       len(name), 0) + name


def _central_header(name: bytes, crc, size, offset):
    tm, dt = _dos_time()
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20 | (3 << 8), 20, 0, 0, tm, dt,
                       crc, size, size, len(name), 0, 0, 0, 0, 0o100644 << 16,
                       offset) + name


def _layout_prefix(entries):
    """The bytes before the weights entry's data: the small entries, then the weights
    local header, ending 512 bytes before the HDF5 superblock. The last small entry (a
    JSON file) is padded with spaces to land there."""
    header = 30 + len(_WEIGHTS)
    fixed = sum(30 + len(name) + len(data) for name, data in entries) + header
    userblock = 512
    while userblock - 512 < fixed:
        userblock *= 2
    name, data = entries[-1]
    entries = entries[:-1] + [(name, data + b" " * (userblock - 512 - fixed))]
    prefix = bytearray()
    offsets = []
    for name, data in entries:
        offsets.append((name, len(prefix), zlib.crc32(data), len(data)))
        prefix += _local_header(name.encode(), zlib.crc32(data), len(data)) + data
    weights_header_at = len(prefix)
    prefix += _local_header(_WEIGHTS.encode(), 0, 0)
    return (bytes(prefix), offsets), userblock, weights_header_at


def _finish_zip(path, prefix, userblock, weights_header_at):
    prefix_bytes, small = prefix
    data_at = userblock - 512
    with open(path, "r+b") as f:
        f.seek(0, 2)
        end = f.tell()
        size = end - data_at
        f.seek(data_at)
        crc = 0
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
        f.seek(0)
        f.write(prefix_bytes)
        f.seek(weights_header_at + 14)  # crc, compressed and uncompressed sizes
        f.write(struct.pack("<III", crc, size, size))
        f.seek(end)
        central = bytearray()
        for name, offset, c, n in small:
            central += _central_header(name.encode(), c, n, offset)
        central += _central_header(_WEIGHTS.encode(), crc, size, weights_header_at)
        count = len(small) + 1
        f.write(central)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), end, 0))
