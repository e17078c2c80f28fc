"""Walking a functional Keras model's graph: its call nodes in data-flow order, and
replaying them on new inputs (codegen writes the walk as source; preprocessing puts
its layers in front of a model without nesting it)."""
from __future__ import annotations

import heapq

from .keras_compat import inbound_nodes, is_symbolic, producing_node


def model_nodes(model, order=None):
    """The Keras call nodes of ``model`` (a layer shared with another model has nodes of
    that model too), in an order where every node follows the nodes it reads from: by
    ``order`` ({layer name: sort key}, e.g. the prototxt's order) where given, else the
    model's own layer order."""
    from keras import tree

    outputs = tree.flatten(model.output)
    inputs = {id(t) for t in tree.flatten(model.input)}
    seen, stack = {}, list(outputs)
    while stack:
        t = stack.pop()
        if id(t) in inputs:
            continue
        node = producing_node(t)
        if id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(node.arguments.keras_tensors)
    order = order or {}
    rank = {id(layer): (order.get(layer.name, len(order)), i)
            for i, layer in enumerate(model.layers)}
    pending = sorted(seen.values(), key=lambda n: (rank.get(id(n.operation), (len(order), 0)),
                                                   inbound_nodes(n.operation).index(n)))
    # each step: the first node in that order whose inputs are all computed (a heap of
    # the ready ones, so that 20,000-layer nets take linear time, not quadratic)
    done = set(inputs)
    waiting, readers, ready = {}, {}, []
    for i, node in enumerate(pending):
        missing = {id(t) for t in node.arguments.keras_tensors if id(t) not in done}
        waiting[i] = len(missing)
        for t in missing:
            readers.setdefault(t, []).append(i)
        if not missing:
            ready.append(i)
    heapq.heapify(ready)
    ordered = []
    while ready:
        node = pending[heapq.heappop(ready)]
        ordered.append(node)
        for t in node.outputs:
            if id(t) in done:
                continue
            done.add(id(t))
            for i in readers.pop(id(t), ()):
                waiting[i] -= 1
                if waiting[i] == 0:
                    heapq.heappush(ready, i)
    if len(ordered) != len(pending):
        raise ValueError("the model's graph has a cycle or reads tensors from outside it")
    return ordered


def replay(model, inputs):
    """Call ``model``'s layers on new symbolic ``inputs`` (same structure as model.input):
    its outputs in the same structure, built from the very same layer objects. Unlike
    ``model(inputs)`` this nests nothing and adds no conversion ops, so a model built on
    the result is one flat graph."""
    from keras import tree

    values = {id(old): new for old, new in zip(tree.flatten(model.input),
                                              tree.flatten(inputs))}

    def fill(x):
        return values[id(x)] if is_symbolic(x) and id(x) in values else x

    for node in model_nodes(model):
        args = tree.map_structure(fill, node.arguments.args)
        kwargs = tree.map_structure(fill, node.arguments.kwargs)
        outs = tree.flatten(node.operation(*args, **kwargs))
        for old, new in zip(node.outputs, outs):
            values[id(old)] = new
    return tree.map_structure(lambda t: values[id(t)], model.output)
