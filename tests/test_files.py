"""Opening inputs with clear errors, and atomic outputs (files.atomic_output)."""
import os
import stat

import numpy as np
import pytest

from caffe2keras.errors import CaffeFormatError
from caffe2keras.files import atomic_output, looks_binary, map_binary, read_text

from .shared import CONFORMANCE, MODELS


def _listing(d):
    return sorted(p.name for p in d.iterdir())


def test_success_replaces_in_one_step(tmp_path):
    dest = tmp_path / "out.npy"
    with atomic_output(dest) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)  # same folder: rename is atomic
        assert not dest.exists()
        np.save(tmp, np.arange(3))
        assert not dest.exists()  # nothing visible until the block succeeds
    assert np.array_equal(np.load(dest), np.arange(3))
    assert _listing(tmp_path) == ["out.npy"]


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_error_or_ctrl_c_leaves_no_partial_file(tmp_path, exc):
    dest = tmp_path / "model.keras"
    with pytest.raises(type(exc)), atomic_output(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"half a model")
        raise exc
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_error_or_ctrl_c_does_not_clobber_an_existing_file(tmp_path, exc):
    dest = tmp_path / "mean.npy"
    dest.write_bytes(b"the old, good output")
    with pytest.raises(type(exc)), atomic_output(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"garbage")
        raise exc
    assert dest.read_bytes() == b"the old, good output"
    assert _listing(tmp_path) == ["mean.npy"]


def test_new_files_get_normal_permissions(tmp_path):
    dest = tmp_path / "new.prototxt"
    old = os.umask(0o022)
    try:
        with atomic_output(dest) as tmp, open(tmp, "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644  # not mkstemp's private 0600


def test_replacing_a_file_keeps_its_mode(tmp_path):
    dest = tmp_path / "shared.npy"
    dest.write_bytes(b"old")
    os.chmod(dest, 0o664)
    with atomic_output(dest) as tmp, open(tmp, "wb") as f:
        f.write(b"new")
    assert dest.read_bytes() == b"new"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o664


def test_bad_output_locations_are_clear_errors(tmp_path):
    with pytest.raises(CaffeFormatError, match="output folder does not exist"), \
            atomic_output(tmp_path / "nope" / "x.npy"):
        pass
    with pytest.raises(CaffeFormatError, match="is a directory, expected an output file"), \
            atomic_output(tmp_path):
        pass


def test_input_checks(tmp_path):
    empty = tmp_path / "empty.prototxt"
    empty.write_bytes(b"")
    with pytest.raises(CaffeFormatError, match=r"empty\.prototxt: file is empty, expected a "
                                               r"text prototxt"):
        read_text(empty)
    with pytest.raises(CaffeFormatError, match="file is empty, expected a binary caffemodel"):
        map_binary(empty)
    with pytest.raises(CaffeFormatError, match="is a directory, expected a file"):
        read_text(tmp_path)
    with pytest.raises(CaffeFormatError, match="no such file"):
        map_binary(tmp_path / "missing.caffemodel")


def test_text_and_binary_are_told_apart_on_every_fixture():
    for p in list(CONFORMANCE.rglob("*.caffemodel")) + list(MODELS.rglob("*.caffemodel")) + \
            list(MODELS.rglob("*.binaryproto")):
        assert looks_binary(p.read_bytes()[:4096]), p
        with pytest.raises(CaffeFormatError, match="binary file.*expected a text prototxt"):
            read_text(p)
    for p in list(CONFORMANCE.rglob("*.prototxt")) + list(MODELS.rglob("*.prototxt")):
        assert not looks_binary(p.read_bytes()[:4096]), p
        with pytest.raises(CaffeFormatError, match="text file.*expected a binary caffemodel"):
            map_binary(p)


def test_latin1_comments_are_read(tmp_path):
    p = tmp_path / "old.prototxt"
    p.write_bytes("# caf\xe9 cr\xe8me\nname: \"x\"\n".encode("latin-1"))
    assert not looks_binary(p.read_bytes())
    assert read_text(p).startswith("# caf\xe9")
