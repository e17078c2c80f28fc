"""The net as a dataflow graph: in-place writes resolved, Caffe shapes inferred, weights
attached and checked against the shapes the layer definitions imply.

In-place layers (top == bottom) are normal in Caffe; here every write makes a new value,
so a blob name maps to a list of versions and means the last one.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .caffemodel import CaffeModel, load_caffemodel
from .depth import paused_gc
from .emit.registry import SHAPE_FUNCTIONS
from .errors import CaffeFormatError, CaffeWarning
from .fillers import fresh_blobs
from .net import MAX_AXES, MAX_COUNT, Layer, Net, load_net
from .shapes import ShapeError, infer

# Types with no computation of their own that the graph handles.
STRUCTURAL = {"Input", "DummyData"}


@dataclass
class Value:
    id: str            # unique within the graph
    blob: str          # Caffe blob name
    shape: tuple | None
    producer: Node | None = None


@dataclass
class Node:
    layer: Layer
    inputs: list       # value ids
    outputs: list      # value ids
    param_shapes: list | None = None   # expected blob shapes (None: unknown type)

    @property
    def name(self):
        return self.layer.name

    @property
    def type(self):
        return self.layer.type


@dataclass
class Graph:
    net: Net
    nodes: list
    values: dict                    # id -> Value
    inputs: list                    # value ids of net inputs, in order
    versions: dict                  # blob name -> [value ids], in write order
    outputs: list                   # blob names Caffe reports as net outputs
    weights_path: str | None = None
    unsupported: list = field(default_factory=list)   # [(layer name, type)]
    extra_weights: list = field(default_factory=list)  # layers only in the caffemodel
    notes: list = field(default_factory=list)          # things inspect should say

    def final(self, blob) -> str:
        """Value id of ``blob`` after its last (in-place) writer."""
        return self.versions[blob][-1]

    def shape(self, blob):
        return self.values[self.final(blob)].shape

    def consumers(self, value_id):
        """The nodes that read ``value_id``, in graph order (an index built once: asking
        for every BatchNorm of a 1,000-layer ResNet stays linear)."""
        index = self.__dict__.get("_readers")
        if index is None or index[0] != len(self.nodes):
            readers = {}
            for n in self.nodes:
                for v in dict.fromkeys(n.inputs):
                    readers.setdefault(v, []).append(n)
            index = self.__dict__["_readers"] = (len(self.nodes), readers)
        return list(index[1].get(value_id, ()))

    def unique_names(self) -> dict:
        """{id(node): a name no other node has}: a layer's own name, or for the later
        layers of a shared name (Caffe allows them) the first free NAME_1, NAME_2, ...
        (the scheme of the Keras names, emit/plan.py, before sanitising)."""
        used = {n.name for n in self.nodes}
        out, later = {}, []
        seen = set()
        for n in self.nodes:
            if n.name in seen:
                later.append(n)
            else:
                seen.add(n.name)
                out[id(n)] = n.name
        for n in later:
            k = 1
            while f"{n.name}_{k}" in used:
                k += 1
            out[id(n)] = f"{n.name}_{k}"
            used.add(out[id(n)])
        return out

    def blob_names(self):
        return list(self.versions)


def build_graph(net: Net, weights: CaffeModel | None = None) -> Graph:
    values, versions, inputs = {}, {}, []
    for blob, shape in net.inputs.items():
        values[blob] = Value(blob, blob, tuple(shape))
        versions[blob] = [blob]
        inputs.append(blob)
    available = dict.fromkeys(net.inputs)  # ordered set of blobs not yet consumed
    nodes, unsupported = [], []
    producer_of = {}  # blob -> layer that wrote it last (for messages)
    for lay in net.layers:
        if len(set(lay.tops)) != len(lay.tops):
            raise CaffeFormatError(f"lists a top twice: {lay.tops}", path=net.path,
                                   position=lay.position, layer=lay.name)
        in_ids = []
        for b in lay.bottoms:
            if b not in versions:
                later = [x.name for x in net.layers if b in x.tops]
                gone = [(n, t) for n, t, tops in net.excluded if b in tops]
                gone += [(n, t) for n, t, why in net.dropped if why == "data layer"]
                if later:
                    hint = (f"; it is produced later by layer '{later[0]}' (layers must come "
                            f"after their inputs, and nets cannot have cycles)")
                elif gone:
                    hint = (f"; it would come from layer '{gone[0][0]}' ({gone[0][1]}), which "
                            f"is not part of the net in {net.state}; give the blob a shape "
                            f"to make it an input, e.g. --input-shape {b}=1,3,224,224")
                else:
                    hint = (f"; known blobs: {', '.join(list(versions)[:12]) or 'none'}"
                            f"{'...' if len(versions) > 12 else ''}")
                raise CaffeFormatError(f"bottom '{b}' is not produced by any earlier layer"
                                       f" or input{hint}", path=net.path,
                                       position=lay.position, layer=lay.name)
            in_ids.append(versions[b][-1])
            available.pop(b, None)
        out_ids = []
        for t in lay.tops:
            if t in versions and t not in lay.bottoms:
                raise CaffeFormatError(
                    f"top '{t}' is already produced by '{producer_of.get(t, 'the input')}'; "
                    f"a blob may only be rewritten in place (top == bottom)",
                    path=net.path, position=lay.position, layer=lay.name)
            vid = t if t not in values else _fresh_id(values, f"{t}@{lay.name}")
            values[vid] = Value(vid, t, None)
            versions.setdefault(t, []).append(vid)
            out_ids.append(vid)
            producer_of[t] = lay.name
            available[t] = None
        node = Node(lay, in_ids, out_ids)
        for v in out_ids:
            values[v].producer = node
        nodes.append(node)
        if lay.type not in SHAPE_FUNCTIONS:
            unsupported.append((lay.name, lay.type))
            continue
        in_shapes = [values[i].shape for i in in_ids]
        if any(s is None for s in in_shapes):
            continue  # downstream of an unknown layer: shape unknown
        infer_node(node, values, net.path)
    g = Graph(net, nodes, values, inputs, versions, list(available),
              unsupported=unsupported)
    _note_duplicate_names(g)
    if weights is not None:
        attach_weights(g, weights)
    return g


def _note_duplicate_names(g: Graph):
    """Caffe accepts layers that share a name (HED's several 'crop'). Say what that means
    for weights: BVLC Caffe's Net::CopyTrainedLayersFrom (src/caffe/net.cpp at commit
    c9f71bd) looks each caffemodel entry up by a linear search of layer_names_, so every
    entry named N is copied into the FIRST layer named N; later ones keep their fillers."""
    repeated = g.net.duplicate_names()
    by_name = {}
    for n in g.nodes:
        if n.name in repeated:
            by_name.setdefault(n.name, []).append(n)
    for name, count in repeated.items():
        kept = by_name.get(name, [])
        where = ", ".join(f"{n.type} at {n.layer.position}" if n.layer.position else n.type
                          for n in kept)
        g.notes.append((name, (
            f"{count} layers share this name ({where}); Caffe accepts that, and a "
            f"caffemodel's weights stored under '{name}' go to the first of them only "
            f"(net.cpp CopyTrainedLayersFrom); in Keras the later ones are named with a "
            f"suffix (_1, _2, ...)")))


def infer_node(node, values, path):
    """Infer ``node``'s top and parameter shapes from its inputs' (all known), within
    Caffe's blob limits; sets them on ``values`` and ``node``."""
    lay = node.layer
    try:
        tops, params = infer(lay, [values[i].shape for i in node.inputs])
        for what, shapes in (("output", tops), ("parameter blob", params)):
            for i, shp in enumerate(shapes):
                check_blob_size(lay, shp, f"{what} {i}")
    except CaffeFormatError as e:
        raise e.with_context(path=path, layer=lay.name) from None
    for vid, shp in zip(node.outputs, tops):
        values[vid].shape = tuple(shp)
    node.param_shapes = [tuple(p) for p in params]


