"""Where exported arrays go: one small protocol, one sink per kind of file.

Like Keras's own weight stores (``make`` a group, put values in it, ``close``), a sink
has three calls, and every export writes through them:

- ``make(path, attrs=None) -> group``: the group of arrays at ``path`` (created once;
  ``attrs`` set on it: strings, or lists of strings);
- ``array(group, key, shape, dtype, axis) -> writer``: one array of the full ``shape``,
  which arrives as blocks ``writer.put(lo, hi, block)`` along ``axis`` (None: in one
  block), then ``writer.close()``;
- ``close()``: finish the file (``abort()`` instead when the export failed: release
  what is open, finish nothing).

``put_blob(group, key, blob)`` writes one Caffe blob as stored (the default streams its
rows through ``array``). The sinks: HDF5 (.weights.h5, keras2-h5, and the weights inside
a .keras zip, see keras_zip.py), npz, and pickle (pickled.py).
"""
from __future__ import annotations

import math

import numpy as np

from ..pages import release
from . import slicing

# HDF5 keeps attributes in the object header (64 KB); Keras splits longer lists.
_HDF5_ATTR_LIMIT = 64512


class Sink:
    """The protocol, with the blob-as-stored default."""

    def make(self, path, attrs=None):
        raise NotImplementedError

    def array(self, group, key, shape, dtype, axis):
        raise NotImplementedError

    def put_blob(self, group, key, blob):
        blob = np.asarray(blob)
        stream_raw(self.array(group, key, blob.shape, blob.dtype, 0), blob)

    def put_whole(self, group, key, value):
        value = np.asarray(value)
        w = self.array(group, key, value.shape, value.dtype, None)
        w.put(0, value.shape[0] if value.ndim else 1, value)
        w.close()

    def label(self, group):
        """How the verbose report names a group."""
        return f"{group}/*"

    def close(self):
        pass

    def abort(self):
        self.close()


