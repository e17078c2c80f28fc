"""The protobuf binary decoder: values, zero-copy blob data, and corrupted bytes."""
import struct

import numpy as np
import pytest

from caffe2keras.errors import CaffeFormatError
from caffe2keras.proto.wire import Decoder, decode_message
from caffe2keras.writer import varint


def tag(number, wire):
    return varint(number << 3 | wire)


def ld(number, payload):
    return tag(number, 2) + varint(len(payload)) + payload


def floats(*v):
    return np.array(v, "<f4").tobytes()


def test_varints_and_integer_kinds():
    # ConvolutionParameter: num_output uint32, axis int32; InterpParameter height int32
    b = (tag(1, 0) + varint(300) + tag(16, 0) + varint(-2) + tag(2, 0) + varint(0))
    c = decode_message(b, "ConvolutionParameter")
    assert (c.num_output, c.axis, c.bias_term) == (300, -2, False)
    # over-long values keep protobuf's low bits: uint32 of 2**32+5 is 5
    c = decode_message(tag(1, 0) + varint(2**32 + 5), "ConvolutionParameter")
    assert c.num_output == 5
    # int64 dims, negative ones included
    s = decode_message(tag(1, 0) + varint(-7) + tag(1, 0) + varint(2**40), "BlobShape")
    assert s.dim == [-7, 2**40]
    # packed dims (how Caffe writes BlobShape)
    s = decode_message(ld(1, varint(2) + varint(3) + varint(2**35)), "BlobShape")
    assert s.dim == [2, 3, 2**35]


def test_enums_known_and_unknown():
    p = decode_message(tag(1, 0) + varint(1), "PoolingParameter")
    assert p.pool == "AVE"
    p = decode_message(tag(1, 0) + varint(9), "PoolingParameter")
    assert p.pool == 9  # unknown values stay numbers (protobuf keeps them as unknown)


def test_strings_floats_doubles_and_nested_messages():
    b = (ld(1, b"conv\xff") + ld(2, b"Convolution") + ld(3, b"data") + ld(3, b"x")
         + tag(5, 5) + struct.pack("<f", 0.5)
         + ld(106, tag(1, 0) + varint(8) + ld(7, ld(1, b"xavier"))))
    m = decode_message(b, "LayerParameter")
    assert m.name == "conv\ufffd" and m.type == "Convolution" and m.bottom == ["data", "x"]
    assert m.loss_weight == [0.5]
    assert m.convolution_param.num_output == 8
    assert m.convolution_param.weight_filler.type == "xavier"
    d = decode_message(ld(8, np.array([1.5, -2], "<f8").tobytes()), "BlobProto")
    assert d.double_data.dtype == np.float64 and list(d.double_data) == [1.5, -2.0]


def test_packed_blob_data_are_views_on_the_buffer_not_copies():
    data = np.arange(1000, dtype="<f4")
    buf = bytearray(ld(7, ld(1, varint(10) + varint(100))) + ld(5, data.tobytes()))
    b = decode_message(buf, "BlobProto")
    assert np.array_equal(b.data, data)
    assert np.shares_memory(b.data, np.frombuffer(buf, np.uint8))
    buf[-4:] = struct.pack("<f", 7.0)  # the view sees the buffer
    assert b.data[-1] == 7.0


def test_unpacked_and_chunked_float_fields_read_as_one_array():
    vals = np.arange(300, dtype="<f4")
    b = b"".join(tag(5, 5) + struct.pack("<f", v) for v in vals[:200])
    b += tag(6, 5) + struct.pack("<f", 9.0)  # another field ends the run
    b += b"".join(tag(5, 5) + struct.pack("<f", v) for v in vals[200:])
    b += ld(5, floats(1, 2)) + ld(5, floats(3))  # then packed chunks
    m = decode_message(b, "BlobProto")
    assert np.array_equal(m.data, np.r_[vals, 1, 2, 3])
    assert list(m.diff) == [9.0]


def test_many_chunks_are_joined_once_not_pairwise():
    """100k one-value chunks: joining each to the last (quadratic) took minutes."""
    import time
    b = (tag(5, 5) + struct.pack("<f", 1.0) + tag(6, 5) + struct.pack("<f", 2.0)) * 100000
    t = time.process_time()
    m = decode_message(b, "BlobProto")
    assert time.process_time() - t < 2
    assert m.data.shape == (100000,) and m.diff.shape == (100000,)


def test_unknown_fields_and_groups_are_skipped():
    b = (tag(99, 0) + varint(5) + tag(98, 1) + b"x" * 8 + tag(97, 5) + b"y" * 4
         + ld(96, b"zz") + tag(95, 3) + tag(1, 0) + varint(1) + tag(95, 4)
         + tag(1, 0) + varint(4))
    c = decode_message(b, "ConvolutionParameter")
    assert c.num_output == 4
    assert [n for n, _ in c._unknown] == [99, 98, 97, 96, 95]


def test_only_filter_skips_unwanted_fields_unread():
    b = ld(1, b"conv") + ld(106, b"\xff\xff garbage never parsed")
    m = Decoder(b, only={"LayerParameter": {"name"}}).message("LayerParameter")
    assert m.name == "conv" and not m.has("convolution_param")


def _error(buf, type_name="NetParameter"):
    with pytest.raises(CaffeFormatError) as e:
        decode_message(buf, type_name, path="w.caffemodel")
    assert str(e.value).startswith("w.caffemodel:byte ")
    return str(e.value)


def test_corruptions_are_errors_with_byte_offsets():
    assert "byte 0: truncated varint" in _error(b"\x80\x80")
    assert "byte 0: varint longer than 10 bytes" in _error(b"\x80" * 12 + b"\x01")
    assert "byte 0: field number 0" in _error(b"\x00\x01")
    assert "invalid wire type 7 for field 1" in _error(tag(1, 7))
    msg = _error(ld(1, b"abc")[:-1])
    assert "byte 1: 'name' (NetParameter) claims 3 bytes but only 2 remain" in msg
    assert "truncated" in msg
    assert "runs 4 bytes past the end" in _error(tag(99, 1) + b"1234")
    assert "mismatched end of group 2, expected 1" in _error(tag(1, 3) + tag(2, 4))
    msg = _error(ld(5, b"123456"), "BlobProto")
    assert "'data' (BlobProto) holds 6 bytes, not a multiple of 4 (float values)" in msg
    assert "groups nested too deeply" in _error(tag(1, 3) * 100)


def test_errors_inside_a_layer_name_it():
    layer = ld(1, b"conv7") + ld(7, ld(5, b"\x00" * 7))
    msg = _error(ld(100, layer))
    assert "layer 'conv7'" in msg and "holds 7 bytes, not a multiple of 4" in msg
    # before the name is read, the entry's offset stands in for it
    msg = _error(ld(100, tag(7, 2) + varint(50) + b"x"))
    assert "layer '(unnamed yet: the first entry, at byte 3)'" in msg
    msg = _error(ld(100, ld(1, b"first")) + ld(100, tag(7, 2) + varint(50) + b"x"))
    assert "layer '(unnamed yet: the entry at byte 13, after layer 'first')'" in msg
    # V1 entries too
    msg = _error(ld(2, ld(4, b"old") + tag(6, 2) + varint(9)))
    assert "layer 'old'" in msg and "claims 9 bytes but only 0 remain" in msg


def test_offsets_past_4_gib_are_python_ints():
    d = Decoder(b"", path="x")
    assert "byte 5000000000" in str(d.error("x", 5_000_000_000))
