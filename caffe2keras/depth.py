"""Deep nets (ResNet-1001, DenseNet-264, generated chains of 5,000+ layers) through
Keras, whose functional-graph walk recurses once per layer along the longest path.

Keras builds a functional model (``keras.Model(inputs, outputs)``, also when loading a
.keras file or cloning) by a recursive depth-first walk, ``_build_map`` in
keras/src/ops/function.py: about a thousand layers deep it hits Python's recursion
limit; and its check that layer names are unique is quadratic. ``deep_graphs()`` swaps
in an iterative walk and a linear ``map_graph`` that return the very same results, for
as long as the ``with`` block runs; where a Keras version lacks those functions (or
their signatures changed), it raises the recursion limit for the block instead.
Everything of ours that builds or loads a Keras model runs inside it
(``caffe2keras.load_model`` wraps ``keras.saving.load_model``).
"""
from __future__ import annotations

import contextlib
import gc
import sys
import threading

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


@contextlib.contextmanager
def paused_gc():
    """The cyclic garbage collector off for the block (back on after, if it was on).
    Building a graph of N layers makes O(N) objects that all stay alive, and each full
    collection walks every one of them: with collections every so many allocations,
    that is quadratic in N (load_graph at 20,000 layers: 2.8 s with it, 1.6 s without;
    convert at 3,000: 1.6-1.9x faster). Whatever cycles the block leaves are collected
    after it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_model(path, custom_objects=None, compile=True, safe_mode=True):
    """``keras.saving.load_model`` for models of any depth (and with caffe2keras's
    layers registered): a converted 5,000-layer net loads as any other."""
    import keras

    with deep_graphs(), paused_gc():
        return keras.saving.load_model(path, custom_objects=custom_objects,
                                       compile=compile, safe_mode=safe_mode)
