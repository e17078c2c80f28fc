"""Every Keras internal caffe2keras relies on, in one place, with the versions they need.

Keras's public API covers building and running models; a few things this project does
need its private modules (``keras.src``) or private attributes: the save walk that tells
where each variable goes in a ``.weights.h5`` (weights export without building the
model), deferred variables (building a model without allocating its weights), the
serializer (writing a ``.keras`` config ourselves) and a tensor's producing layer (graph
walks). Each is wrapped here, so a Keras release that moves one breaks one function,
and ``check_keras()`` says which Keras is too old instead of an AttributeError deep down.

KERAS_FLOOR is the oldest Keras the test suite runs against (CI installs exactly it for
one extra run); pyproject.toml's ``keras>=`` says the same. Older releases fail the
suite: 3.6-3.10 reject Conv2DTranspose(output_padding=0), which Caffe's deconvolution
size needs; 3.11 refuses a model with an input only a Crop's shape reads ("inputs not
connected to outputs"), and so does 3.13.2 (test_export/test_emit_goldens [crop]).
3.14 is untested, so the floor is the release tested.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import sys
import threading

KERAS_FLOOR = (3, 15, 1)


def keras_version() -> tuple:
    """The installed Keras version as a tuple of ints ((0,) when unknown)."""
    try:
        text = importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def keras_version_string() -> str:
    try:
        return importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return "3"


def check_keras(what="caffe2keras"):
    """Raise ImportError naming the floor when the installed Keras is older than it."""
    have = keras_version()
    if have < KERAS_FLOOR:
        floor = ".".join(map(str, KERAS_FLOOR))
        raise ImportError(f"{what} needs keras>={floor}, found {keras_version_string()}; "
                          f"pip install -U 'keras>={floor}'")


# ------------------------------------------------------------------ symbolic graph

def keras_history(tensor):
    """(operation, node index, tensor index) of the layer call that produced a symbolic
    tensor; None for anything else."""
    return getattr(tensor, "_keras_history", None)


def is_symbolic(value) -> bool:
    return hasattr(value, "_keras_history")


def producer(tensor):
    """The layer (operation) that produced a symbolic tensor (an Input layer for inputs)."""
    return tensor._keras_history.operation


def producing_node(tensor):
    """The call node that produced a symbolic tensor."""
    op, index, _ = tensor._keras_history
    return op._inbound_nodes[index]


def inbound_nodes(operation) -> list:
    """The call nodes of a layer (one per call)."""
    return operation._inbound_nodes


# ------------------------------------------------------------------ variables

def is_variable(value) -> bool:
    """Whether ``value`` is a Keras variable of any backend (before Keras 3.7,
    ``keras.Variable`` was a separate export class the backends' variables did not
    subclass)."""
    try:
        from keras.src.backend.common.variables import KerasVariable
    except ImportError:
        import keras

        return isinstance(value, keras.Variable)
    return isinstance(value, KerasVariable)


@contextlib.contextmanager
def stateless_variables():
    """Variables created inside are deferred: none is allocated or initialised (their
    ``.value`` is computed from their initializer on demand). Yields the scope, which
    holds the values assigned inside it."""
    import keras
    from keras.src.backend.common import global_state

    pending = global_state.get_global_attribute("uninitialized_variables")
    try:
        with keras.StatelessScope(initialize_variables=False) as scope:
            yield scope
    finally:
        # forget our deferred variables: a later StatelessScope must not allocate them
        global_state.set_global_attribute("uninitialized_variables", pending)


def initial_value(var, scope=None):
    """A variable's value as numpy: assigned in ``scope`` if it was, else drawn from its
    initializer (a deferred variable has no value of its own)."""
    import keras

    value = scope.get_current_value(var) if scope is not None else None
    if value is None:
        value = var._initializer(var.shape, var.dtype)
    return keras.ops.convert_to_numpy(value)


def variable_value(array, dtype=None):
    """``array`` as the initial value of a variable of ``dtype``, in the form its backend
    takes over without copying, so that converting a model holds each weight once.

    An array that layout.aligned_empty allocated (layout.is_fresh: a transformed kernel
    nobody else holds) becomes the variable's memory; any other array (a caffemodel blob,
    mapped from the file, whose pages are dropped after the step; a caller's array) is
    first copied once into such a buffer. Then, on CPU:
    - JAX: ``jax.device_put`` adopts a C-contiguous 64-byte aligned buffer
      (``jnp.asarray`` would copy, and first compile a conversion);
    - TensorFlow: a DLPack view of the buffer, which ``tf.Variable`` adopts
      (``tf.convert_to_tensor`` of numpy copies twice: numpy's own copy, then an aligned
      one); TensorFlow copies on the variable's first write, never writing into it;
    - torch: ``torch.from_numpy``, which the Parameter keeps (Keras converts numpy with
      ``np.array``, a copy). Training writes into the buffer: hence only fresh ones.
    On an accelerator the backend copies the value to the device once, as before."""
    import keras
    import numpy as np

    from .layout import aligned_empty, is_fresh

    a = np.asarray(array)
    want = np.dtype(dtype) if dtype is not None else a.dtype
    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow", "torch") or want.kind not in "biuf":
        return a.astype(want, copy=False)
    if a.dtype != want or not is_fresh(a):
        b = aligned_empty(a.shape, want)
        b[...] = a
        a = b
    if backend == "jax":
        import jax

        return jax.device_put(a)
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.experimental.dlpack.from_dlpack(a.__dlpack__())
        import torch

        if want.kind == "u" and want.itemsize > 1:
            return a  # Keras's torch backend widens these to int64 itself
        return torch.from_numpy(a)
    except (TypeError, ValueError, BufferError, RuntimeError):
        return a  # a dtype the exchange lacks: Keras converts it as usual


# ------------------------------------------------------------------ saving

def saved_variables(model):
    """[(group path, key, value, group name)] in the order Keras's own ``save_weights``
    would write them into a ``.weights.h5``: its save walk, run on a store that only
    records. ``group name`` is the layer name Keras records on the group (3.6+)."""
    check_keras("reading the .weights.h5 layout")
    from keras.src.saving import saving_lib

    class Recorder(saving_lib.H5IOStore):
        def __init__(self):  # no file: only remember what would be written where
            self.rows = []
            self.where = None
            self.name = None

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            self.where = path
            self.name = (metadata or {}).get("name")
            return self

        def __setitem__(self, key, value):
            self.rows.append((self.where, key, value, self.name))

        def close(self):
            pass

    store = Recorder()
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="",
                           visited_saveables=set())
    return store.rows


@contextlib.contextmanager
def weights_via_temp_file():
    """Keras builds model.weights.h5 in a BytesIO (a second full copy of the weights)
    whenever it thinks memory suffices, and streams it through a temp file otherwise.
    For 500 MB+ models we always want the temp file. If a Keras version lacks the hook,
    saving still works, just with its default buffering."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        yield
        return
    original = getattr(saving_lib, "is_memory_sufficient", None)
    if original is None:
        yield
        return
    saving_lib.is_memory_sufficient = lambda model: False
    try:
        yield
    finally:
        saving_lib.is_memory_sufficient = original


