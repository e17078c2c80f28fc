"""Axis and tensor ops (Eltwise, Concat, Slice, Split, Crop, Flatten, Reshape, Permute,
Softmax, ArgMax, Reduction, Tile, Silence) against real Caffe, the batch axis left
open, and transposes only where NHWC and NCHW memory orders differ."""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import caffe2keras
from caffe2keras.net import parse_net

from .shared import assert_blob_close, to_caffe_layout, to_keras_layout

# Real-Caffe outputs (tests/data/make_tensor_goldens.py); "*_batch" cases were run by
# Caffe at other batch sizes than their prototxt declares.
ARCHIVE = Path(__file__).resolve().parent / "data" / "tensor_goldens.npz"


@lru_cache(maxsize=1)
def _archive():
    with np.load(ARCHIVE) as z:
        return {k: z[k] for k in z.files}


def golden_cases(prefix):
    return sorted({k.split("/")[0] for k in _archive() if k.startswith(prefix)})


def check_golden(name, tmp_path):
    """Convert the case's net and compare every blob Caffe computed."""
    import keras

    a = _archive()
    deploy, weights = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    deploy.write_text(str(a[f"{name}/prototxt"]))
    weights.write_bytes(a[f"{name}/caffemodel"].tobytes())
    ins = {k.split("/", 2)[2]: v for k, v in a.items() if k.startswith(f"{name}/in/")}
    outs = {k.split("/", 2)[2]: v for k, v in a.items() if k.startswith(f"{name}/out/")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = caffe2keras.convert(deploy, weights, outputs="all")
    got = model({k: to_keras_layout(v) for k, v in ins.items()})
    assert len(outs) >= 5
    for blob, ref in outs.items():
        assert_blob_close(to_caffe_layout(keras.ops.convert_to_numpy(got[blob])), ref,
                          f"{name}:{blob}")
    return model


@pytest.mark.parametrize("name", golden_cases("tensor_"))
def test_matches_caffe(name, tmp_path):
    check_golden(name, tmp_path)


# -- layout: transposes only where the memory orders differ ----------------------------

def _convert_text(text, outputs="all"):
    from caffe2keras.emit.builder import build_model
    from caffe2keras.graph import build_graph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(build_graph(parse_net(text, "t.prototxt")), outputs=outputs)


def _transposes(model):
    return [lay.name for lay in model.layers
            if type(lay).__name__ in ("Permute", "Transpose")]


NET = '''
input: "x" input_shape { dim: 1 dim: 6 dim: 4 dim: 5 }
input: "g" input_shape { dim: 1 dim: 6 dim: 1 dim: 1 }
'''


def _layer(type_, params="", bottom="x", tops=("y",)):
    bottoms = (bottom,) if isinstance(bottom, str) else bottom
    ends = [f'bottom: "{b}"' for b in bottoms] + [f'top: "{t}"' for t in tops]
    return f'layer {{ name: "l" type: "{type_}" {" ".join(ends)} {params} }}'


@pytest.mark.parametrize("body,count", [
    (_layer("Concat", "concat_param { axis: 1 }", bottom=("x", "x")), 0),
    (_layer("Concat", "concat_param { axis: 3 }", bottom=("x", "x")), 0),
    (_layer("Eltwise", "eltwise_param { coeff: 2 coeff: 3 }", bottom=("x", "x")), 0),
    (_layer("Softmax"), 0),
    (_layer("Softmax", "softmax_param { axis: 2 }"), 0),
    (_layer("Slice", tops=("a", "b")), 0),
    (_layer("ArgMax", "argmax_param { axis: 1 }"), 0),
    (_layer("Reduction", "reduction_param { axis: 2 }"), 0),
    (_layer("Tile", "tile_param { tiles: 2 }"), 0),
    (_layer("Flatten", bottom="g"), 0),                                      # 1x1 maps
    (_layer("Reshape", "reshape_param { shape { dim: 0 dim: 0 dim: 2 dim: -1 } }"), 0),
    (_layer("Reshape", "reshape_param { shape { dim: 0 dim: 1 dim: 2 dim: 3 } }",
            bottom="g"), 0),                                                 # one channel
    (_layer("Flatten"), 1),
    (_layer("Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }"), 1),
    (_layer("Permute", "permute_param { order: 0 order: 1 order: 2 order: 3 }"), 0),
    (_layer("Reduction", "reduction_param { axis: 3 }"), 1),                # (N, C, H) out
    (_layer("Reshape", "reshape_param { shape { dim: 0 dim: 3 dim: 2 dim: -1 } }"), 2),
])
def test_transposes_only_where_memory_order_differs(body, count):
    model = _convert_text(NET + body)
    assert len(_transposes(model)) == count, _transposes(model)


def test_declared_batch_of_one_stays_a_batch_axis():
    """Exported nets declare batch 1 and reshape with a literal 1 (ultraface's
    "1, -1, 2"); the converted model keeps items apart at any batch size."""
    import keras

    model = _convert_text('''
        input: "x" input_shape { dim: 1 dim: 4 dim: 3 dim: 5 }
        layer { name: "p" type: "Permute" bottom: "x" top: "p"
                permute_param { order: 0 order: 2 order: 3 order: 1 } }
        layer { name: "r" type: "Reshape" bottom: "p" top: "r"
                reshape_param { shape { dim: 1 dim: -1 dim: 2 } } }
        layer { name: "s" type: "Softmax" bottom: "r" top: "s" softmax_param { axis: 2 } }
    ''', outputs=["s"])
    x = np.random.default_rng(0).standard_normal((3, 4, 3, 5)).astype("float32")
    whole = keras.ops.convert_to_numpy(model({"x": to_keras_layout(x)})["s"])
    assert whole.shape == (3, 30, 2)
    for i in range(3):
        one = keras.ops.convert_to_numpy(model({"x": to_keras_layout(x[i:i + 1])})["s"])
        np.testing.assert_allclose(whole[i:i + 1], one, rtol=1e-6)
        # Caffe's reading: NHWC order, pairs of channels
        ref = x[i].transpose(1, 2, 0).reshape(-1, 2)
        ref = np.exp(ref - ref.max(1, keepdims=True))
        np.testing.assert_allclose(whole[i], ref / ref.sum(1, keepdims=True), rtol=1e-5)


def test_split_and_single_concat_pass_the_tensor_through():
    model = _convert_text('''
        input: "x" input_shape { dim: 2 dim: 3 }
        layer { name: "s" type: "Split" bottom: "x" top: "a" top: "b" top: "c" }
        layer { name: "c1" type: "Concat" bottom: "a" top: "d" }
        layer { name: "sil" type: "Silence" bottom: "c" }
    ''')
    x = np.arange(6, dtype="float32").reshape(2, 3)
    got = model({"x": x})
    assert sorted(got) == ["a", "b", "c", "d", "x"]
    for k in got:
        np.testing.assert_array_equal(np.asarray(got[k]), x)


def test_flatten_orders_values_as_caffe_does():
    """The classic conv -> Flatten -> InnerProduct: Caffe flattens C, H, W."""
    import keras

    model = _convert_text(NET + 'layer { name: "f" type: "Flatten" bottom: "x" top: "f" }',
                          outputs=["f"])
    x = np.random.default_rng(1).standard_normal((1, 6, 4, 5)).astype("float32")
    got = keras.ops.convert_to_numpy(model({"x": to_keras_layout(x),
                                            "g": np.zeros((1, 1, 1, 6), "float32")})["f"])
    np.testing.assert_array_equal(got, x.reshape(1, -1))


def test_reshape_that_folds_the_batch_follows_the_batch_it_is_given():
    import keras

    model = _convert_text('''
        input: "x" input_shape { dim: 4 dim: 3 dim: 2 }
        layer { name: "r" type: "Reshape" bottom: "x" top: "r"
                reshape_param { shape { dim: -1 dim: 2 } } }
        layer { name: "f" type: "Flatten" bottom: "x" top: "f"
                flatten_param { axis: 0 end_axis: 1 } }
    ''')
    x = np.arange(7 * 6, dtype="float32").reshape(7, 3, 2)
    got = model({"x": x})
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got["r"]), x.reshape(-1, 2))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got["f"]), x.reshape(21, 2))


