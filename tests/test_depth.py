"""Deep nets: Keras's recursive graph walk replaced, within caffe2keras, by an iterative
one with the same results; convert, save, load and codegen of a generated deep chain."""
import os
import sys
import warnings

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras import depth
from caffe2keras.errors import CaffeWarning

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from bench_depth import deep_chain


def _branchy_model():
    """Shared layers, several inputs and outputs, an unused input, skip connections."""
    a = keras.Input((4,), name="a")
    b = keras.Input((4,), name="b")
    unused = keras.Input((4,), name="unused")
    shared = keras.layers.Dense(4, name="shared")
    x = shared(a)
    y = shared(b)
    z = keras.layers.Add(name="add")([x, y, a])
    w = keras.layers.Dense(4, name="w")(z)
    v = keras.layers.Multiply(name="mul")([w, shared(z)])
    return [a, b, unused], {"v": v, "w": w, "x": x}


def _summary(result):
    keys, by_depth, operations, ops_by_depth = result
    return (keys, {d: list(n) for d, n in by_depth.items()}, list(operations),
            {d: list(o) for d, o in ops_by_depth.items()})


def test_linear_map_graph_gives_what_keras_gives():
    from keras.src.ops import function

    inputs, outputs = _branchy_model()
    flat = keras.tree.flatten(outputs)
    want = _summary(function.map_graph(inputs, flat))
    got = _summary(depth.map_graph_linear(inputs, flat))
    assert got == want
    assert depth.build_map_iterative(inputs, flat) == function._build_map(inputs, flat)
    assert list(want[1]) == list(got[1])  # same depth order too


def test_a_repeated_layer_name_raises_the_error_keras_raises():
    from keras.src.ops import function

    a = keras.Input((4,), name="a")
    out = keras.layers.Dense(4, name="same")(keras.layers.Dense(4, name="same")(a))
    with pytest.raises(ValueError, match='"same" is used 2 times') as want:
        function.map_graph([a], [out])
    with pytest.raises(ValueError, match='"same" is used 2 times') as got:
        depth.map_graph_linear([a], [out])
    assert str(got.value) == str(want.value)


def test_the_swap_is_scoped():
    from keras.src.ops import function

    original = function.map_graph
    with depth.deep_graphs():
        with depth.deep_graphs():
            assert function.map_graph is depth.map_graph_linear
        assert function.map_graph is depth.map_graph_linear
    assert function.map_graph is original


DEPTH = 2250  # Caffe layers: 1,500 Keras layers (each ReLU is its conv's activation);
KERAS_DEPTH = DEPTH * 2 // 3  # a plain Keras chain fails from about 1,000


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    proto = tmp_path_factory.mktemp("deep") / "deep.prototxt"
    proto.write_text(deep_chain(DEPTH))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeWarning)
        model = caffe2keras.convert(str(proto), seed=0)
    x = np.random.default_rng(0).standard_normal((1, 4, 4, 2)).astype("float32")
    out = f"add{DEPTH // 3 - 1}"
    return model, x, out, keras.ops.convert_to_numpy(model({"data": x})[out])


def test_a_deep_net_converts_saves_and_loads(deep, tmp_path):
    model, x, out, want = deep
    assert len(model.layers) == KERAS_DEPTH + 1
    with pytest.raises(RecursionError):  # plain Keras, outside caffe2keras's scope
        keras.Model(model.inputs, model.outputs)
    path = tmp_path / "deep.keras"
    model.save(path)
    loaded = caffe2keras.load_model(path)  # keras.saving.load_model would recurse too
    got = keras.ops.convert_to_numpy(loaded({"data": x})[out])
    np.testing.assert_array_equal(got, want)


def test_the_code_generated_for_a_deep_net_runs(deep, tmp_path):
    import importlib.util

    from caffe2keras.codegen import generate_source

    model, x, out, _ = deep
    source = generate_source(model)
    assert "sys.setrecursionlimit(limit + " in source
    (tmp_path / "deep_model.py").write_text(source)
    spec = importlib.util.spec_from_file_location("deep_model", tmp_path / "deep_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = module.build_model()
    assert len(rebuilt.layers) == KERAS_DEPTH + 1
    rebuilt.set_weights(model.get_weights())
    got = keras.ops.convert_to_numpy(rebuilt({"data": x})[out])
    np.testing.assert_array_equal(got, deep[3])
    assert sys.getrecursionlimit() < 2000  # restored