def serialize_model(model) -> dict:
    """The config Keras's saver writes to config.json."""
    from keras.src.saving.serialization_lib import ObjectSharingScope, serialize_keras_object

    with ObjectSharingScope(), _without_tensorflow_probe():
        return serialize_keras_object(model)


@contextlib.contextmanager
def _without_tensorflow_probe():
    """Keras's serializer imports TensorFlow, if installed, to check for TF objects (2-3 s
    on the JAX or torch backend). A config holds TF objects only if TF is loaded."""
    try:
        from keras.src.utils import module_utils
        lazy = module_utils.tensorflow
        before = lazy._available
    except (ImportError, AttributeError):
        yield
        return
    if "tensorflow" in sys.modules or before is not None:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = before


def legacy_h5_loader():
    """Keras's legacy (Keras 2) HDF5 weights module: ``load_weights_from_hdf5_group_by_name``
    and ``load_attributes_from_hdf5_group`` (the tests load keras2-h5 files with it)."""
    from keras.src.legacy.saving import legacy_h5_format

    return legacy_h5_format


def tensorflow_backend_nn():
    """Keras's TensorFlow backend ``nn`` module, whose ``conv`` the ONNX export replaces
    while tracing (deploy/_tensorflow.py: grouped convolutions)."""
    from keras.src.backend.tensorflow import nn

    return nn


