"""One error type for every malformed input: CaffeFormatError, naming file, position (byte
offset or line:column), layer where known, and what was expected. Each hostile input here
is checked through the Python API and through the CLI (one line on stderr, exit 1)."""
import numpy as np
import pytest

import caffe2keras
from caffe2keras.cli import main
from caffe2keras.errors import CaffeFormatError, UnsupportedLayerError
from caffe2keras.graph import load_graph
from caffe2keras.writer import CaffeNetWriter, varint

from .shared import MODELS


def test_the_error_type_and_its_format():
    assert caffe2keras.CaffeFormatError is CaffeFormatError
    assert issubclass(CaffeFormatError, ValueError)
    assert issubclass(UnsupportedLayerError, CaffeFormatError)
    e = CaffeFormatError("expected 2 blobs, found 1", path="n.prototxt", position="3:7",
                         layer="conv1")
    assert str(e) == "n.prototxt:3:7: layer 'conv1': expected 2 blobs, found 1"
    assert (e.path, e.position, e.layer, e.detail) == ("n.prototxt", "3:7", "conv1",
                                                       "expected 2 blobs, found 1")
    assert str(CaffeFormatError("x", position="byte 9")) == "at byte 9: x"
    assert str(CaffeFormatError("x", path="w.caffemodel", position="byte 9")) == \
        "w.caffemodel:byte 9: x"
    filled = CaffeFormatError("bad kernel", layer="p").with_context(path="d.prototxt",
                                                                     layer="ignored")
    assert str(filled) == "d.prototxt: layer 'p': bad kernel"


HEAD = 'name: "t"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'


