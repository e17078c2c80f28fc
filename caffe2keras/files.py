"""Opening input files with clear errors, and writing outputs atomically."""
from __future__ import annotations

import contextlib
import mmap
import os
import re
import tempfile
from pathlib import Path

from .errors import CaffeFormatError


def _check_file(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise CaffeFormatError("no such file", path=p)
    if p.is_dir():
        raise CaffeFormatError("is a directory, expected a file", path=p)
    if not p.is_file():
        raise CaffeFormatError("is not a regular file", path=p)
    return p


# Control bytes that text never holds but protobuf tags and lengths often are
# (0x08 varint tag of field 1, 0x12 string tag of field 2, ...). Tab, LF, VT, FF, CR
# are text.
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13)) + b"\x7f"


def looks_binary(head: bytes) -> bool:
    """Protobuf binaries start with a field tag and hold control bytes and non-UTF-8
    bytes; text prototxts are printable."""
    if head.translate(None, _CONTROL) != head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        # not UTF-8: Latin-1 comments in an old prototxt are a few such bytes; data
        # would be mostly such bytes
        high = len(head) - len(head.translate(None, bytes(range(128, 256))))
        return high > len(head) // 4
    return False


def read_text(path, what="prototxt") -> str:
    p = _check_file(path)
    data = p.read_bytes()
    if not data.strip():
        raise CaffeFormatError(f"file is empty, expected a text {what}", path=p)
    if looks_binary(data[:4096]):
        raise CaffeFormatError(
            f"this is a binary file (a .caffemodel or .binaryproto?), expected a text {what}",
            path=p)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Old prototxts carry Latin-1 comments; those bytes only occur in comments and
        # strings, so reading them as Latin-1 loses nothing the parser needs.
        return data.decode("latin-1")


def map_binary(path, what="caffemodel"):
    """Memory-map a binary file read-only. Returns the mmap (len() is the size)."""
    p = _check_file(path)
    size = p.stat().st_size
    if size == 0:
        raise CaffeFormatError(f"file is empty, expected a binary {what}", path=p)
    with open(p, "rb") as f:
        head = f.read(256)
        if _looks_text_proto(head):
            raise CaffeFormatError(
                f"this is a text file (a .prototxt?), expected a binary {what}", path=p)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    # Start reading the whole file in the background: every weight is read soon after.
    # Measured on the 553 MB VGG16 file from a cold cache: 0.21 s with WILLNEED, 0.35 s
    # with MADV_SEQUENTIAL (whose free-behind drops pages the checksum pass then refaults).
    with contextlib.suppress(AttributeError, OSError):
        mm.madvise(mmap.MADV_WILLNEED)
    return mm


def _looks_text_proto(head: bytes) -> bool:
    """Printable, and begins like protobuf text: a comment or a field name."""
    if looks_binary(head):
        return False
    text = head.decode("utf-8", errors="replace").lstrip()
    return bool(re.match(r"#|[A-Za-z_]\w*\s*[:{<]", text))


@contextlib.contextmanager
def atomic_output(path, suffix=None):
    """Yield a temporary path beside ``path`` (not yet created); on success the file
    written there replaces ``path`` in one rename. An error or Ctrl-C leaves no partial
    file and the old ``path`` untouched."""
    dest = Path(path)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise CaffeFormatError("output folder does not exist", path=parent)
    if dest.is_dir():
        raise CaffeFormatError("is a directory, expected an output file name", path=dest)
    suffix = suffix if suffix is not None else "".join(dest.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=parent)
    os.close(fd)
    # The writer creates the file itself: truncating an existing file instead makes ext4
    # flush its data to disk on close (0.2 s for 500 MB).
    os.unlink(tmp)
    try:
        yield tmp
        try:  # replacing a file keeps its mode; a new file gets a normal file's mode
            mode = dest.stat().st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)  # (reading the umask means setting it)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)  # mkstemp made it private
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