def test_permute_to_nhwc_then_flatten_needs_no_transpose():
    """SSD heads: Caffe permutes NCHW to NHWC order and flattens; in Keras the tensor
    already is NHWC, so only the reshape remains once the intermediate blob is not asked
    for."""
    import keras

    text = NET + '''
        layer { name: "p" type: "Permute" bottom: "x" top: "p"
                permute_param { order: 0 order: 2 order: 3 order: 1 } }
        layer { name: "f" type: "Flatten" bottom: "p" top: "f" }
        layer { name: "r" type: "Reshape" bottom: "p" top: "r"
                reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }
    '''
    x = np.random.default_rng(2).standard_normal((1, 6, 4, 5)).astype("float32")
    feed = {"x": to_keras_layout(x), "g": np.zeros((1, 1, 1, 6), "float32")}
    lean = _convert_text(text, outputs=["f", "r"])
    assert _transposes(lean) == []
    full = _convert_text(text, outputs=["p", "f", "r"])
    assert len(_transposes(full)) == 1
    for model in (lean, full):
        got = {k: keras.ops.convert_to_numpy(v) for k, v in model(feed).items()}
        np.testing.assert_array_equal(got["f"], x.transpose(0, 2, 3, 1).reshape(1, -1))
        np.testing.assert_array_equal(got["r"], x.transpose(0, 2, 3, 1).reshape(1, -1, 2))
    np.testing.assert_array_equal(to_caffe_layout(keras.ops.convert_to_numpy(full(feed)["p"])),
                                  x.transpose(0, 2, 3, 1))


