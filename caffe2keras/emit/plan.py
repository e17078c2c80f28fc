"""Graph passes before emitting Keras: which Caffe layers become which Keras steps.

Pure Python (no Keras), so that weight export makes the very same decisions as
``convert()`` and its files load into the converted model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import NameNotFoundError, UnsupportedLayerError
from ..graph import Graph, Node
from ..sharing import param_names
from .registry import layer_type

FUSED_BN_SCALE = "BatchNorm+Scale"


@dataclass
class Step:
    type: str        # converter key: a Caffe type, or FUSED_BN_SCALE
    nodes: list      # the Caffe layers (graph Nodes) this step covers
    inputs: list     # value ids
    outputs: list    # value ids
    name: str        # Keras name of the step's main layer (unique, sanitised)
    names: Names | None = None   # for the step's helper layers (padding, transposes)
    activation: str | None = None  # Keras activation the main layer applies (a fused
                                   # element-wise layer, the last of ``nodes``)

    @property
    def node(self) -> Node:
        return self.nodes[0]


def keras_name(caffe_name: str) -> str:
    """Keras layer names may not hold '/' (and h5 paths dislike odd characters)."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", caffe_name)
    return name or "layer"


class Names:
    """Hands out unique Keras names; the first claim of a name gets it unchanged."""

    def __init__(self):
        self.used = set()

    def claim(self, base: str) -> str:
        name, k = base, 1
        while name.lower() in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name.lower())
        return name


def resolve_outputs(graph: Graph, outputs=None) -> list:
    """Blob names to expose: the net's outputs, a list, or "all" (every named blob)."""
    if outputs is None:
        names = list(graph.outputs)
    elif outputs == "all":
        names = graph.blob_names()
    else:
        if isinstance(outputs, str):
            outputs = [o for o in outputs.split(",") if o]
        names = list(outputs)
        missing = [o for o in names if o not in graph.versions]
        if missing:
            raise NameNotFoundError(f"no blob named {', '.join(map(repr, missing))} in "
                           f"{graph.net.path}; blobs are: {', '.join(graph.blob_names())}")
    return names


def unsupported_layers(graph: Graph) -> list:
    """[(node, reason)] for every layer that will not convert: reason None for a type
    without a converter, else why its settings are unsupported (the record's check)."""
    bad = []
    for n in graph.nodes:
        rec = layer_type(n.type)
        if rec is None or rec.converter is None:
            bad.append((n, None))
        elif rec.check is not None:
            reason = rec.check(n.layer)
            if reason:
                bad.append((n, reason))
    return bad


def check_supported(graph: Graph):
    """All unsupported layers at once (types and settings), before anything is built."""
    bad = unsupported_layers(graph)
    types = [n for n, why in bad if why is None]
    settings = [(n, why) for n, why in bad if why is not None]
    if not bad:
        return
    if not types and len(settings) == 1:
        n, why = settings[0]
        raise UnsupportedLayerError(why, path=graph.net.path,
                                    position=n.layer.position or None, layer=n.name)
    parts = []
    if types:
        names = sorted({n.type for n in types})
        listing = "; ".join(f"{n.name} ({n.type})" for n in types)
        parts.append(f"{len(types)} layer(s) of unsupported type {', '.join(names)}: "
                     f"{listing}. Add a converter with caffe2keras.register_converter(TYPE)"
                     f"{python_hint(names)}.")
    if settings:
        listing = "; ".join(f"{n.name} ({n.type}): {why}" for n, why in settings)
        parts.append(f"{len(settings)} layer(s) with unsupported settings: {listing}")
    raise UnsupportedLayerError(" ".join(parts), path=graph.net.path)


def python_hint(types) -> str:
    """How to register a converter for the Python layers among ``types`` ('' if none)."""
    for t in types:
        if t.startswith("Python:"):
            module, _, layer = t[len("Python:"):].rpartition(".")
            return (f' (a Python layer: register_converter("Python", module="{module}", '
                    f'layer="{layer}"))')
    return ""