def fit_blobs(node, path):
    """Blobs attached before their layer's shapes were known (downstream of a custom
    type): give them the shapes the layer implies, or say why they do not fit."""
    blobs, want = node.layer.blobs, node.param_shapes
    if not blobs or want is None:
        return
    if len(blobs) != len(want) or any(b.size != math.prod(w) for b, w in zip(blobs, want)):
        raise CaffeFormatError(
            f"weight blobs {_fmt_shapes([b.shape for b in blobs])} do not fit the "
            f"{_fmt_shapes(want)} this {node.type} implies", path=path, layer=node.name)
    node.layer.blobs = [b.reshape(w) for b, w in zip(blobs, want)]


def check_blob_size(layer, shape, what):
    """Caffe's own blob limits (at most 32 axes, INT_MAX values): a net that asks for more
    is malformed, and must not make later stages allocate absurd memory. ``what`` names
    the blob in the error ("output 0", "parameter blob 1"); None dims are data-decided."""
    if len(shape) > MAX_AXES:
        raise ShapeError(f"{what} would have {len(shape)} axes; Caffe allows at most "
                         f"{MAX_AXES}", layer=layer.name, position=layer.position or None)
    if any(d is not None and d < 0 for d in shape):
        raise ShapeError(f"{what} would have shape {list(shape)}, with a negative dimension",
                         layer=layer.name, position=layer.position or None)
    count = math.prod(d for d in shape if d is not None)
    if count > MAX_COUNT:
        raise ShapeError(f"{what} would have shape {list(shape)}: {count:,} values, more "
                         f"than Caffe's limit of {MAX_COUNT:,} per blob",
                         layer=layer.name, position=layer.position or None)


