"""The prototxt (protobuf text format) reader: values, syntax, positions, hostile text."""
import math
import time

import pytest

from caffe2keras.errors import CaffeFormatError
from caffe2keras.proto.text import MAX_DEPTH, parse_text


def layer(text):
    return parse_text(text, "LayerParameter", path="t.prototxt")


def test_scalars_of_every_kind():
    m = layer('''
        name: "a\\tb\\"c\\\\d\\101\\x42" type: 'Conv' 'olution'   # adjacent strings join
        bottom: "x" bottom: "y"
        loss_weight: [1, 2.5, -3e2, .5, 1.f, inf, -inf, nan]
        propagate_down: true propagate_down: False propagate_down: t propagate_down: 0
        convolution_param { num_output: 0x10 kernel_size: 010 pad: 0 group: +2
                            engine: CUDNN bias_term: false axis: -1 }
        pooling_param < pool: 1 >
        relu_param: { negative_slope: -0.25 }
    ''')
    assert m.name == 'a\tb"c\\dAB'
    assert m.type == "Convolution"
    assert m.bottom == ["x", "y"]
    lw = m.loss_weight
    assert lw[:6] == [1.0, 2.5, -300.0, 0.5, 1.0, math.inf] and lw[6] == -math.inf
    assert math.isnan(lw[7])
    assert m.propagate_down == [True, False, True, False]
    c = m.convolution_param
    assert (c.num_output, c.kernel_size, c.pad, c.group) == (16, [8], [0], 2)  # 010 is octal
    assert c.engine == "CUDNN" and c.bias_term is False and c.axis == -1
    assert m.pooling_param.pool == "AVE"  # an enum by number
    assert m.relu_param.negative_slope == -0.25


def test_defaults_and_has():
    m = layer('name: "p" pooling_param { kernel_size: 2 }')
    p = m.pooling_param
    assert p.has("kernel_size") and not p.has("stride")
    assert (p.stride, p.pool, p.pad, p.global_pooling) == (1, "MAX", 0, False)
    assert m.convolution_param.bias_term is True  # unset message: all defaults
    assert not m.has("convolution_param")
    assert m.bottom == []


def test_repeated_optional_field_keeps_the_last_value_as_cpp_does():
    m = layer("pooling_param { kernel_size: 2 kernel_size: 3 }")
    assert m.pooling_param.kernel_size == 3


def test_round_mode_and_ceil_mode_share_field_13():
    p = layer("pooling_param { round_mode: FLOOR ceil_mode: true }").pooling_param
    assert p.has("ceil_mode") and not p.has("round_mode")
    p = layer("pooling_param { ceil_mode: false round_mode: FLOOR }").pooling_param
    assert p.has("round_mode") and not p.has("ceil_mode")


def test_separators_and_comments():
    m = parse_text('name: "n"; input: "a", input: "b"  # comment { not parsed\n'
                   'input_dim: 1 # another\n', "NetParameter")
    assert m.input == ["a", "b"] and m.input_dim == [1]


def test_unknown_fields_are_kept_with_their_position_for_warnings():
    m = layer('name: "x"\n  fancy_option: 3\n  fancy_block { a: 1 b { c: "d" } }\n'
              '  relu_param { new_knob: 1.5 }')
    assert m._unknown == [("fancy_option", "2:3"), ("fancy_block", "3:3")]
    assert m.relu_param._unknown == [("new_knob", "4:16")]
    # unknown fields may hold any value protobuf text allows: lists, blocks, strings
    m = layer('fork_list: [1, 2.5, -3] fork_msgs: [{a: 1}, <b: "c">] fork_empty: []\n'
              'fork_str: "a" "b" fork_enum: FOO fork_colon_block: { x: 1 }')
    assert [n for n, _ in m._unknown] == ["fork_list", "fork_msgs", "fork_empty", "fork_str",
                                          "fork_enum", "fork_colon_block"]
    # messages whose contents only training uses accept anything silently
    m = layer("data_param { source: 'x' prefetch: 4 backend: LMDB }")
    assert m.data_param.source == "x" and m.data_param._unknown == []


