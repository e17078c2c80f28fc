"""The pickle sink: a list of ``{name, type, bottoms, tops, weights}`` (Caffe layout), for
other frameworks. The arrays pickle as numpy pickles them, but their bytes go out in
blocks straight from the mapped caffemodel. Load a pickle only from a source you trust.
"""
from __future__ import annotations

import pickle

import numpy as np

from ..pages import release
from . import slicing
from .sinks import Sink


class _ChunkedWriter:
    """File wrapper for the pickler: large buffers go out in blocks, and the mapped pages
    behind each block are dropped once written."""

    def __init__(self, f):
        self.f = f
        self.sources = {}    # address of a large array's data -> its bytes (uint8 view)

    def write(self, data):
        mv = memoryview(data)
        n = mv.nbytes
        if n <= slicing.BLOCK_BYTES:
            return self.f.write(mv)
        mv = mv.cast("B")
        src = self.sources.pop(np.frombuffer(mv, np.uint8, count=1).ctypes.data, None)
        for lo in range(0, n, slicing.BLOCK_BYTES):
            self.f.write(mv[lo:lo + slicing.BLOCK_BYTES])
            if src is not None:
                release([src[lo:lo + slicing.BLOCK_BYTES]])
        return n


_RECONSTRUCT = np.empty(0).__reduce__()[0]   # numpy's own unpickling entry point


class _Pickler(pickle.Pickler):
    """Arrays pickle as numpy pickles them (_reconstruct + raw bytes, so they load as
    ordinary writable arrays), but the bytes go out straight from the mapped file."""

    def __init__(self, writer):
        super().__init__(writer, protocol=5)
        self.writer = writer

    def reducer_override(self, obj):
        if type(obj) is not np.ndarray:
            return NotImplemented
        a = obj if obj.flags.c_contiguous else obj.copy(order="C")  # keeps 0-d arrays 0-d
        if a.nbytes > slicing.BLOCK_BYTES:
            self.writer.sources[a.ctypes.data] = a.reshape(-1).view(np.uint8)
        return (_RECONSTRUCT, (np.ndarray, (0,), b"b"),
                (1, a.shape, a.dtype, False, pickle.PickleBuffer(a)))


class PickleSink(Sink):
    """Groups are the list's entries (``make(name, {"type", "bottoms", "tops"})``), blobs
    their weights, kept as the mapped arrays until ``close`` pickles the list."""

    def __init__(self, path):
        self.path = path
        self.layers = []

    def make(self, path, attrs=None):
        attrs = attrs or {}
        self.layers.append({"name": path, "type": attrs.get("type"),
                            "bottoms": list(attrs.get("bottoms", ())),
                            "tops": list(attrs.get("tops", ())), "weights": []})
        return len(self.layers) - 1

    def label(self, group):
        return f"[{group}]['weights']"

    def put_blob(self, group, key, blob):
        self.layers[group]["weights"].append(blob)

    def array(self, group, key, shape, dtype, axis):
        raise NotImplementedError("the pickle format holds blobs as stored")

    def close(self):
        with open(self.path, "xb") as f:
            _Pickler(_ChunkedWriter(f)).dump(self.layers)

    def abort(self):
        self.layers = []
