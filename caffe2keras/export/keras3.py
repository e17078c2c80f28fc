"""Keras 3 ``.weights.h5``: the weights of the model ``convert()`` builds, by position.

A Keras 3 ``.weights.h5`` is keyed by position, not by layer name: the variables of a
functional model's layer live at ``layers/<its class in snake_case>[_<k>]/vars/<i>``,
where ``k`` counts the layers of that class in ``model.layers`` order, and Keras orders a
functional model's layers by their depth in the graph, not by creation. The paths are
therefore taken from the converted model's structure: worked out without Keras when
every layer class that holds weights forms a chain in the net (then the order cannot
depend on depth; the classes come from each type's record), and otherwise read from the
converted model built without its weights (no variable is allocated; this imports Keras).
"""
from __future__ import annotations

import itertools
import re

import numpy as np

from ..emit.context import LayerContext
from ..errors import CaffeFormatError, InternalError, UnsupportedLayerError
from ..graph import Graph
from ..keras_compat import initial_value, is_variable, saved_variables, stateless_variables
from . import slicing
from .loop import write_steps
from .records import weighted_classes, weights_function


def export_keras3(graph: Graph, sink, outputs, skip_unknown, report, model=None, scope=None):
    """``model``: the converted model built without weights (in a StatelessScope), when
    the caller has it: its own save walk then gives the paths; ``scope``: that
    StatelessScope, whose assignments (e.g. a preprocessing mean image) are the values of
    variables no Caffe blob fills."""
    from ..emit.plan import check_supported, make_plan, resolve_outputs

    try:
        check_supported(graph)
    except UnsupportedLayerError as e:
        raise UnsupportedLayerError(
            f"{e.detail} The keras format is for the model convert() builds, which needs "
            f"every layer type; keras2-h5 and npz export any net.", path=e.path) from None
    keep = {graph.final(b) for b in resolve_outputs(graph, outputs)}
    plan = make_plan(graph, keep)
    if model is not None:
        layout = layout_from_model(graph, outputs, model)
    else:
        layout = fast_layout(graph, plan, keep) or skeleton_layout(graph, outputs)
    written = set()

    def steps():
        for step in plan:
            if not any(n.layer.blobs for n in step.nodes) or step.name not in layout.in_model:
                continue
            ctx = LayerContext(step, graph)
            fn = weights_function(step.type)
            if fn is None:
                result = _passthrough(ctx, layout, skip_unknown, report)
                if result is None:
                    continue
            else:
                result = slicing.compute(fn, ctx)
            yield step, result, lambda name, count, step=step, result=result: \
                _place(graph, layout, step, result, name, count, written)

    write_steps(sink, steps(), report)
    for name, entry in layout.layers.items():  # variables no Caffe blob fills
        for i, var in entry.variables.items():
            if (name, i) not in written:
                group, key = entry.place(i)
                value = initial_value(var, scope)
                g = sink.make(f"{group}/vars", {"name": entry.group_names.get(group, name)})
                sink.put_whole(g, key, value)
                report.layer(name, "no Caffe blob", [], f"{group} (initial value)",
                             [value.shape])


def _place(graph, layout, step, result, name, count, written):
    entry = layout.layers.get(name)
    if entry is None:
        raise InternalError(
            f"{graph.net.path}: layer '{step.node.name}': the weights function made weights "
            f"for Keras layer '{name}', which the converted model does not have")
    slots = []
    for i in range(count):
        want, got = entry.shapes.get(i), result.shapes[name, i]
        if (want is not None and tuple(want) != tuple(got)) or \
                (entry.shapes and i not in entry.shapes):
            raise InternalError(
                f"{graph.net.path}: layer '{step.node.name}': weights for Keras layer "
                f"'{name}' variable {i} have shape {tuple(got)}, the converted model's is "
                f"{None if want is None else tuple(want)}")
        group, key = entry.place(i)
        slots.append((f"{group}/vars", {"name": entry.group_names.get(group, name)}, key))
        written.add((name, i))
    return entry.path, slots


def _passthrough(ctx, layout, skip_unknown, report):
    """A converter that sets its own weights (no weights function): its blobs go through
    unchanged when they fit the model's variables exactly."""
    step = ctx.step
    if skip_unknown:
        report.skipped.append(f"{step.node.name} ({step.type})")
        return None
    entry = layout.layers.get(ctx.name)
    blobs = [b for n in step.nodes for b in n.layer.blobs]
    fits = entry is not None and \
        [tuple(entry.shapes[i]) for i in sorted(entry.shapes)] == [tuple(b.shape) for b in blobs]
    if not fits:
        raise CaffeFormatError(
            f"the {step.type} converter registered no weights function, so the Keras layout "
            f"of its {len(blobs)} blobs is unknown; register one with "
            f"caffe2keras.register_weights('{step.type}'), or export keras2-h5/npz",
            path=ctx.graph.net.path, layer=step.node.name)
    report.unknown.append((step.node.name, step.type, "no weights function"))
    return slicing.whole({ctx.name: blobs}, np.float32)


