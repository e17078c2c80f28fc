"""caffe2keras/keras_compat.py: the one module naming Keras internals, and the Keras
floor that pyproject, the Makefile's floor run and the code agree on."""
import re

import keras
import pytest

from caffe2keras import keras_compat

from .shared import ROOT

INTERNALS = re.compile(r"keras\.src|saving_lib|_keras_history|_inbound_nodes|global_state")


def test_keras_internals_are_named_in_one_module():
    offenders = []
    for path in sorted((ROOT / "caffe2keras").rglob("*.py")):
        if path.name == "keras_compat.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if INTERNALS.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_floor_is_the_same_everywhere():
    floor = ".".join(map(str, keras_compat.KERAS_FLOOR))
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"keras>=([\d.]+)"', pyproject).group(1) == floor
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^KERAS_FLOOR := ([\d.]+)$", makefile, re.MULTILINE).group(1) == floor
    assert "make test-floor" in (ROOT / ".ci" / "run").read_text()
    assert keras_compat.keras_version() >= keras_compat.KERAS_FLOOR


def test_an_older_keras_is_named_not_crashed_on(monkeypatch):
    monkeypatch.setattr(keras_compat, "keras_version", lambda: (3, 0, 5))
    with pytest.raises(ImportError, match=r"needs keras>=3\.15\.1"):
        keras_compat.check_keras()


def test_variables_and_graph_walk():
    x = keras.Input((3,), name="x")
    dense = keras.layers.Dense(2, name="d")
    y = dense(x)
    assert keras_compat.producer(y) is dense
    assert keras_compat.producing_node(y) in keras_compat.inbound_nodes(dense)
    assert keras_compat.is_symbolic(y) and not keras_compat.is_symbolic(1.0)
    assert keras_compat.is_variable(dense.kernel) and not keras_compat.is_variable(y)
    model = keras.Model(x, y)
    rows = keras_compat.saved_variables(model)
    assert [(where, key) for where, key, _, _ in rows] == [("layers/dense", "0"),
                                                         ("layers/dense", "1")]
    assert all(keras_compat.is_variable(v) for _, _, v, _ in rows)


def _data_pointer(variable):
    """Address of a CPU variable's memory, read the backend's own way."""
    import numpy as np

    value = variable.value
    backend = keras.backend.backend()
    if backend == "jax":
        return value.unsafe_buffer_pointer()
    if backend == "torch":
        return value.data_ptr()
    return np.from_dlpack(value.read_value()).ctypes.data


def _variable_from(array):
    return keras.Variable(initializer=lambda shape, dtype=None:
                          keras_compat.variable_value(array, dtype),
                          shape=array.shape, dtype="float32")


def test_a_variable_takes_over_a_fresh_kernel_and_copies_anything_else():
    """Converting holds each weight once: a kernel made by layout (aligned_empty) becomes
    the variable's memory; a caller's array or a caffemodel blob is copied, so training
    the model never writes into it."""
    import numpy as np

    from caffe2keras import layout

    fresh = layout.conv_kernel(np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3))
    assert layout.is_fresh(fresh)
    kept = np.full((3, 3, 3, 4), 2.0, np.float32)
    assert not layout.is_fresh(kept) and not layout.is_fresh(fresh.transpose(3, 2, 1, 0))
    taken, copied = _variable_from(fresh), _variable_from(kept)
    if keras.backend.backend() in ("jax", "tensorflow", "torch"):
        assert _data_pointer(taken) == fresh.ctypes.data
    assert _data_pointer(copied) != kept.ctypes.data
    expected = fresh.copy()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(taken), expected)
    copied.assign(np.zeros((3, 3, 3, 4), np.float32))
    kept[...] = 5.0
    assert (kept == 5.0).all() and not keras.ops.convert_to_numpy(copied).any()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(_variable_from(
        np.ones((2, 2), np.float64))), np.ones((2, 2), np.float32))  # cast on the way