def _ld(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _weights(tmp_path, blob_bytes, name=b"conv"):
    p = tmp_path / "w.caffemodel"
    p.write_bytes(_ld(100, _ld(1, name) + _ld(2, b"Convolution") + _ld(7, blob_bytes)))
    return p


def _prototxt(tmp_path, text, name="d.prototxt"):
    p = tmp_path / name
    p.write_text(text)
    return p


CONV = HEAD + ('layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
               '  convolution_param { num_output: 2 kernel_size: 1 } }\n')

# (name, files builder -> (prototxt, caffemodel or None), [expected message pieces])
CASES = {
    "length past the end": (
        lambda t: (_prototxt(t, CONV), _weights(t, _ld(5, b"\x00" * 8)[:-2] + b"")),
        ["w.caffemodel:byte ", "claims", "remain (file truncated or corrupted)"]),
    "varint past the end": (
        lambda t: (_prototxt(t, CONV), _write(t, "w.caffemodel", _ld(100, _ld(1, b"conv"))
                                              + b"\xa2\x06\xff\xff")),
        [("w.caffemodel:byte 11: layer '(unnamed yet: the entry at byte 11, after layer "
         "'conv')': truncated varint (file cut short or corrupted)")]),
    "blob data disagree with its shape": (
        lambda t: (_prototxt(t, CONV), _weights(
            t, _ld(7, _ld(1, varint(2) + varint(3))) + _ld(5, np.zeros(5, "<f4").tobytes()))),
        ["w.caffemodel:byte ", "layer 'conv'", ("blob 0 of layer 'conv' declares shape "
         "[2, 3] (6 values) but holds 5 values")]),
    "negative dims in weights": (
        lambda t: (_prototxt(t, CONV), _weights(
            t, _ld(7, _ld(1, varint(-2))) + _ld(5, b""))),
        ["layer 'conv'", "has negative dimensions [-2]"]),
    "absurd dims in weights": (
        lambda t: (_prototxt(t, CONV), _weights(
            t, _ld(7, _ld(1, varint(10**6) + varint(10**6))) + _ld(5, b"\x00" * 4))),
        ["layer 'conv'", "[1000000, 1000000]: 1000000000000 values, more than Caffe's limit"]),
    "absurd input shape": (
        lambda t: (_prototxt(t, 'input: "data"\ninput_shape { dim: 1000000 dim: 1000000 }\n'
                               'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }'),
                   None),
        ["d.prototxt:2:13: ", ("input 'data' shape [1000000, 1000000] holds 1,000,000,000,000 "
         "values, more than Caffe's limit of 2,147,483,647 per blob")]),
    "negative input shape": (
        lambda t: (_prototxt(t, 'input: "data"\ninput_dim: 1 input_dim: -3 input_dim: 2 '
                               'input_dim: 2\nlayer { name: "r" type: "ReLU" bottom: "data" '
                               'top: "r" }'), None),
        ["d.prototxt", "input 'data' shape has a negative dimension: [1, -3, 2, 2]"]),
    "absurd layer parameter": (
        lambda t: (_prototxt(t, HEAD + 'layer { name: "fc" type: "InnerProduct" bottom: "data" '
                                       'top: "fc" inner_product_param { num_output: '
                                       '100000000 } }'), None),
        [("d.prototxt:4:7: layer 'fc': parameter blob 0 would have shape [100000000, 192]: "
         "19,200,000,000 values, more than Caffe's limit of 2,147,483,647 per blob")]),
    "absurd tiling": (
        lambda t: (_prototxt(t, HEAD + 'layer { name: "t" type: "Tile" bottom: "data" '
                                       'top: "t" tile_param { axis: 0 tiles: 1000000000 } }'),
                   None),
        ["layer 't': output 0 would have shape [1000000000, 3, 8, 8]"]),
    "duplicate top": (
        lambda t: (_prototxt(t, HEAD + 'layer { name: "a" type: "ReLU" bottom: "data" top: "x" }'
                                       '\nlayer { name: "b" type: "Sigmoid" bottom: "data" '
                                       'top: "x" }'), None),
        [("d.prototxt:5:7: layer 'b': top 'x' is already produced by 'a'; a blob may only be "
         "rewritten in place (top == bottom)")]),
    "top listed twice": (
        lambda t: (_prototxt(t, HEAD + 'layer { name: "s" type: "Split" bottom: "data" '
                                       'top: "x" top: "x" }'), None),
        ["layer 's': lists a top twice: ['x', 'x']"]),
    "bottom nobody produces": (
        lambda t: (_prototxt(t, HEAD + 'layer { name: "r" type: "ReLU" bottom: "dta" '
                                       'top: "r" }'), None),
        [("d.prototxt:4:7: layer 'r': bottom 'dta' is not produced by any earlier layer or "
         "input; known blobs: data")]),
    "cycle": (
        lambda t: (_prototxt(t, HEAD + 'layer { name: "a" type: "Eltwise" bottom: "data" '
                                       'bottom: "y" top: "x" }\nlayer { name: "b" type: "ReLU" '
                                       'bottom: "x" top: "y" }'), None),
        [("layer 'a': bottom 'y' is not produced by any earlier layer or input; it is produced "
         "later by layer 'b' (layers must come after their inputs, and nets cannot have "
         "cycles)")]),
    "nesting too deep": (
        lambda t: (_prototxt(t, HEAD + "x { " * 150 + "}" * 150), None),
        ["d.prototxt:4:", "messages nested deeper than 100 levels"]),
    "syntax error": (
        lambda t: (_prototxt(t, HEAD + 'layer { name: "r" type: "ReLU" bottom: "data" '
                                       'top: "r"\n'), None),
        [("d.prototxt:5:1: unexpected end of file, expected '}' to close the block opened "
         "at 4:7")]),
    "empty prototxt": (
        lambda t: (_write(t, "d.prototxt", b""), None),
        ["d.prototxt: file is empty, expected a text prototxt"]),
    "empty caffemodel": (
        lambda t: (_prototxt(t, CONV), _write(t, "w.caffemodel", b"")),
        ["w.caffemodel: file is empty, expected a binary caffemodel"]),
    "directory as prototxt": (
        lambda t: (t, None),
        [": is a directory, expected a file"]),
    "caffemodel given as prototxt": (
        lambda t: (MODELS / "mtcnn" / "det1.caffemodel", None),
        [("det1.caffemodel: this is a binary file (a .caffemodel or .binaryproto?), expected "
         "a text prototxt")]),
    "prototxt given as caffemodel": (
        lambda t: (MODELS / "mtcnn" / "det1.prototxt", MODELS / "mtcnn" / "det1.prototxt"),
        ["det1.prototxt: this is a text file (a .prototxt?), expected a binary caffemodel"]),
    "wrong blob count": (
        lambda t: _net_with_blobs(t, [np.zeros((2, 3, 1, 1), np.float32)]),
        [("d.prototxt:4:7: layer 'conv': expected 2 weight blobs [[2, 3, 1, 1], [2]] for this "
         "Convolution, found 1 [[2, 3, 1, 1]] in")]),
    "wrong blob shape": (
        lambda t: _net_with_blobs(t, [np.zeros((2, 3, 3, 3), np.float32),
                                      np.zeros(2, np.float32)]),
        ["layer 'conv': weight blob 0 has shape [2, 3, 3, 3] in", ("but the prototxt implies "
         "[2, 3, 1, 1]")]),
    "missing weights": (
        lambda t: (_prototxt(t, CONV), _weights_of(t, "other", [np.zeros(1, np.float32)])),
        ["layer 'conv': Convolution layer has no weights in", ("(expected 2 blobs: "
         "[[2, 3, 1, 1], [2]]); is this the caffemodel for this prototxt?")]),
    "corrupted weights": (
        lambda t: (MODELS / "mtcnn" / "det1.prototxt", _corrupt(
            t, (MODELS / "mtcnn" / "det1.caffemodel").read_bytes())),
        [("w.caffemodel:byte 125: layer '(unnamed yet: the entry at byte 124, after layer "
         "'data12')': invalid wire type 7 for field 1 (corrupted data)")]),
}


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _weights_of(tmp_path, layer, blobs):
    w = CaffeNetWriter().input("data", (1, 3, 8, 8))
    w.layer(layer, "Convolution", "data", layer, blobs=blobs)
    w.write_caffemodel(tmp_path / "w.caffemodel", params=False)
    return tmp_path / "w.caffemodel"


def _net_with_blobs(tmp_path, blobs):
    return _prototxt(tmp_path, CONV), _weights_of(tmp_path, "conv", blobs)


def _corrupt(tmp_path, data):
    data = bytearray(data)
    data[124] = 0x0F  # the second layer's name tag, now field 1 with wire type 7
    return _write(tmp_path, "w.caffemodel", bytes(data))


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_one_clear_error(case, tmp_path, capsys):
    build, pieces = CASES[case]
    prototxt, weights = build(tmp_path)
    with pytest.raises(CaffeFormatError) as e:
        load_graph(prototxt, weights)
    msg = str(e.value)
    for piece in pieces:
        assert piece in msg, f"{piece!r} not in {msg!r}"
    assert "\n" not in msg and "Traceback" not in msg
    # the CLI: that one line, exit status 1
    args = ["inspect", str(prototxt)] + ([str(weights)] if weights else [])
    assert main(args) == 1
    err = capsys.readouterr().err.splitlines()
    err = [x for x in err if not x.startswith("warning: ")]
    assert err == [f"caffe2keras: error: {msg}"]
