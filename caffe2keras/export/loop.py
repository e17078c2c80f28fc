"""The per-layer write loop every format shares, and its verbose report.

``write_steps`` streams each plan step's Keras-layout arrays (keras, keras2-h5, npz
``layout="keras"``) into a sink; ``write_blobs`` writes each layer's blobs as stored (npz,
pickle). Both drop a layer's mapped caffemodel pages once it is written, so memory stays
near one layer (one slice, for large ones).
"""
from __future__ import annotations

import contextlib
import math
import warnings

from ..errors import CaffeWarning
from ..pages import release
from .sinks import write_result


class Report:
    """Verbose lines and the one warning about layers written unchanged."""

    def __init__(self, verbose, log, progress=None):
        self.verbose = verbose
        self.log = log or print
        self.unknown = []      # (layer, type, why)
        self.skipped = []
        self.progress = progress  # called with the float32 bytes done so far
        self.done = 0

    def layer(self, name, type_, caffe_shapes, dest, shapes):
        if self.verbose:
            self.log(f"{name} ({type_}): {_fmt(caffe_shapes)} -> {dest}: {_fmt(shapes)}")
        if self.progress is not None:
            self.done += 4 * sum(math.prod(s) for s in caffe_shapes)
            self.progress(self.done)

    def warn_unknown(self, graph):
        if self.unknown:
            listing = "; ".join(f"{n} ({t}{', ' + why if why else ''})"
                                for n, t, why in self.unknown)
            warnings.warn(f"{graph.net.path}: {len(self.unknown)} layer(s) have no known Keras "
                          f"layout, their blobs are written unchanged (Caffe layout): "
                          f"{listing}. Use skip_unknown (--skip-unknown) to leave them out.",
                          CaffeWarning, stacklevel=3)
        if self.skipped:
            warnings.warn(f"{graph.net.path}: left out {len(self.skipped)} layer(s) with no "
                          f"known Keras layout: {'; '.join(self.skipped)}", CaffeWarning,
                          stacklevel=3)


def _fmt(shapes):
    return "[" + ", ".join("(" + ",".join(str(d) for d in s) + ")" for s in shapes) + "]"


def caffe_shapes(step):
    return [b.shape for n in step.nodes for b in n.layer.blobs]


@contextlib.contextmanager
def writing(sink):
    """Close ``sink`` when the export succeeds, abort it when anything fails."""
    try:
        yield sink
    except BaseException:
        sink.abort()
        raise
    sink.close()


def write_steps(sink, steps, report):
    """The one per-layer loop: ``steps`` yields ``(step, result, place)``, where
    ``result`` holds the step's arrays (slicing.Result) and ``place(name, count)`` says
    where Keras layer ``name``'s arrays go: ``(label for the report, [(group path, group
    attrs, key) for each array])``."""
    for step, result, place in steps:
        targets, dests = {}, []
        for name, count in result.names:
            dest, slots = place(name, count)
            dests.append(dest)
            for i, (group, attrs, key) in enumerate(slots):
                g = sink.make(group, attrs)
                k = (name, i)
                targets[k] = sink.array(g, key, result.shapes[k], result.dtypes[k],
                                        result.axes[k])
        write_result(result, targets)
        for node in step.nodes:
            release(node.layer.blobs)
        report.layer(step.node.name, step.type, caffe_shapes(step), ", ".join(dests),
                     [result.shapes[k] for k in targets])


def write_blobs(sink, nodes, report, names=None):
    """Each graph node in ``nodes`` as one group holding its blobs as stored, named by
    ``names`` ({id(node): name}, for sinks that need unique names) or the layer's name."""
    for node in nodes:
        blobs = list(node.layer.blobs)
        group = sink.make((names or {}).get(id(node), node.name), {"type": node.type, "bottoms": list(node.layer.bottoms),
                                      "tops": list(node.layer.tops)})
        for i, blob in enumerate(blobs):
            sink.put_blob(group, str(i), blob)
        if blobs:
            report.layer(node.name, node.type, [b.shape for b in blobs], sink.label(group),
                         [b.shape for b in blobs])
