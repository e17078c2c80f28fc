"""Mean images: Caffe's .binaryproto (a BlobProto), or .npy, to numpy."""
from __future__ import annotations

import math

import numpy as np

from .errors import CaffeFormatError
from .files import map_binary
from .proto.wire import Decoder


def read_binaryproto(path) -> np.ndarray:
    """A mean .binaryproto as float32, Caffe layout: (C, H, W) for the usual single mean
    image (legacy num=1 dropped), else the blob's full shape."""
    buf = map_binary(path, what="mean .binaryproto")
    try:
        blob = Decoder(buf, str(path)).message("BlobProto")
    except CaffeFormatError:
        if _is_net(buf):
            raise CaffeFormatError(_NET_GIVEN, path=path) from None
        raise
    if blob.has("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    elif any(blob.has(k) for k in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        raise CaffeFormatError(_NET_GIVEN if _is_net(buf) else
                               "holds no blob shape (no 'shape', no num/channels/height/"
                               "width): not a mean .binaryproto", path=path)
    data = blob.get("double_data")  # as Caffe's Blob::FromProto: double_data first
    if data is None or len(data) == 0:
        data = blob.get("data")
    if data is None or len(data) == 0:
        raise CaffeFormatError("holds no data: not a mean .binaryproto", path=path)
    if len(shape) > 32 or any(d < 0 for d in shape) or math.prod(shape) != len(data):
        raise CaffeFormatError(f"blob shape {list(shape)} needs {math.prod(shape)} values but "
                               f"the file holds {len(data)} (truncated or corrupted)", path=path)
    arr = np.array(data, dtype=np.float32).reshape(shape)  # copy: the file map can close
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


_NET_GIVEN = ("this is a net (a .caffemodel: layers with weights), expected a mean "
              ".binaryproto (one blob)")


def _is_net(buf) -> bool:
    try:
        net = Decoder(buf, only={"NetParameter": {"layer", "layers"},
                                 "LayerParameter": {"name"}, "V1LayerParameter": {"name"}}
                      ).message("NetParameter")
    except CaffeFormatError:
        return False
    return bool(net.layer or net.layers)


def read_mean(path) -> np.ndarray:
    """A mean from .binaryproto or .npy (C,H,W or C values)."""
    p = str(path)
    if p.endswith(".npy"):
        try:
            arr = np.load(p, allow_pickle=False)  # never unpickle: object arrays are refused
        except (OSError, ValueError, EOFError) as e:
            raise CaffeFormatError(f"cannot read as .npy: {e}", path=p) from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise CaffeFormatError(f"holds {getattr(arr, 'dtype', type(arr).__name__)} data, "
                                   f"expected numbers (a mean image or per-channel values)",
                                   path=p)
        return np.asarray(arr, dtype=np.float32)
    return read_binaryproto(p)
