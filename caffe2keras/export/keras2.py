"""Keras-layout arrays by layer name: the legacy keras2-h5 file and npz ``layout="keras"``.

keras2-h5 is the Keras 2 HDF5 weights layout, keyed by layer name, in the layouts of
Keras's own layers (Conv2D, DepthwiseConv2D, Conv2DTranspose, Dense, BatchNormalization,
PReLU): ``model.load_weights(path, by_name=True)`` into a model written by hand with the
Caffe layer names. Each type's record says how (``keras2_h5``: a transform, usually its
weights function, and the weight names); a type without one uses its weights function
with numbered names, and a type without either is written unchanged (or left out).
"""
from __future__ import annotations

from ..emit.context import LayerContext
from ..errors import CaffeFormatError
from ..graph import Graph
from ..keras_compat import keras_version_string
from . import slicing
from .loop import write_steps
from .records import keras2_export, known_layout


def keras_layout_steps(graph: Graph, skip_unknown, report):
    """Yield (step, result, weight names {keras layer name: [names]}) in Keras layout for
    every step with blobs; a type with no known layout is reported and then left out
    (``skip_unknown``) or given with its blobs unchanged and numbered names."""
    from ..emit.plan import make_plan

    for step in make_plan(graph, keep=()):
        if not any(n.layer.blobs for n in step.nodes):
            continue
        ctx = LayerContext(step, graph)
        known_shapes = all(s is not None for s in ctx.in_shapes)
        fn, namer, why = keras2_export(step.type, known_shapes)
        if fn is None:
            if skip_unknown:
                report.skipped.append(f"{step.node.name} ({step.type})")
                continue
            report.unknown.append((step.node.name, step.type, why))
            blobs = [b for n in step.nodes for b in n.layer.blobs]
            result = slicing.whole({step.name: blobs}, None)
            yield step, result, {step.name: [str(i) for i in range(len(blobs))]}
            continue
        result = slicing.compute(fn, ctx)
        if namer is None:
            wnames = {n: [str(i) for i in range(c)] for n, c in result.names}
        else:
            wnames = {n: namer(ctx, c) for n, c in result.names}
        yield step, result, wnames


def export_keras2(graph: Graph, sink, skip_unknown, report):
    """Every layer with blobs as an HDF5 group named after it, Keras 2's by-name layout."""
    layer_names = []

    def steps():
        for step, result, wnames in keras_layout_steps(graph, skip_unknown, report):
            def place(name, count, step=step, wnames=wnames):
                if sink.exists(name):
                    raise CaffeFormatError(f"two layers export weights as '{name}'",
                                           path=graph.net.path, layer=step.node.name)
                layer_names.append(name)
                full = [f"{name}/{w}" for w in wnames[name]]
                sink.make(name, {"weight_names": full})
                return name, [(name, None, full[i]) for i in range(count)]
            yield step, result, place

    write_steps(sink, steps(), report)
    sink.make("/", {"layer_names": layer_names,
                    "backend": b"tensorflow",  # channels-last layouts; never Theano's
                    "keras_version": keras_version_string().encode()})


def export_npz_keras(graph: Graph, sink, skip_unknown, report):
    """keras2-h5's arrays as ``LAYER/INDEX`` npz entries."""
    def steps():
        for step, result, _ in keras_layout_steps(graph, skip_unknown, report):
            yield step, result, lambda name, count: (
                f"{name}/*", [(name, None, str(i)) for i in range(count)])

    write_steps(sink, steps(), report)


def caffe_layers(graph: Graph, skip_unknown, report, with_empty=False):
    """Graph nodes with blobs (``with_empty``: all nodes), less those with no known Keras
    layout when ``skip_unknown``."""
    for node in graph.nodes:
        if not node.layer.blobs:
            if with_empty:
                yield node
            continue
        if skip_unknown and not known_layout(node.type):
            report.skipped.append(f"{node.name} ({node.type})")
            continue
        yield node