def tensorflow_layer_class():
    """Keras's TensorFlow-backend Layer base, whose ``_default_save_signature`` the
    SavedModel/TFLite export limits to the exported model (deploy/_tensorflow.py)."""
    from keras.src.backend.tensorflow.layer import TFLayer

    return TFLayer


def patch_tf2onnx():
    """Keras's numpy-2 fixes for tf2onnx, applied as its own ONNX exporter applies them
    (deploy/_onnx.py runs tf2onnx itself); nothing where this Keras lacks them."""
    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx as patch
    except ImportError:
        return
    patch()


def tensorflow_backend_core():
    """Keras's TensorFlow backend ``core`` module, whose ``scan`` the ONNX export replaces
    while tracing (deploy/_tensorflow.py: recurrent layers)."""
    from keras.src.backend.tensorflow import core

    return core


def standardize_data_format(data_format):
    from keras.src import backend

    return backend.standardize_data_format(data_format)


# ------------------------------------------------------------------ deep graphs
#
# Keras builds a functional model (``keras.Model(inputs, outputs)``, also when loading a
# .keras file) with ``map_graph`` in keras/src/ops/function.py: a recursive depth-first
# walk (``_build_map``), one Python frame per layer along the longest path, so about a
# thousand layers deep it hits the recursion limit; and a layer-name check that calls
# ``list.count`` once per name (quadratic). ``deep_graphs()`` swaps in equivalents that
# are iterative and linear, for the ``with`` block only.

_lock = threading.Lock()
_active = 0
_saved = {}

# The recursion limit in the block where the walk cannot be replaced (one frame per layer
# along the longest path, plus room): only when Keras's internals are not as expected.
_FALLBACK_LIMIT = 200_000


def build_map_iterative(inputs, outputs):
    """Keras's ``_build_map`` (keras/src/ops/function.py) without recursion: the same
    depth-first order (operations indexed on entry, nodes listed on exit), the same
    stop at declared inputs, the same cycle error."""
    from keras.src import tree

    finished, in_progress = set(), set()
    ordered, indices = [], {}
    flat_inputs = tree.flatten(inputs)

    def enter(tensor):
        operation, node_index, _ = tensor._keras_history
        if not operation:
            return None
        node = operation._inbound_nodes[node_index]
        if node in finished:
            return None
        if not node.is_input and tensor in flat_inputs:
            finished.add(node)
            return None
        if node in in_progress:
            raise ValueError(f"Tensor {tensor} from operation '{operation.name}' is part "
                             f"of a cycle.")
        if operation not in indices:
            indices[operation] = len(indices)
        in_progress.add(node)
        return node

    def parents(node):
        return iter(()) if node.is_input else iter(node.input_tensors)

    for output in tree.flatten(outputs):
        node = enter(output)
        if node is None:
            continue
        stack = [(node, parents(node))]
        while stack:
            node, pending = stack[-1]
            for tensor in pending:
                child = enter(tensor)
                if child is not None:
                    stack.append((child, parents(child)))
                    break
            else:
                stack.pop()
                finished.add(node)
                in_progress.discard(node)
                ordered.append(node)
    return ordered, indices