def _fusable_scale(graph: Graph, bn: Node, keep: set):
    """The Scale that only post-processes this BatchNorm's output, if any."""
    if len(bn.outputs) != 1 or bn.outputs[0] in keep:
        return None
    consumers = graph.consumers(bn.outputs[0])
    if len(consumers) != 1:
        return None
    sc = consumers[0]
    if sc.type != "Scale" or len(sc.inputs) != 1 or sc.inputs[0] != bn.outputs[0]:
        return None
    p = sc.layer.param("scale_param")
    shape = graph.values[bn.inputs[0]].shape
    if shape is None or len(shape) < 2:
        return None
    axis = p.axis + len(shape) if p.axis < 0 else p.axis
    if axis != 1 or p.num_axes != 1:
        return None
    return sc


# Fuse an element-wise activation into the layer before it (Conv2D(..., activation=
# "relu")). Forward latency A/B in BENCHMARKS.md ("Fused activations"); a switch for it.
FUSE_ACTIVATIONS = True


def _fusable_activation(graph: Graph, node: Node, keep: set):
    """(activation layer, Keras activation name) when the only reader of ``node``'s output
    is an element-wise layer that ``node``'s converter can apply itself, and that output
    (the value before the activation) is not asked for; else None. With Caffe's in-place
    activation the blob's name means the value after it, so asking for the blob keeps
    the fusion (``keep`` holds the activation's output then)."""
    rec = layer_type(node.type)
    if rec is None or rec.takes_activation is None or rec.converter is None:
        return None
    if len(node.inputs) != 1 or len(node.outputs) != 1 or node.outputs[0] in keep:
        return None
    if any(param_names(node.layer)):
        return None  # may share its parameters: one Keras layer for owner and sharers
    consumers = graph.consumers(node.outputs[0])
    if len(consumers) != 1:
        return None
    act = consumers[0]
    if act.inputs != node.outputs or len(act.outputs) != 1:
        return None
    arec = layer_type(act.type)
    if arec is None or arec.activation is None or arec.converter is None:
        return None
    if arec.check is not None and arec.check(act.layer):
        return None
    name = arec.activation(act.layer)
    if not name or not rec.takes_activation(node.layer):
        return None
    return act, name


def make_plan(graph: Graph, keep=()) -> list:
    """Steps in graph order. ``keep``: value ids that must stay observable (outputs).

    Fusions: a BatchNorm with the Scale after it (one BatchNormalization), and a layer
    whose record takes an activation with the element-wise layer after it (its Keras
    layer applies the activation; the step keeps the first layer's type and name)."""
    keep = set(keep)
    names = Names()
    steps, absorbed = [], set()
    for node in graph.nodes:
        if id(node) in absorbed:
            continue
        if node.type == "BatchNorm":
            sc = _fusable_scale(graph, node, keep)
            if sc is not None:
                absorbed.add(id(sc))
                steps.append(Step(FUSED_BN_SCALE, [node, sc], list(node.inputs),
                                  list(sc.outputs), keras_name(node.name)))
                continue
        fused = _fusable_activation(graph, node, keep) if FUSE_ACTIVATIONS else None
        if fused is not None:
            act, activation = fused
            absorbed.add(id(act))
            steps.append(Step(node.type, [node, act], list(node.inputs), list(act.outputs),
                              keras_name(node.name), activation=activation))
            continue
        steps.append(Step(node.type, [node], list(node.inputs), list(node.outputs),
                          keras_name(node.name)))
    # Keras names are unique; Caffe's need not be (a repeated name, or two that sanitise
    # alike). The first step of each name keeps it, then the others take the first free
    # NAME_1, NAME_2, ... in net order, so a layer really named NAME_1 keeps its own name.
    later = []
    for s in steps:
        if s.name.lower() in names.used:
            later.append(s)
        else:
            s.name = names.claim(s.name)
    for s in later:
        s.name = names.claim(s.name)
    for s in steps:
        s.names = names
    return steps
