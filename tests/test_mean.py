"""Mean files: Caffe's .binaryproto (legacy dims or shape) and .npy, and the `mean` command."""
import pickle

import numpy as np
import pytest

from caffe2keras.cli import main
from caffe2keras.errors import CaffeFormatError
from caffe2keras.mean import read_binaryproto, read_mean
from caffe2keras.writer import varint

from .shared import MODELS

REF = MODELS / "imagenet_reference_data"


def test_ilsvrc_mean_binaryproto_equals_the_npy():
    mean = read_binaryproto(REF / "ilsvrc_2012_mean.binaryproto")
    ref = np.load(REF / "ilsvrc_2012_mean.npy")
    assert mean.dtype == np.float32 and mean.shape == (3, 256, 256) == ref.shape
    assert np.array_equal(mean, ref)
    assert np.allclose(mean.reshape(3, -1).mean(1), [104.00699, 116.66877, 122.67892])
    assert np.array_equal(read_mean(REF / "ilsvrc_2012_mean.npy"), ref)


def _ld(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_shape_field_and_double_data(tmp_path):
    data = np.arange(24, dtype="<f8")
    blob = _ld(7, _ld(1, varint(2) + varint(3) + varint(4))) + _ld(8, data.tobytes())
    (tmp_path / "m.binaryproto").write_bytes(blob)
    m = read_binaryproto(tmp_path / "m.binaryproto")
    assert m.shape == (2, 3, 4) and m.dtype == np.float32
    assert np.array_equal(m.reshape(-1), data)
    # legacy dims with num > 1 keep all four axes
    legacy = (varint(1 << 3) + varint(2) + varint(2 << 3) + varint(1) + varint(3 << 3)
              + varint(1) + varint(4 << 3) + varint(2)
              + _ld(5, np.arange(4, dtype="<f4").tobytes()))
    (tmp_path / "l.binaryproto").write_bytes(legacy)
    assert read_binaryproto(tmp_path / "l.binaryproto").shape == (2, 1, 1, 2)


@pytest.mark.parametrize("content,message", [
    (_ld(7, _ld(1, varint(2) + varint(3))) + _ld(5, np.zeros(5, "<f4").tobytes()),
     "blob shape [2, 3] needs 6 values but the file holds 5 (truncated or corrupted)"),
    (_ld(7, _ld(1, varint(2))), "holds no data: not a mean .binaryproto"),
    (_ld(5, np.zeros(2, "<f4").tobytes()), "holds no blob shape"),
    (_ld(5, b"\x00" * 9)[:-3], "claims 9 bytes but only 6 remain"),
    (b"", "file is empty, expected a binary mean .binaryproto"),
    (b"name: 'x'\n", "this is a text file (a .prototxt?), expected a binary mean .binaryproto"),
])
def test_malformed_mean_files(tmp_path, content, message):
    p = tmp_path / "m.binaryproto"
    p.write_bytes(content)
    with pytest.raises(CaffeFormatError) as e:
        read_binaryproto(p)
    assert str(e.value).startswith(str(p)) and message in str(e.value)


def test_a_caffemodel_given_as_mean_is_named():
    with pytest.raises(CaffeFormatError, match=r"this is a net \(a \.caffemodel: layers with "
                                               r"weights\), expected a mean \.binaryproto"):
        read_binaryproto(MODELS / "mtcnn" / "det1.caffemodel")


class _Exploit:
    def __reduce__(self):
        import os
        return (os.mkdir, (str(_Exploit.marker),))


def test_never_unpickles(tmp_path):
    """An .npy holding a pickle (object array) is refused, and its payload never runs."""
    _Exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.npy"
    np.save(path, np.array([_Exploit()], dtype=object), allow_pickle=True)
    assert b"mkdir" in path.read_bytes()
    with pytest.raises(CaffeFormatError, match="cannot read as .npy.*allow_pickle"):
        read_mean(path)
    assert not _Exploit.marker.exists()
    p2 = tmp_path / "strings.npy"
    np.save(p2, np.array(["a", "b"]))
    with pytest.raises(CaffeFormatError, match="expected numbers"):
        read_mean(p2)
    assert pickle  # (the module is what np.save used above)


def test_mean_command(tmp_path, capsys):
    out = tmp_path / "mean.npy"
    assert main(["mean", str(REF / "ilsvrc_2012_mean.binaryproto"), "-o", str(out)]) == 0
    assert np.array_equal(np.load(out), np.load(REF / "ilsvrc_2012_mean.npy"))
    said = capsys.readouterr().out
    assert f"wrote {out}: shape (3, 256, 256), float32; per-channel mean 104.007, 116.669, " \
           f"122.679" in said
    # a bad input leaves an existing output alone, with one line and exit status 1
    bad = tmp_path / "bad.binaryproto"
    bad.write_bytes(b"\x0a\x05ab")
    assert main(["mean", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"caffe2keras: error: {bad}:byte ")
    assert np.array_equal(np.load(out), np.load(REF / "ilsvrc_2012_mean.npy"))
