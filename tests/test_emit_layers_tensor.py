"""Our custom Keras layers on their own (emit/layers/activations.py and tensor.py):
numpy references, shapes with an open batch axis, config round trip, .keras files."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from caffe2keras.emit.layers import activations as A
from caffe2keras.emit.layers import tensor as T

RNG = np.random.default_rng(0)
X = (RNG.standard_normal((3, 4, 5, 6)) * 3).astype("float32")
Y = (RNG.standard_normal((3, 4, 5, 6)) * 3).astype("float32")
Q = np.round(RNG.standard_normal((3, 4, 5, 6))).astype("float32")  # many ties
Q[0, 0, 0, :3] = [-0.0, 0.0, -0.0]


def caffe_top_k(x, axis, k):
    """Caffe's partial_sort of (value, index) pairs by std::greater: largest value first,
    equal values larger index first (-0 equals 0)."""
    x = np.moveaxis(x + 0.0, axis, -1)
    flat = x.reshape(-1, x.shape[-1])
    idx = np.empty((flat.shape[0], k), np.int64)
    for r, row in enumerate(flat):
        idx[r] = sorted(range(len(row)), key=lambda j: (row[j], j), reverse=True)[:k]
    val = np.take_along_axis(flat, idx, 1)
    shape = x.shape[:-1] + (k,)
    return (np.moveaxis(val.reshape(shape), -1, axis),
            np.moveaxis(idx.reshape(shape).astype("float32"), -1, axis))


def argmax_flat(x, k, out_max_val):
    v, i = caffe_top_k(x.reshape(len(x), -1), 1, k)
    return np.stack([i, v], 1) if out_max_val else i[:, None]


# (layer, inputs, numpy reference)
CASES = {
    "abs": (lambda: A.AbsVal(), [X], lambda x: np.abs(x)),
    "sloped_relu": (lambda: A.SlopedReLU(-0.2), [X],
                    lambda x: np.maximum(x, 0) - 0.2 * np.minimum(x, 0)),
    "power": (lambda: A.Power(3, -0.5, 0.25), [X], lambda x: (0.25 - 0.5 * x) ** 3),
    "power_sqrt": (lambda: A.Power(0.5, 1, 20), [X], lambda x: np.sqrt(20 + x)),
    "power_square": (lambda: A.Power(2, 0.5), [X], lambda x: (0.5 * x) ** 2),
    "power_const": (lambda: A.Power(2, 0, 3), [X], lambda x: np.full_like(x, 9)),
    "power_zero": (lambda: A.Power(0, 2, 3), [X], lambda x: np.ones_like(x)),
    "exp": (lambda: A.Exp(), [X], np.exp),
    "exp_base": (lambda: A.Exp(2, 0.5, 0.1), [X], lambda x: 2 ** (0.1 + 0.5 * x)),
    "log": (lambda: A.Log(-1, 1, 20), [X], lambda x: np.log(20 + x)),
    "log_base": (lambda: A.Log(10, 2, 30), [X], lambda x: np.log10(30 + 2 * x)),
    "threshold": (lambda: A.Threshold(0.5), [X], lambda x: (x > 0.5).astype("float32")),
    "clip": (lambda: A.Clip(-1, 2), [X], lambda x: np.clip(x, -1, 2)),
    "swish": (lambda: A.Swish(0.5), [X], lambda x: x / (1 + np.exp(-0.5 * x))),
    "weighted_sum": (lambda: T.WeightedSum([0.5, -2, 1]), [X, Y, X],
                     lambda a, b, c: 0.5 * a - 2 * b + c),
    "crop": (lambda: T.Crop([1, 3], [1, 2]), [X, X[:, :2, :, :3]],
             lambda x, r: x[:, 1:3, :, 2:5]),
    "crop_batch": (lambda: T.Crop([0, 2], [1, 0]), [X, X[:2, :, :3]],
                   lambda x, r: x[1:3, :, 0:3]),
    "transpose": (lambda: T.Transpose([0, 3, 1, 2]), [X], lambda x: x.transpose(0, 3, 1, 2)),
    "transpose_batch": (lambda: T.Transpose([2, 0, 3, 1]), [X],
                        lambda x: x.transpose(2, 0, 3, 1)),
    "batch_reshape": (lambda: T.BatchReshape([-1, 6]), [X], lambda x: x.reshape(-1, 6)),
    "batch_reshape_axis": (lambda: T.BatchReshape([2, -1], axis=0, num_axes=2), [X],
                           lambda x: x.reshape(2, -1, 5, 6)),
    "batch_reshape_copy": (lambda: T.BatchReshape([0, 0, -1]), [X],
                           lambda x: x.reshape(3, 4, 30)),
    "argmax": (lambda: T.ArgMax(1), [Q], lambda x: caffe_top_k(x, 1, 1)[1]),
    "argmax_top3": (lambda: T.ArgMax(3, 3), [Q], lambda x: caffe_top_k(x, 3, 3)[1]),
    "argmax_values": (lambda: T.ArgMax(2, 2, True), [Q], lambda x: caffe_top_k(x, 2, 2)[0]),
    "argmax_batch": (lambda: T.ArgMax(0, 2), [Q], lambda x: caffe_top_k(x, 0, 2)[1]),
    "argmax_flat": (lambda: T.ArgMax(None, 4), [Q], lambda x: argmax_flat(x, 4, False)),
    "argmax_flat_values": (lambda: T.ArgMax(None, 3, True), [Q],
                           lambda x: argmax_flat(x, 3, True)),
    "reduce_sum": (lambda: T.Reduction("SUM", [2, 3]), [X], lambda x: x.sum((2, 3))),
    "reduce_asum": (lambda: T.Reduction("ASUM", [1, 2, 3], 0.5), [X],
                    lambda x: 0.5 * np.abs(x).sum((1, 2, 3))),
    "reduce_sumsq": (lambda: T.Reduction("SUMSQ", [1]), [X], lambda x: (x * x).sum(1)),
    "reduce_mean_all": (lambda: T.Reduction("MEAN", [0, 1, 2, 3], -2), [X],
                        lambda x: -2 * x.mean()),
    "tile": (lambda: T.Tile(1, 3), [X], lambda x: np.tile(x, (1, 3, 1, 1))),
    "tile_batch": (lambda: T.Tile(0, 2), [X], lambda x: np.tile(x, (2, 1, 1, 1))),
}


def _call(layer, inputs):
    out = layer(inputs if len(inputs) > 1 else inputs[0])
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_numpy(case):
    make, inputs, ref = CASES[case]
    got = _call(make(), inputs)
    want = ref(*inputs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5 * max(1, np.abs(want).max()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_symbolic_shape_with_open_batch_and_config_round_trip(case):
    make, inputs, _ = CASES[case]
    layer = make()
    syms = [keras.Input(x.shape[1:]) for x in inputs]
    sym = layer(syms if len(syms) > 1 else syms[0])
    real = _call(layer, inputs)
    # only the axis the batch decides is open; every other one is static and right
    assert len(sym.shape) == real.ndim
    assert sum(d is None for d in sym.shape) <= 1, sym.shape
    for s, r in zip(sym.shape, real.shape):
        assert s is None or s == r
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(_call(clone, inputs), real)


def test_slice_points_equal_parts_and_the_batch_axis():
    parts = _call(T.Slice(3, 3, [1, 4]), [X])
    np.testing.assert_array_equal(parts[0], X[..., :1])
    np.testing.assert_array_equal(parts[1], X[..., 1:4])
    np.testing.assert_array_equal(parts[2], X[..., 4:])
    halves = _call(T.Slice(-1, 2), [X])
    np.testing.assert_array_equal(np.concatenate(halves, -1), X)
    assert halves[0].shape == (3, 4, 5, 3)
    rows = _call(T.Slice(0, 3), [X])  # equal parts of whatever batch arrives
    assert [r.shape[0] for r in rows] == [1, 1, 1]
    sym = T.Slice(0, 3)(keras.Input((4, 5, 6)))
    assert [tuple(s.shape) for s in sym] == [(None, 4, 5, 6)] * 3
    sym = T.Slice(1, 2, [1])(keras.Input((4, 5, 6)))
    assert [tuple(s.shape) for s in sym] == [(None, 1, 5, 6), (None, 3, 5, 6)]
    clone = T.Slice.from_config(T.Slice(3, 3, [1, 4]).get_config())
    assert clone.slice_points == [1, 4] and clone.num_outputs == 3


def test_argmax_ties_take_the_later_index_and_minus_zero_equals_zero():
    x = np.array([[1, 3, 3, 0, 3]], "float32")
    np.testing.assert_array_equal(_call(T.ArgMax(1, 4), [x]), [[4, 2, 1, 0]])
    z = np.array([[-0.0, 0.0, -0.0, -1]], "float32")
    np.testing.assert_array_equal(_call(T.ArgMax(1, 1), [z]), [[2]])
    np.testing.assert_array_equal(_call(T.ArgMax(1, 3), [z]), [[2, 1, 0]])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="base"):
        A.Exp(-2)
    with pytest.raises(ValueError, match="base"):
        A.Log(1)
    with pytest.raises(ValueError, match="slice points"):
        T.Slice(1, 3, [2])
    with pytest.raises(ValueError, match="permutation"):
        T.Transpose([0, 0, 1])
    with pytest.raises(ValueError, match="operation"):
        T.Reduction("MAX", [1])
    with pytest.raises(ValueError, match="tiles"):
        T.Tile(1, 0)
    with pytest.raises(ValueError, match="top_k"):
        T.ArgMax(1, 0)
    with pytest.raises(ValueError, match="coefficients"):
        T.WeightedSum([1, 2])([keras.Input((2,))] * 3)


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    inputs, outputs, feeds = [], {}, []
    for case in sorted(CASES):
        make, arrays, _ = CASES[case]
        syms = [keras.Input(x.shape[1:], name=f"{case}_in{i}") for i, x in enumerate(arrays)]
        outputs[case] = make()(syms if len(syms) > 1 else syms[0])
        inputs += syms
        feeds += arrays
    outputs["slice"] = T.Slice(2, 2, [3])(inputs[0])[1]
    # batch-dependent layers need matching batch sizes only within one call
    model = keras.Model(inputs, outputs)
    path = tmp_path / "layers.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    a, b = model(feeds), loaded(feeds)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a[k]),
                                      keras.ops.convert_to_numpy(b[k]))
    config = model.get_config()
    names = {lay["class_name"] for lay in config["layers"]}
    assert {"AbsVal", "Power", "ArgMax", "BatchReshape", "Slice"} <= names