@pytest.mark.parametrize("text,where,message", [
    ('name: "x" $', "1:11", "unexpected character '$'"),
    ('name: "x"\nconvolution_param { num_output: 3\n', "3:1",
     "unexpected end of file, expected '}' to close the block opened at 2:19"),
    ('name "x"', "1:6", "expected ':' after 'name', found '\"x\"'"),
    ("name: x", "1:7", "expected a quoted string for 'name' (LayerParameter), found 'x'"),
    ("convolution_param { num_output: 1.5 }", "1:33",
     "expected an integer for 'num_output' (ConvolutionParameter), found '1.5'"),
    ("convolution_param { num_output: -1 }", "1:33",
     "-1 is out of range for 'num_output' (ConvolutionParameter) (uint32)"),
    ("convolution_param { axis: 2147483648 }", "1:27", "out of range for 'axis'"),
    ("convolution_param { kernel_size: 09 }", "1:34", "bad octal integer '09'"),
    ("pooling_param { pool: MAXIMUM }", "1:23",
     "expected one of MAX, AVE, STOCHASTIC for 'pool' (PoolingParameter), found 'MAXIMUM'"),
    ("convolution_param { bias_term: yes }", "1:32", "expected true or false"),
    ("relu_param { negative_slope: x }", "1:30", "expected a number"),
    ("convolution_param 3", "1:19", "expected '{' to open 'convolution_param'"),
    ("} name: 'x'", "1:1", "expected a field name, found '}'"),
    ('name: "a\\qb"', "1:7", "unknown escape '\\q' in string"),
    ("loss_weight: [1 2]", "1:17", "expected ',' or ']', found '2'"),
    ("loss_weight: ", "1:14", "unexpected end of file, expected a value for 'loss_weight'"),
    ("foo: [1, 2", "1:11", "unexpected end of file, expected ',' or ']'"),
    ("foo: [1; 2]", "1:8", "expected ',' or ']', found ';'"),
])
def test_syntax_errors_name_file_line_and_column(text, where, message):
    with pytest.raises(CaffeFormatError) as e:
        layer(text)
    assert e.value.path == "t.prototxt" and e.value.position == where, str(e.value)
    assert message in str(e.value)
    assert str(e.value).startswith(f"t.prototxt:{where}: ")
    assert "\n" not in str(e.value)


def test_nesting_depth_is_limited_like_protobuf():
    ok = "fancy { " * (MAX_DEPTH - 1) + "}" * (MAX_DEPTH - 1)
    parse_text(ok, "LayerParameter")  # unknown blocks nest as deep as protobuf allows
    deep = "fancy { " * (MAX_DEPTH + 1) + "}" * (MAX_DEPTH + 1)
    with pytest.raises(CaffeFormatError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_text(deep, "LayerParameter")
    t = time.process_time()
    with pytest.raises(CaffeFormatError, match="nested deeper"):
        parse_text("a { " * 100000, "LayerParameter")
    assert time.process_time() - t < 2


@pytest.mark.parametrize("token", ["1" * 100000, "1" * 100000 + "x", "1" * 100000 + ".5.",
                                   "0x" + "f" * 100000, "." + "5" * 100000 + "e"])
def test_huge_tokens_take_linear_time(token):
    """A regex that can split a digit run two ways took quadratic time (0.4 s for 5000
    digits, minutes for 100k): every token kind must now fail or parse in one pass."""
    for field in ("input_dim", "name"):
        t = time.process_time()
        with pytest.raises(CaffeFormatError):
            parse_text(f"{field}: {token}", "NetParameter")
        assert time.process_time() - t < 0.5, (field, token[:20])


def test_absurd_numbers_are_range_errors_not_crashes():
    with pytest.raises(CaffeFormatError, match=r"'1111111111.*\.\.\.' is out of range"):
        parse_text("input_dim: " + "1" * 5000, "NetParameter")
    with pytest.raises(CaffeFormatError, match="out of range"):
        parse_text("state { level: 0x" + "f" * 60 + " }", "NetParameter")
    m = parse_text("relu_param { negative_slope: 1e999 }", "LayerParameter")
    assert m.relu_param.negative_slope == math.inf  # as protobuf: overflow reads as inf


def test_real_prototxts_parse_with_positions():
    from .shared import MODELS
    p = MODELS / "open_nsfw" / "deploy.prototxt"
    m = parse_text(p.read_text(), "NetParameter", path=p)
    assert len(m.layer) > 100
    first = m.layer[0]
    assert first._pos.count(":") == 1 and first.name
    assert all(int(a._pos.split(":")[0]) < int(b._pos.split(":")[0])
               for a, b in zip(m.layer, m.layer[1:]))
