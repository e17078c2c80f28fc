"""Reading .caffemodel weights (V2, V1 and V0 layer entries) without copying the file.

Blob data come back as numpy views on a read-only memory map: a 553 MB VGG16 file is
"read" in milliseconds and its pages are only faulted in when a converter uses them.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import CaffeFormatError, CaffeWarning
from .files import map_binary
from .proto.message import Message
from .proto.schema import v1_type_name
from .proto.wire import Decoder

MAX_AXES = 32           # Caffe's kMaxBlobAxes
MAX_COUNT = 2**31 - 1   # Caffe's limit on the values in one blob (INT_MAX)

# Only what weight loading needs is decoded; the rest of each layer entry is skipped.
_ONLY = {
    "NetParameter": {"name", "layer", "layers"},
    "LayerParameter": {"name", "type", "bottom", "top", "blobs", "pooling_param"},
    "V1LayerParameter": {"name", "type", "bottom", "top", "blobs", "layer", "pooling_param"},
    "V0LayerParameter": {"name", "type", "blobs"},
}


@dataclass
class Blob:
    """One parameter blob: ``data`` (flat view, float32 or float64) and its declared shape."""

    data: np.ndarray
    shape: tuple
    legacy: bool        # shape came from num/channels/height/width
    position: str       # byte offset of the BlobProto

    def array(self, shape=None) -> np.ndarray:
        """The blob as an array of ``shape`` (default: declared), without copying."""
        return self.data.reshape(self.shape if shape is None else shape)


@dataclass
class LayerWeights:
    name: str
    type: str
    blobs: list
    position: str
    pool_field13: int | None = None   # raw round_mode/ceil_mode value, see schema.py
    bottoms: list = field(default_factory=list)
    tops: list = field(default_factory=list)


class CaffeModel:
    """The layers of a .caffemodel that hold blobs, by name, in file order."""

    def __init__(self, path):
        self.path = str(path)
        self.buffer = map_binary(path)
        self.size = len(self.buffer)
        self.layers: dict[str, LayerWeights] = {}
        self.all_layers: list[LayerWeights] = []   # every entry, blobs or not
        self.format = "V2"
        self.name = ""
        self._read()

    def _read(self):
        dec = Decoder(self.buffer, self.path, _ONLY)
        proto = dec.message("NetParameter")
        if not (proto.layer or proto.layers):
            what = _what_else(self.buffer)
            raise CaffeFormatError(
                f"holds no layers: not a Caffe weights file{what or ' (or an empty net)'}; "
                f"expected a .caffemodel (a binary NetParameter with layer entries)",
                path=self.path)
        if proto.layer and proto.layers:
            raise CaffeFormatError(
                "holds both V2 'layer' and deprecated V1 'layers' entries; Caffe refuses such "
                "a file (it reads only one kind)", path=self.path)
        self.name = proto.name
        self.format = "V1" if proto.layers and not proto.layer else "V2"
        entries = [_entry(e) for e in proto.layer] + [_v1_entry(e) for e in proto.layers]
        for name, type_, blob_msgs, pool, pos in entries:
            blobs = [_blob(b, self.path, name, i) for i, b in enumerate(blob_msgs)]
            lw = LayerWeights(name, type_, blobs, pos, pool)
            self.all_layers.append(lw)
            if not blobs:
                continue
            if lw.name in self.layers:
                warnings.warn(f"{self.path}: layer '{lw.name}' appears twice in the weights; "
                              f"using the last copy, as Caffe does (into the first layer of that "
                              f"name)", CaffeWarning, stacklevel=3)
            self.layers[lw.name] = lw

    def close(self):
        self.layers.clear()
        self.all_layers.clear()


def _v1_entry(e: Message):
    if e.has("layer"):  # V0 inside V1 container
        v0 = e.layer
        return v0.name, v0.type, list(v0.blobs), None, e._pos
    type_ = v1_type_name(e.type) if e.has("type") else ""
    return e.name, type_, list(e.blobs), _field13(e), e._pos


def _field13(e: Message):
    if not e.has("pooling_param"):
        return None
    return e.pooling_param.get("field13")


def _entry(e: Message):
    return e.name, e.type, list(e.blobs), _field13(e), e._pos


def _blob(b: Message, path, layer, index) -> Blob:
    where = f"blob {index} of layer '{layer}'"
    if b.has("shape"):
        shape = tuple(int(d) for d in b.shape.dim)
        legacy = False
    elif any(b.has(k) for k in ("num", "channels", "height", "width")):
        shape = (int(b.num), int(b.channels), int(b.height), int(b.width))
        legacy = True
    else:
        shape = None
        legacy = False
    if shape is not None and any(d < 0 for d in shape):
        raise CaffeFormatError(f"{where} has negative dimensions {list(shape)}",
                               path=path, position=b._pos, layer=layer)
    if shape is not None and len(shape) > MAX_AXES:
        raise CaffeFormatError(f"{where} has {len(shape)} axes; Caffe allows at most "
                               f"{MAX_AXES}", path=path, position=b._pos, layer=layer)
    # as Caffe's Blob::FromProto: double_data when present, else data
    data = b.get("double_data")
    if data is None or len(data) == 0:
        data = b.get("data")
    if data is None:
        data = np.zeros(0, np.float32)
    if shape is None:
        # Caffe writes no shape field for a 0-D blob (a scalar, e.g. a channel-shared
        # PReLU slope) and reads a blob without one as 0-D
        shape = ()
        if len(data) != 1:
            raise CaffeFormatError(
                f"{where} has no shape (no 'shape', no num/channels/height/width), which "
                f"Caffe reads as a scalar, but holds {len(data)} values", path=path,
                position=b._pos, layer=layer)
    count = math.prod(shape)
    if count > MAX_COUNT:
        raise CaffeFormatError(f"{where} declares shape {list(shape)}: {count} values, more "
                               f"than Caffe's limit of {MAX_COUNT} per blob", path=path,
                               position=b._pos, layer=layer)
    if count != len(data):
        raise CaffeFormatError(
            f"{where} declares shape {list(shape)} ({count} values) but holds {len(data)} "
            f"values (file truncated or corrupted)", path=path, position=b._pos, layer=layer)
    return Blob(data, shape, legacy, b._pos)


def _what_else(buf) -> str:
    """Name the kind of file ``buf`` holds when it is not a caffemodel ('' if unsure)."""
    try:
        blob = Decoder(buf).message("BlobProto")
    except CaffeFormatError:
        return ""
    data = blob.get("data")
    if data is None or len(data) == 0:
        data = blob.get("double_data")
    if (blob.has("shape") or blob.has("num")) and data is not None and len(data):
        return " (it holds a single blob: a mean .binaryproto?)"
    return ""


def load_caffemodel(path) -> CaffeModel:
    return CaffeModel(path)