def map_graph_linear(inputs, outputs):
    """Keras's ``map_graph`` (keras/src/ops/function.py) in time linear in the layer
    count: the same results, built in the same order (so the same dict and list orders),
    from the iterative walk; the name-uniqueness check counts names with a dict, where
    Keras calls ``list.count`` once per name (quadratic: 18 s at 20,000 layers)."""
    import collections

    from keras.src import tree
    from keras.src.ops.function import make_node_key

    nodes, indices = build_map_iterative(inputs, outputs)
    in_graph = set(nodes)
    keys = {make_node_key(n.operation, n.operation._inbound_nodes.index(n)) for n in nodes}
    node_depth, op_depth = {}, {}
    for node in reversed(nodes):  # depth: the longest path to an output
        depth = max(node_depth.setdefault(node, 0), op_depth.get(node.operation, 0))
        op_depth[node.operation] = depth
        node_depth[node] = depth
        for parent in node.parent_nodes:
            if parent in in_graph:
                node_depth[parent] = max(depth + 1, node_depth.get(parent, 0))
    for x in inputs:  # inputs no output depends on are kept, at depth 0
        operation = x._keras_history[0]
        if operation and operation not in op_depth:
            index = x._keras_history.node_index
            node = operation._inbound_nodes[index]
            if node.is_input:
                op_depth[operation] = 0
                indices[operation] = -1
                node_depth[node] = 0
                keys.add(make_node_key(operation, index))
    nodes_by_depth = collections.defaultdict(list)
    for node, depth in node_depth.items():
        nodes_by_depth[depth].append(node)
    ops_by_depth = collections.defaultdict(list)
    for operation, depth in op_depth.items():
        ops_by_depth[depth].append(operation)
    operations = []
    for depth in sorted(ops_by_depth, reverse=True):
        ops_by_depth[depth].sort(key=lambda op: indices[op])
        operations.extend(ops_by_depth[depth])
    computable, reached = set(inputs), []
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            for x in tree.flatten(node.input_tensors):
                if x not in computable:
                    raise ValueError(
                        f"Graph disconnected: cannot find parent for tensor {x} at "
                        f"operation '{node.operation}'. The following previous operations "
                        f"were accessed without issue: {reached}")
                reached.append(node.operation.name)
            computable.update(tree.flatten(node.outputs))
    counts = collections.Counter(op.name for op in operations)
    for name, count in counts.items():
        if count != 1:
            raise ValueError(f'The name "{name}" is used {count} times in the model. All '
                             f'operation names should be unique.')
    return keys, nodes_by_depth, operations, ops_by_depth


def _targets():
    """(module, attribute, replacement) for Keras's recursive walk and the graph mapping
    that calls it; empty where this Keras version keeps them elsewhere."""
    import inspect

    try:
        from keras.src.models import functional
        from keras.src.ops import function
    except ImportError:
        return []
    try:
        if list(inspect.signature(function.map_graph).parameters) != ["inputs", "outputs"] \
                or list(inspect.signature(function._build_map).parameters) != \
                ["inputs", "outputs"] or not callable(function.make_node_key):
            return []
    except (AttributeError, TypeError, ValueError):
        return []
    out = [(function, "map_graph", map_graph_linear),
           (function, "_build_map", build_map_iterative)]
    if callable(getattr(functional, "_build_map", None)):
        out.append((functional, "_build_map", build_map_iterative))
    return out


@contextlib.contextmanager
def deep_graphs():
    """Within the block, Keras builds functional graphs of any depth (see module doc)."""
    global _active
    with _lock:
        if _active == 0:
            targets = _targets()
            for module, attr, replacement in targets:
                _saved[(module, attr)] = getattr(module, attr)
                setattr(module, attr, replacement)
            _saved["limit"] = sys.getrecursionlimit()
            if not targets:
                sys.setrecursionlimit(max(_saved["limit"], _FALLBACK_LIMIT))
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                limit = _saved.pop("limit")
                for (module, attr), fn in list(_saved.items()):
                    setattr(module, attr, fn)
                _saved.clear()
                sys.setrecursionlimit(limit)


def optimizer_variable_index(optimizer, variable):
    """Index of ``variable`` in the list ``optimizer.build`` got. Keras's own optimizers
    look it up this way: under TensorFlow's distribution update the variable arrives as
    the raw tf.Variable (no ``.path``)."""
    return optimizer._get_variable_index(variable)