def test_batch_folding_reshape_of_a_one_channel_map_reads_caffe_axes():
    """NHWC and NCHW hold a one-channel map in the same order, but the reshape's copied
    (0) dims and kept axes are Caffe's."""
    import keras

    model = _convert_text('''
        input: "x" input_shape { dim: 4 dim: 1 dim: 3 dim: 5 }
        layer { name: "r" type: "Reshape" bottom: "x" top: "r"
                reshape_param { shape { dim: 2 dim: 0 dim: -1 } } }
        layer { name: "f" type: "Flatten" bottom: "x" top: "f"
                flatten_param { axis: 0 end_axis: 1 } }
    ''')
    x = np.arange(6 * 15, dtype="float32").reshape(6, 1, 3, 5)
    got = model({"x": to_keras_layout(x)})
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got["r"]), x.reshape(2, 1, -1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got["f"]), x.reshape(6, 3, 5))


# -- property: layout handling agrees with Caffe's memory order for any shapes ---------

def _factor(rng, total, parts):
    dims = []
    for _ in range(parts - 1):
        divisors = [d for d in range(1, total + 1) if total % d == 0]
        d = int(rng.choice(divisors))
        dims.append(d)
        total //= d
    return dims + [total]


@pytest.mark.parametrize("seed", range(12))
def test_random_permute_flatten_reshape_chains_follow_caffe_memory_order(seed):
    """Random 3- to 5-D shapes through Permute, Flatten and Reshape (copy, infer, axis,
    num_axes); numpy on the NCHW array is the reference, as Caffe's memory is C order."""
    import keras

    from caffe2keras.shapes import reshape_target

    rng = np.random.default_rng(seed)
    nd = int(rng.integers(3, 6))
    shape = (int(rng.integers(1, 3)),) + tuple(int(d) for d in rng.integers(1, 5, nd - 1))
    order = [0] + [int(a) + 1 for a in rng.permutation(nd - 1)]
    permuted = tuple(shape[a] for a in order)
    axis = int(rng.integers(1, nd))
    end = int(rng.integers(axis, nd))
    flat = permuted[:axis] + (int(np.prod(permuted[axis:end + 1])),) + permuted[end + 1:]
    new = _factor(rng, int(np.prod(flat[1:])), int(rng.integers(1, 5)))
    dims = [0] + new
    if len(new) > 1:
        dims[1 + int(rng.integers(len(new)))] = -1
    dims_text = " ".join(f"dim: {d}" for d in dims)
    text = f'''
        input: "x" input_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}
        layer {{ name: "p" type: "Permute" bottom: "x" top: "p"
                permute_param {{ {" ".join(f"order: {o}" for o in order)} }} }}
        layer {{ name: "f" type: "Flatten" bottom: "p" top: "f"
                flatten_param {{ axis: {axis} end_axis: {end} }} }}
        layer {{ name: "r" type: "Reshape" bottom: "f" top: "r"
                reshape_param {{ shape {{ {dims_text} }} }} }}
        layer {{ name: "s" type: "Reshape" bottom: "r" top: "s"
                reshape_param {{ shape {{ dim: -1 }} axis: 1 }} }}
    '''
    model = _convert_text(text)
    graph_net = parse_net(text, "t.prototxt")
    r_shape = reshape_target(graph_net.layer("r"), flat)
    x = rng.standard_normal(shape).astype("float32")
    got = {k: to_caffe_layout(keras.ops.convert_to_numpy(v))
           for k, v in model({"x": to_keras_layout(x)}).items()}
    p = x.transpose(order)
    want = {"p": p, "f": p.reshape(flat), "r": p.reshape(r_shape),
            "s": p.reshape(shape[0], -1)}
    for k, ref in want.items():
        np.testing.assert_array_equal(got[k], ref, err_msg=f"{k}: {text}")


