"""The .keras zip written around its weights: no copy of the weights file is made.

HDF5 leaves a "userblock" free at the start of its file: the small entries
(config.json, metadata.json) and the zip headers go there (the last JSON padded with
spaces), and the weights entry's data begin 512 bytes before the HDF5 superblock (HDF5
looks for its superblock at 0, 512, 1024... bytes into its file). ``KerasZipSink`` is the
HDF5 sink of such a file; its ``close`` writes the zip's headers and directory.
"""
from __future__ import annotations

import struct
import time
import zlib

from .sinks import H5Sink

_WEIGHTS = "model.weights.h5"


class KerasZipSink(H5Sink):
    """model.weights.h5 written in place inside the .keras zip at ``path``; ``entries``:
    the other entries [(name, bytes)], stored before it."""

    def __init__(self, path, entries):
        self.path = path
        self.prefix, userblock, self.weights_header_at = _layout_prefix(entries)
        self.userblock = userblock
        super().__init__(path, userblock)

    def close(self):
        super().close()
        _finish_zip(self.path, self.prefix, self.userblock, self.weights_header_at)

    def abort(self):
        H5Sink.close(self)


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