def stream_raw(writer, blob):
    """A Caffe blob as stored, in blocks of rows; its pages dropped as they are written."""
    blob = np.asarray(blob)
    if blob.ndim == 0 or blob.nbytes <= slicing.BLOCK_BYTES:
        writer.put(0, blob.shape[0] if blob.ndim else 1, blob)
        release([blob])
    else:
        rows = max(1, slicing.BLOCK_BYTES * blob.shape[0] // blob.nbytes)
        for lo in range(0, blob.shape[0], rows):
            part = blob[lo:lo + rows]
            writer.put(lo, lo + part.shape[0], part)
            release([part])
    writer.close()


def write_result(result, targets):
    """Stream ``result`` into ``targets`` {(name, i): writer with put(lo, hi, block)}."""
    for part in result.blocks():
        for key, (lo, hi, block) in part.items():
            w = targets.get(key)
            if w is not None:
                w.put(lo, hi, block)
    for w in targets.values():
        w.close()


# ----------------------------------------------------------------------------- HDF5

class H5Sink(Sink):
    """Datasets in an HDF5 file, written whole or slab by slab. ``userblock``: bytes HDF5
    leaves free at the start of the file (the .keras zip headers go there)."""

    def __init__(self, path, userblock=0):
        import h5py

        # HDF5 1.10 structures (any h5py of the last years reads them): chunk indexes
        # that cost nothing to write, unlike 1.8's B-trees
        extra = {"userblock_size": userblock} if userblock else {}
        self.file = h5py.File(path, "x", libver=("earliest", "v110"), **extra)

    def make(self, path, attrs=None):
        g = self.file if path in ("", "/") else self.file.require_group(path)
        for k, v in (attrs or {}).items():
            if isinstance(v, list):
                set_list_attr(g, k, v)
            else:
                g.attrs[k] = v
        return g

    def exists(self, path):
        return path in self.file

    def array(self, group, key, shape, dtype, axis):
        return _H5Array(group, key, shape, axis)

    def close(self):
        self.file.close()


class _H5Array:
    """One dataset, written as its blocks arrive. A small array (a bias) is gathered and
    written once; a large one goes to a chunked dataset, one chunk per block, unless its
    blocks run along axis 0 (then plain slabs of a contiguous dataset)."""

    def __init__(self, group, key, shape, axis):
        self.group, self.key, self.shape, self.axis = group, key, shape, axis
        self.ds = None
        self.chunks = None
        self.parts = []
        self.small = axis is None or 4 * math.prod(shape) <= slicing.BLOCK_BYTES

    def put(self, lo, hi, block):
        if self.small:
            self.parts.append(block)
            return
        if self.ds is None:
            if self.axis != 0:
                chunks = list(self.shape)
                chunks[self.axis] = max(1, hi - lo)
                self.chunks = tuple(chunks)
            self.ds = self.group.create_dataset(self.key, shape=self.shape, dtype=block.dtype,
                                                chunks=self.chunks)
        block = np.ascontiguousarray(block)
        if self.chunks is not None and block.shape == self.chunks:
            # a whole chunk: hand HDF5 the bytes, skipping its selection machinery
            offset = [0] * len(self.shape)
            offset[self.axis] = lo
            self.ds.id.write_direct_chunk(tuple(offset), block)
            return
        self.ds[(slice(None),) * self.axis + (slice(lo, hi),)] = block

    def close(self):
        if self.small:
            data = self.parts[0] if len(self.parts) == 1 else \
                np.concatenate(self.parts, axis=self.axis)
            self.group.create_dataset(self.key, data=data)
            self.parts = []


def set_list_attr(group, name, values):
    """A list of strings as an HDF5 attribute, split like Keras's
    save_attributes_to_hdf5_group when it would overflow the object header."""
    data = np.asarray([v.encode("utf8") for v in values]) if values else np.zeros(0, "S1")
    chunks = 1
    parts = [data]
    while any(p.nbytes > _HDF5_ATTR_LIMIT for p in parts):
        chunks += 1
        parts = np.array_split(data, chunks)
    if chunks == 1:
        group.attrs[name] = data
    else:
        for i, p in enumerate(parts):
            group.attrs[f"{name}{i}"] = p


# ----------------------------------------------------------------------------- npz

class NpzSink(Sink):
    """A zip of .npy entries (what numpy.savez writes), ``GROUP/KEY.npy``, each streamed in
    blocks. Entries are written one at a time; arrays a step makes alongside a streamed one
    (its bias) are small and wait in memory."""

    def __init__(self, path):
        import zipfile

        self.zip = zipfile.ZipFile(path, "x", compression=zipfile.ZIP_STORED,
                                   allowZip64=True)
        self.streaming = None
        self.queue = []

    def make(self, path, attrs=None):
        return path

    def array(self, group, key, shape, dtype, axis):
        return _NpzArray(self, f"{group}/{key}" if group else key, shape, np.dtype(dtype),
                         axis)

    def close(self):
        self.zip.close()


class _NpzArray:
    def __init__(self, sink, key, shape, dtype, axis):
        self.sink, self.key, self.shape, self.dtype, self.axis = sink, key, shape, dtype, axis
        self.fortran = axis is not None and axis == len(shape) - 1 and len(shape) > 1
        self.file = None
        self.parts = []

    def _open(self):
        f = self.sink.zip.open(self.key + ".npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype),
                  "fortran_order": self.fortran, "shape": tuple(self.shape)}
        try:
            np.lib.format.write_array_header_1_0(f, header)
        except ValueError:  # header over 64 KB
            np.lib.format.write_array_header_2_0(f, header)
        return f

    def put(self, lo, hi, block):
        block = np.asarray(block, dtype=self.dtype)
        streamable = self.axis in (None, 0) or self.fortran
        if streamable and self.sink.streaming in (None, self):
            if self.file is None:
                self.file = self._open()
                self.sink.streaming = self
            # Fortran order: the last axis varies slowest, so its slabs are contiguous
            data = np.ascontiguousarray(block.T if self.fortran else block)
            self.file.write(memoryview(data).cast("B") if data.size else b"")
        else:
            self.parts.append((lo, hi, block))

    def close(self):
        if self.file is not None:
            self.file.close()
            self.sink.streaming = None
            queued, self.sink.queue = self.sink.queue, []
            for q in queued:
                q.close()
            return
        if self.sink.streaming is not None:
            self.sink.queue.append(self)
            return
        if self.axis is None:
            data = self.parts[0][2] if self.parts else np.zeros(self.shape, self.dtype)
        else:
            data = np.concatenate([p[2] for p in self.parts], axis=self.axis)
        self.parts = []
        with self.sink.zip.open(self.key + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(data), allow_pickle=False)