@pytest.mark.parametrize("seed", range(8))
def test_random_axes_of_every_rank_map_onto_keras_layout(seed):
    import keras

    rng = np.random.default_rng(100 + seed)
    nd = int(rng.integers(2, 6))
    shape = tuple(int(d) for d in rng.integers(2, 5, nd))
    a = int(rng.integers(0, nd))
    neg = a - nd if rng.integers(2) else a  # Caffe takes negative axes too
    point = shape[a] // 2
    text = f'''
        input: "x" input_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}
        layer {{ name: "c" type: "Concat" bottom: "x" bottom: "x" top: "c"
                concat_param {{ axis: {neg} }} }}
        layer {{ name: "sl" type: "Slice" bottom: "x" top: "s1" top: "s2"
                slice_param {{ axis: {neg} slice_point: {point} }} }}
        layer {{ name: "sm" type: "Softmax" bottom: "x" top: "sm" softmax_param {{ axis: {neg} }} }}
        layer {{ name: "rd" type: "Reduction" bottom: "x" top: "rd"
                reduction_param {{ operation: ASUM axis: {neg} }} }}
        layer {{ name: "t" type: "Tile" bottom: "x" top: "t" tile_param {{ axis: {neg} tiles: 2 }} }}
        layer {{ name: "am" type: "ArgMax" bottom: "x" top: "am"
                argmax_param {{ axis: {neg} top_k: 2 }} }}
    '''
    model = _convert_text(text)
    x = rng.standard_normal(shape).astype("float32")
    got = {k: to_caffe_layout(keras.ops.convert_to_numpy(v))
           for k, v in model({"x": to_keras_layout(x)}).items()}
    e = np.exp(x - x.max(a, keepdims=True))
    top2 = np.flip(np.argsort(x, axis=a), a).take([0, 1], axis=a).astype("float32")
    want = {"c": np.concatenate([x, x], a), "s1": x.take(range(point), a),
            "s2": x.take(range(point, shape[a]), a), "sm": e / e.sum(a, keepdims=True),
            "rd": np.abs(x).sum(tuple(range(a, nd))), "t": np.concatenate([x, x], a),
            "am": top2}
    for k, ref in want.items():
        np.testing.assert_allclose(got[k], ref, rtol=1e-5, atol=1e-5, err_msg=f"{k}: {text}")