def _ordinal(k):
    return {2: "2nd", 3: "3rd"}.get(k, f"{k}th")


def _fresh_id(values, base):
    vid, k = base, 1
    while vid in values:
        vid, k = f"{base}#{k}", k + 1
    return vid


def _legacy_matches(declared, expected):
    """Legacy num/channels/height/width dims are the real shape left-padded with 1s."""
    if len(expected) > 4:
        return False
    return tuple(declared) == (1,) * (4 - len(expected)) + tuple(expected)


def _squeeze_legacy(shape):
    shape = list(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape.pop(0)
    return tuple(shape)


def attach_weights(g: Graph, weights: CaffeModel):
    """Give each layer its blobs from the caffemodel, matched by layer name, reshaped to
    the shapes the layer definition implies (legacy 4-D dims included)."""
    g.weights_path = weights.path
    by_name = {n.name: n for n in g.nodes}
    blobless = {lw.name for lw in weights.all_layers if not lw.blobs}
    rng = None
    for node in g.nodes:
        lw = weights.layers.get(node.name)
        expected = node.param_shapes
        if node.layer.occurrence > 1:
            # Caffe copies every entry named so into the first layer of that name; this
            # one keeps the values its fillers drew (drawn here too, seeded)
            if expected:
                if rng is None:
                    rng = np.random.default_rng(0)
                node.layer.blobs = fresh_blobs(node.layer, expected, rng) or []
                g.notes.append((node.name, (
                    f"the {_ordinal(node.layer.occurrence)} layer named '{node.name}' "
                    f"({node.type}) gets no weights from {weights.path}, as in Caffe, "
                    f"which copies them into the first layer of that name only; it keeps "
                    f"values drawn from its fillers (seeded here, so they differ from any "
                    f"Caffe run's)")))
                warnings.warn(f"{weights.path}: layer '{node.name}' ({_ordinal(node.layer.occurrence)} of "
                              f"that name) gets no weights, as in Caffe; its values are drawn from its "
                              f"fillers", CaffeWarning, stacklevel=3)
            continue
        if expected and node.name in blobless:
            raise CaffeFormatError(
                f"{weights.path} holds an entry '{node.name}' without blobs, and Caffe "
                f"copies every entry of that name into this {node.type}, which needs "
                f"{len(expected)} blobs {_fmt_shapes(expected)} (Caffe stops there: "
                f"'Incompatible number of blobs')", path=g.net.path,
                position=node.layer.position, layer=node.name)
        if lw is None:
            if expected:
                raise CaffeFormatError(
                    f"{node.type} layer has no weights in {weights.path} (expected "
                    f"{len(expected)} blobs: {_fmt_shapes(expected)}); is this the "
                    f"caffemodel for this prototxt?", path=g.net.path,
                    position=node.layer.position, layer=node.name)
            continue
        if expected is None:  # unknown type: take blobs as declared
            node.layer.blobs = [b.array(_squeeze_legacy(b.shape) if b.legacy else None)
                                for b in lw.blobs]
            continue
        found = [b.shape for b in lw.blobs]
        if len(found) != len(expected):
            raise CaffeFormatError(
                f"expected {len(expected)} weight blobs {_fmt_shapes(expected)} for this "
                f"{node.type}, found {len(found)} {_fmt_shapes(found)} in {weights.path}",
                path=g.net.path, position=node.layer.position, layer=node.name)
        arrays = []
        for i, (b, want) in enumerate(zip(lw.blobs, expected)):
            ok = (tuple(b.shape) == tuple(want) or
                  (b.legacy and _legacy_matches(b.shape, want)) or
                  (math.prod(want) == math.prod(b.shape) == 1))
            if not ok:
                raise CaffeFormatError(
                    f"weight blob {i} has shape {list(b.shape)} in {weights.path}, but the "
                    f"prototxt implies {list(want)}", path=g.net.path,
                    position=node.layer.position, layer=node.name)
            arrays.append(b.array(want))
        node.layer.blobs = arrays
    extra = [name for name in weights.layers if name not in by_name]
    if extra:
        g.extra_weights = extra
        warnings.warn(f"{weights.path}: weights for {len(extra)} layer(s) not in the prototxt "
                      f"are ignored: {', '.join(extra)}", CaffeWarning, stacklevel=3)
    _note_pool_rounding(g, weights)


def _note_pool_rounding(g: Graph, weights: CaffeModel):
    """Pooling field 13 is BVLC's round_mode (enum: CEIL=0, FLOOR=1) or, in forks,
    ceil_mode (bool: true=1), so a weights file that stores it can mean either rounding.
    Where the two roundings give this layer different sizes, find which one the weights
    fit (a later InnerProduct's weight count, a Concat or Eltwise...) and tell inspect
    which reading the file means; the prototxt's own field decides what is converted."""
    from .net import Layer
    from .proto.message import Message
    from .shapes import pool_geometry, pooled_size, pooling_rounds_up

    def with_rounding(layer, up):
        pool = Message("PoolingParameter")
        for k, v in layer.param("pooling_param")._values.items():
            if k not in ("round_mode", "ceil_mode"):
                pool.set(k, v)
        pool.set("ceil_mode", up)
        params = Message(layer.params._mtype.name)
        for k, v in layer.params._values.items():
            params.set(k, v)
        params.set("pooling_param", pool)
        return Layer(layer.name, layer.type, layer.bottoms, layer.tops, params,
                     layer.position)

    def misfit(changed, up):
        """Why the weights would not fit with ``changed`` rounding ``up``; None if they do."""
        shapes = {v: g.values[v].shape for v in g.inputs}
        for n in g.nodes:
            ins = [shapes.get(v) for v in n.inputs]
            if n.type not in SHAPE_FUNCTIONS or any(s is None for s in ins):
                continue
            try:
                tops, params = infer(with_rounding(n.layer, up) if n is changed else n.layer,
                                     ins)
            except CaffeFormatError as e:
                return f"layer '{n.name}' would fail ({e.detail})"
            shapes.update(zip(n.outputs, (tuple(t) for t in tops)))
            lw = weights.layers.get(n.name)
            for b, want in zip(lw.blobs if lw else (), params):
                if not (tuple(b.shape) == tuple(want) or math.prod(want) == math.prod(
                        b.shape) == 1 or (b.legacy and _legacy_matches(b.shape, want))):
                    return (f"the weights of '{n.name}' {list(b.shape)} would not fit "
                            f"(it would need {list(want)})")
        return None

    def rounds(up):
        return "up" if up else "down"

    entries = {}
    for lw in weights.all_layers:
        entries.setdefault(lw.name, lw)
    for node in g.nodes:
        lw = entries.get(node.name)
        if node.type != "Pooling" or lw is None or lw.pool_field13 is None:
            continue
        raw = int(lw.pool_field13)
        bvlc = f"BVLC round_mode: {'FLOOR' if raw == 1 else 'CEIL'}"
        fork = f"fork ceil_mode: {'false' if raw == 0 else 'true'}"
        bvlc_up, fork_up = raw != 1, raw != 0
        p = node.layer.param("pooling_param")
        up = pooling_rounds_up(node.layer)
        said = ("ceil_mode: " + str(bool(p.ceil_mode)).lower() if p.has("ceil_mode") else
                f"round_mode: {p.round_mode}" if p.has("round_mode") else
                "no rounding field, so Caffe's default")
        head = f"pooling field 13 in the weights is {raw}"
        shape = g.values[node.inputs[0]].shape if node.inputs else None
        if shape is None or len(shape) != 4:
            continue
        k, s, pad, _ = pool_geometry(node.layer, shape)
        sizes = {u: tuple(pooled_size(shape[2 + i], k[i], s[i], pad[i], u) for i in (0, 1))
                 for u in (True, False)}
        if sizes[True] == sizes[False]:
            g.notes.append((node.name, (
                f"{head} ({bvlc}, or {fork}); both round to {sizes[up][0]}x"
                f"{sizes[up][1]} here, so it makes no difference")))
            continue
        why = misfit(node, not up)
        if why is None:
            g.notes.append((node.name, (
                f"{head}: {bvlc} (rounds {rounds(bvlc_up)}) or {fork} (rounds "
                f"{rounds(fork_up)}); the weights fit either, so the prototxt's rounding "
                f"is used ({said}: {rounds(up)}, {sizes[up][0]}x{sizes[up][1]}); if the net "
                f"was trained the other way, say so in the prototxt")))
            continue
        meant, other = (fork, bvlc) if fork_up == up else (bvlc, fork)
        g.notes.append((node.name, (
            f"{head}, which here means {meant}: rounding {rounds(up)} "
            f"({sizes[up][0]}x{sizes[up][1]}), as the prototxt says ({said}); read as "
            f"{other} it would round {rounds(not up)} ({sizes[not up][0]}x"
            f"{sizes[not up][1]}) and {why}")))


def _fmt_shapes(shapes):
    return "[" + ", ".join(str(list(s)) for s in shapes) + "]"


def load_graph(prototxt, caffemodel=None, input_shapes=None) -> Graph:
    """Read a prototxt (and optionally its caffemodel) into a checked Graph."""
    with paused_gc():  # linear time for very deep nets (see depth.py)
        net = load_net(prototxt, input_shapes=input_shapes)
        weights = load_caffemodel(caffemodel) if caffemodel is not None else None
        return build_graph(net, weights)


__all__ = [
    "STRUCTURAL",
    "Graph",
    "Node",
    "ShapeError",
    "Value",
    "attach_weights",
    "build_graph",
    "check_blob_size",
    "fit_blobs",
    "infer_node",
    "load_graph",
]