class Keras3Layout:
    """Where each Keras layer's variables go in a .weights.h5 file."""

    def __init__(self, how):
        self.how = how             # "chain" (worked out) or "model" (read from Keras)
        self.layers = {}           # keras layer name -> _Entry
        self.in_model = set()      # names of the plan steps the model holds


class _Entry:
    """One Keras layer's variables: group path ("layers/conv2d_3"), and when read from the
    model, each variable's shape and place (nested sublayers have their own groups)."""

    def __init__(self, path):
        self.path = path
        self.shapes = {}           # variable index -> shape
        self.places = {}           # variable index -> (group path, key)
        self.variables = {}        # variable index -> keras Variable (read from the model)
        self.group_names = {}      # group path -> the name Keras records there

    def place(self, i):
        return self.places.get(i, (self.path, str(i)))


def snake_case(name):
    """Keras's naming.to_snake_case (the key of a layer class in a .weights.h5)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def fast_layout(graph: Graph, plan, keep):
    """The .weights.h5 paths without Keras, or None when they could depend on depth.

    Layers of one class are numbered in ``model.layers`` order. An ancestor always comes
    before its descendants there (Keras sorts by longest distance to an output), so when
    all the layers of each weight-holding class lie on one chain of data flow their order
    is the net's order, whatever helper layers the converters add. Only the first input
    of each step counts as a connection (every built-in converter uses it), so each step
    has at most one such parent and the chains are paths up a forest.
    """
    producer = {}
    for step in plan:
        for v in step.outputs:
            producer[v] = step
    parent = {}
    for step in plan:
        p = producer.get(step.inputs[0]) if step.inputs else None
        parent[id(step)] = p
    # steps any output depends on (over all inputs), and over first inputs only
    in_model, strong = set(), set()
    stack = [producer[v] for v in keep if v in producer]
    while stack:
        s = stack.pop()
        if id(s) in in_model:
            continue
        in_model.add(id(s))
        stack.extend(producer[v] for v in s.inputs if v in producer)
    for v in keep:
        s = producer.get(v)
        while s is not None and id(s) not in strong:
            strong.add(id(s))
            s = parent[id(s)]

    by_class = {}
    for step in plan:
        if id(step) not in in_model:
            continue
        ctx = LayerContext(step, graph)
        try:
            layers = weighted_classes(step, ctx)
        except Exception:  # noqa: BLE001 - whatever the record cannot tell, Keras can
            return None
        if layers is None:
            return None
        if layers and id(step) not in strong:
            return None
        for name, cls in layers:
            by_class.setdefault(cls, []).append((step, name))

    def ancestor(a, b):
        s = parent[id(b)]
        while s is not None:
            if s is a:
                return True
            s = parent[id(s)]
        return False

    layout = Keras3Layout("chain")
    layout.in_model = {s.name for s in plan if id(s) in in_model}
    for cls, members in by_class.items():
        for (sa, _), (sb, _) in itertools.pairwise(members):
            if sa is sb or not ancestor(sa, sb):
                return None
        base = snake_case(cls)
        for k, (_, name) in enumerate(members):
            layout.layers[name] = _Entry(f"layers/{base}" + (f"_{k}" if k else ""))
    return layout


def skeleton_layout(graph: Graph, outputs):
    """The .weights.h5 paths read from the converted model, built without weights: its
    variables are created in a Keras StatelessScope, so none is allocated or initialised.
    Keras's own save walk, run on a store that only records, gives every path."""
    from ..emit.builder import build_model

    with stateless_variables():
        model = build_model(graph, outputs=outputs, with_weights=False)
    return layout_from_model(graph, outputs, model)


def layout_from_model(graph: Graph, outputs, model):
    """The .weights.h5 paths of ``model`` (the converted model, or one wrapping it), read
    from Keras's own save walk run on a store that only records."""

    from ..emit.plan import make_plan, resolve_outputs

    rows = saved_variables(model)
    owner = {}
    for lay in model.layers:
        for i, w in enumerate(lay.weights):
            owner.setdefault(id(w), (lay.name, i))
    layout = Keras3Layout("model")
    keep = {graph.final(b) for b in resolve_outputs(graph, outputs)}
    names = {lay.name for lay in model.layers}
    layout.in_model = {s.name for s in make_plan(graph, keep) if s.name in names}
    for where, key, value, group_name in rows:
        if not is_variable(value) or id(value) not in owner:
            raise InternalError(
                f"{graph.net.path}: the converted model saves a computed value at "
                f"{where}/{key}, which a weights export cannot reproduce")
        name, i = owner[id(value)]
        top = "/".join(where.split("/")[:2])  # layers/<class>[_k]
        entry = layout.layers.setdefault(name, _Entry(top))
        entry.shapes[i] = tuple(value.shape)
        entry.places[i] = (where, key)
        entry.variables[i] = value
        entry.group_names[where] = group_name
    return layout
