"""Emit a Keras functional model from a planned Caffe graph."""
from __future__ import annotations

import numpy as np

import keras

from ..errors import CaffeFormatError
from ..graph import Graph
from .context import LayerContext
from .plan import Step, check_supported, keras_name, make_plan, resolve_outputs
from .registry import CONVERTERS, WEIGHTS


def keras_shape(caffe_shape):
    """Keras layout of a Caffe shape: 4-D NCHW -> NHWC, other ranks unchanged."""
    s = tuple(caffe_shape)
    if len(s) == 4:
        return (s[0], s[2], s[3], s[1])
    return s


class StepContext(LayerContext):
    """What a converter sees: a LayerContext plus the input tensors (4-D NHWC, other
    ranks in Caffe's axis order) and helpers to record the Keras layers it makes."""

    def __init__(self, step: Step, graph: Graph, tensors: dict, with_weights: bool):
        super().__init__(step, graph, with_weights)
        self.inputs = [tensors[v] for v in step.inputs]
        self.created = []      # Keras layers made for this step
        self._assigned = set()

    def add(self, layer, inputs, **kwargs):
        """Call ``layer`` on ``inputs`` (a tensor, or a list for merge layers) and record
        it as part of this step."""
        if layer not in self.created:
            self.created.append(layer)
        return layer(inputs, **kwargs)

    def set_weights(self, layer, arrays):
        """Give ``layer`` its weights (Keras layout, in ``layer.weights`` order)."""
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(np.shape(a)) for a in arrays]
        if want != got:
            raise CaffeFormatError(
                f"internal: Keras layer '{layer.name}' wants weights {want}, got {got}",
                path=self.graph.net.path, layer=self.layer.name)
        layer.set_weights([np.asarray(a, dtype=w.dtype) for a, w in zip(arrays, layer.weights)])
        self._assigned.add(layer.name)


def _apply_weights(ctx: StepContext):
    has_blobs = any(n.layer.blobs for n in ctx.nodes)
    if not (ctx.with_weights and has_blobs):
        return
    fn = WEIGHTS.get(ctx.step.type)
    if fn is None:
        if not ctx._assigned:
            raise CaffeFormatError(
                f"the converter for {ctx.step.type} registered no weights function and set "
                f"no weights; the layer's {len(ctx.layer.blobs)} blobs would be lost",
                path=ctx.graph.net.path, layer=ctx.layer.name)
        return
    by_name = {lay.name: lay for lay in ctx.created}
    for name, arrays in fn(ctx).items():
        if name not in by_name:
            raise CaffeFormatError(f"internal: weights for unknown Keras layer '{name}'",
                                   path=ctx.graph.net.path, layer=ctx.layer.name)
        ctx.set_weights(by_name[name], arrays)


def _check_shape(ctx: StepContext, value_id, tensor):
    want = ctx.graph.values[value_id].shape
    if want is None:
        return
    want = keras_shape(want)
    got = tuple(tensor.shape)
    if len(got) != len(want) or any(
            w is not None and g is not None and w != g for w, g in list(zip(want, got))[1:]):
        raise CaffeFormatError(
            f"internal: {ctx.step.type} converter produced Keras shape {got}, but Caffe's "
            f"shape {ctx.graph.values[value_id].shape} means Keras {want}",
            path=ctx.graph.net.path, layer=ctx.layer.name)


def build_model(graph: Graph, outputs=None, with_weights=True, name=None) -> keras.Model:
    check_supported(graph)
    out_blobs = resolve_outputs(graph, outputs)
    keep = {graph.final(b) for b in out_blobs}
    plan = make_plan(graph, keep)
    names = plan[0].names if plan else None
    tensors, model_inputs = {}, {}
    for blob in graph.inputs:
        shape = keras_shape(graph.values[blob].shape)
        iname = names.claim(keras_name(blob)) if names else keras_name(blob)
        inp = keras.Input(shape=shape[1:], name=iname)
        tensors[blob] = inp
        model_inputs[graph.values[blob].blob] = inp
    for step in plan:
        ctx = StepContext(step, graph, tensors, with_weights)
        outs = CONVERTERS[step.type](ctx)
        if len(outs) != len(step.outputs):
            raise CaffeFormatError(
                f"internal: {step.type} converter returned {len(outs)} tensors for "
                f"{len(step.outputs)} tops", path=graph.net.path, layer=ctx.layer.name)
        for vid, t in zip(step.outputs, outs):
            _check_shape(ctx, vid, t)
            tensors[vid] = t
        _apply_weights(ctx)
    model_outputs = {b: tensors[graph.final(b)] for b in out_blobs}
    return keras.Model(inputs=model_inputs, outputs=model_outputs,
                       name=keras_name(name or graph.net.name or "caffe_model"))
