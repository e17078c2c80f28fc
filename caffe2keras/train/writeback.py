"""save_caffemodel: a (fine-tuned) Keras model's weights back into a .caffemodel.

Each layer type's record (emit/registry.py) has a weights function mapping Caffe blobs
to Keras arrays by rearranging them (transposes, reshapes, flatten-order permutations).
Run on blobs that hold their own element indices, it tells where every Caffe value went,
so its inverse needs no per-type code; a type whose function computes values is named.
BatchNorm is the exception: its statistics are divided by Caffe's scale factor, and are
written back multiplied by it (the model's factor after training, else 1).
"""
from __future__ import annotations

import numpy as np

from ..errors import CaffeFormatError, UnsupportedLayerError
from ..graph import load_graph
from ..writer import CaffeNetWriter

_SPLIT = 4096  # indices go through float32 in two exact halves: hi * 4096 + lo


def _indices_through(fn, ctx, nodes, shapes, part):
    for node, node_shapes in zip(nodes, shapes):
        node.layer.blobs = [
            (np.arange(int(np.prod(s)), dtype=np.int64).reshape(s) // _SPLIT if part == "hi"
             else np.arange(int(np.prod(s)), dtype=np.int64).reshape(s) % _SPLIT
             ).astype(np.float32) for s in node_shapes]
    return fn(ctx)


def _inverse_map(step, graph, path):
    """{keras layer: [int64 arrays of (node index, blob index, flat index)]}: where each
    Keras value comes from."""
    from ..emit.context import LayerContext
    from ..emit.registry import layer_type

    nodes = [n for n in step.nodes if n.param_shapes]
    shapes = [[tuple(s) for s in n.param_shapes] for n in nodes]
    ctx = LayerContext(step, graph, with_weights=True)
    record = layer_type(step.type)
    fn = record.weights if record is not None else None
    if fn is None:
        raise UnsupportedLayerError(f"no weights function for {step.type}: cannot map its "
                                    f"Keras weights back", path=path, layer=step.node.name)
    hi = _indices_through(fn, ctx, nodes, shapes, "hi")
    lo = _indices_through(fn, ctx, nodes, shapes, "lo")
    for n in nodes:
        n.layer.blobs = []
    # the flat index over all blobs of all nodes, in order
    offsets, total = [], 0
    for node_shapes in shapes:
        for s in node_shapes:
            offsets.append(total)
            total += int(np.prod(s))
    seen = np.zeros(total, bool)
    out = {}
    # a third run with each blob's number says which blob a value came from
    k = 0
    for node, node_shapes in zip(nodes, shapes):
        blobs = []
        for s in node_shapes:
            blobs.append(np.full(s, k, np.float32))
            k += 1
        node.layer.blobs = blobs
    which = fn(ctx)
    for n in nodes:
        n.layer.blobs = []
    for name, arrays in hi.items():
        maps = []
        for a_hi, a_lo, a_which in zip(arrays, lo[name], which[name]):
            a_hi, a_lo, a_which = (np.asarray(a, np.float64) for a in (a_hi, a_lo, a_which))
            if not (np.array_equal(a_hi, np.round(a_hi)) and
                    np.array_equal(a_lo, np.round(a_lo)) and
                    np.array_equal(a_which, np.round(a_which))):
                raise UnsupportedLayerError(
                    f"the {step.type} weights are computed, not rearranged, from the Caffe "
                    f"blobs; cannot write them back", path=path, layer=step.node.name)
            b = a_which.astype(np.int64)
            flat = a_hi.astype(np.int64) * _SPLIT + a_lo.astype(np.int64)
            glob = np.asarray(offsets)[b] + flat
            seen[glob.reshape(-1)] = True
            maps.append(glob)
        out[name] = maps
    if not seen.all():
        raise UnsupportedLayerError(f"the Keras weights of this {step.type} do not hold "
                                    f"every Caffe value; cannot write them back", path=path,
                                    layer=step.node.name)
    return out, nodes, shapes, offsets, total


def _batch_norm_blobs(layer):
    """Caffe's [mean sum, variance sum, factor] from a (Caffe)BatchNormalization."""
    w = {v.path.rsplit("/", 1)[-1]: np.asarray(v.numpy() if hasattr(v, "numpy") else v)
         for v in layer.weights}
    f = float(w["factor"]) if "factor" in w else 1.0
    mean = np.asarray(w["moving_mean"], np.float32) * np.float32(f)
    var = np.asarray(w["moving_variance"], np.float32) * np.float32(f)
    return [mean, var, np.array([f], np.float32)], w


def save_caffemodel(model, prototxt, out, input_shapes=None):
    """Write ``model``'s weights as a .caffemodel for ``prototxt`` (the deploy or train
    net the model was converted from; layers are matched by name). Returns ``out``."""
    import keras

    from ..emit.plan import FUSED_BN_SCALE, make_plan
    from ..sharing import shared_owners

    graph = load_graph(prototxt, input_shapes=input_shapes)
    path = graph.net.path
    plan = make_plan(graph, set())
    names = {layer.name for layer in model.layers}
    owners = shared_owners(graph.net.layers, path)
    for step in plan:
        if not any(n.param_shapes for n in step.nodes):
            continue
        if step.node.layer.name in owners:
            continue  # a copy of its owner's blobs, as Caffe saves it (below)
        if step.name not in names:
            raise CaffeFormatError(f"the Keras model has no layer '{step.name}' for the "
                                   f"Caffe layer '{step.node.name}'", path=path,
                                   layer=step.node.name)
        if step.type in ("BatchNorm", FUSED_BN_SCALE):
            bn_blobs, w = _batch_norm_blobs(model.get_layer(step.name))
            step.nodes[0].layer.blobs = bn_blobs
            if step.type == FUSED_BN_SCALE:
                sc = [np.asarray(w["gamma"], np.float32)]
                if len(step.nodes[1].param_shapes or ()) > 1:
                    sc.append(np.asarray(w["beta"], np.float32))
                step.nodes[1].layer.blobs = [
                    a.reshape(s) for a, s in zip(sc, step.nodes[1].param_shapes)]
            continue
        maps, nodes, shapes, offsets, total = _inverse_map(step, graph, path)
        flat = np.zeros(total, np.float32)
        for name, idx in maps.items():
            values = [keras.ops.convert_to_numpy(v) for v in model.get_layer(name).weights]
            if len(values) != len(idx):
                raise CaffeFormatError(
                    f"Keras layer '{name}' has {len(values)} weights, the Caffe layer maps "
                    f"to {len(idx)}", path=path, layer=step.node.name)
            for v, i in zip(values, idx):
                if tuple(v.shape) != tuple(i.shape):
                    raise CaffeFormatError(
                        f"Keras layer '{name}' holds a weight of shape {tuple(v.shape)} "
                        f"where {tuple(i.shape)} was expected", path=path,
                        layer=step.node.name)
                flat[i.reshape(-1)] = np.asarray(v, np.float32).reshape(-1)
        k = 0
        for node, node_shapes in zip(nodes, shapes):
            blobs = []
            for s in node_shapes:
                n = int(np.prod(s))
                blobs.append(flat[offsets[k]:offsets[k] + n].reshape(s))
                k += 1
            node.layer.blobs = blobs
    by_name = {lay.name: lay for lay in graph.net.layers}
    for sharer, owner in owners.items():
        by_name[sharer].blobs = [np.array(b) for b in by_name[owner].blobs]
    CaffeNetWriter.from_net(graph.net).write_caffemodel(out)
    return out
