"""Emit a Keras functional model from a planned Caffe graph."""
from __future__ import annotations

import contextlib
import warnings

import keras
import numpy as np

from ..depth import deep_graphs, paused_gc
from ..errors import CaffeFormatError, InternalError
from ..fillers import fresh_blobs
from ..graph import Graph
from ..keras_compat import variable_value
from ..layout import caffe_shape, keras_shape
from ..pages import release
from ..sharing import shared_owners
from .context import LayerContext
from .plan import Step, check_supported, keras_name, make_plan, resolve_outputs
from .registry import CONVERTERS, SHAPE_FUNCTIONS, WEIGHTS


class StepContext(LayerContext):
    """What a converter sees: a LayerContext plus the input tensors (4-D NHWC, other
    ranks in Caffe's axis order) and helpers to record the Keras layers it makes."""

    def __init__(self, step: Step, graph: Graph, tensors: dict, with_weights: bool):
        super().__init__(step, graph, with_weights)
        self.inputs = [tensors[v] for v in step.inputs]
        self.net_inputs = [tensors[v] for v in graph.inputs]   # the model's inputs
        self.created = []      # Keras layers made for this step
        self.share = None      # the owner's Keras layers, when this step shares its params
        self._assigned = set()
        self._keras_weights = None

    def keras_weights(self):
        """{Keras layer name: arrays} from the registered weights function, computed once
        per step; None when building fresh or when no weights function is registered."""
        if self._keras_weights is None and self.with_weights and \
                any(n.layer.blobs for n in self.nodes) and self.step.type in WEIGHTS:
            self._keras_weights = WEIGHTS[self.step.type](self)
        return self._keras_weights

    def add(self, layer, inputs, **kwargs):
        """Call ``layer`` on ``inputs`` (a tensor, or a list for merge layers) and record
        it as part of this step. A layer that gets Caffe weights is built with them as its
        initial values: no random init to pay for and then overwrite."""
        if self.share is not None:
            layer = self._owners_layer(layer)
        if layer not in self.created:
            self.created.append(layer)
        preset = (self.keras_weights() or {}).get(layer.name)
        if preset is None or layer.built:
            return layer(inputs, **kwargs)
        with _initial_values(layer, preset) as created:
            out = layer(inputs, **kwargs)
        if [id(v) for v in layer.weights] == [id(v) for v in created]:
            self._assigned.add(layer.name)
        return out

    def _owners_layer(self, layer):
        """The owner's Keras layer at the same position, for a layer that shares all
        its parameters (sharing.py); it must be the same layer but for its name."""
        i = len(self.created)
        if layer in self.created or i >= len(self.share):
            return layer if layer in self.created else self._refuse_share(layer)
        owner = self.share[i]
        mine, theirs = dict(layer.get_config()), dict(owner.get_config())
        mine.pop("name", None)
        theirs.pop("name", None)
        if type(layer) is not type(owner) or mine != theirs:
            self._refuse_share(layer)
        return owner

    def _refuse_share(self, layer):
        from ..errors import UnsupportedLayerError
        raise UnsupportedLayerError(
            f"layer '{self.layer.name}' shares its parameters, but its Keras layer "
            f"'{layer.name}' is not configured as its owner's: sharing is built as one Keras "
            f"layer called twice", path=self.graph.net.path, layer=self.layer.name)

    def set_weights(self, layer, arrays):
        """Give ``layer`` its weights (Keras layout, in ``layer.weights`` order)."""
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(np.shape(a)) for a in arrays]
        if want != got:
            raise InternalError(
                f"{_where(self)}: Keras layer '{layer.name}' wants weights {want}, got {got}")
        layer.set_weights([np.asarray(a, dtype=w.dtype) for a, w in zip(arrays, layer.weights)])
        self._assigned.add(layer.name)


def _where(ctx) -> str:
    """Names the step and who converts it, for InternalError messages (a broken
    invariant: a bug in caffe2keras or in a registered converter)."""
    fn = CONVERTERS.get(ctx.step.type)
    who = f"{fn.__module__}.{fn.__qualname__}" if fn is not None else "no converter"
    return (f"{ctx.graph.net.path}: layer '{ctx.layer.name}' ({ctx.step.type}, "
            f"converted by {who})")


@contextlib.contextmanager
def _initial_values(layer, arrays):
    """Make ``layer``'s build() create its variables from ``arrays`` (in creation order).
    The caller checks that creation order is ``layer.weights`` order; if not, the values
    are set again afterwards in the right order."""
    queue = list(arrays)
    created = []
    original = layer.add_weight

    def add_weight(*args, **kwargs):
        shape = kwargs.get("shape", args[0] if args else None)
        if queue and shape is not None and tuple(np.shape(queue[0])) == tuple(shape):
            value = np.asarray(queue.pop(0))
            # never a Keras initializer: the variable is made from the Caffe values,
            # in the form its backend adopts without copying where it can
            kwargs["initializer"] = lambda shape, dtype=None: variable_value(value, dtype)
            args = args[1:] if args else args
            kwargs["shape"] = shape
        var = original(*args, **kwargs)
        created.append(var)
        return var

    layer.add_weight = add_weight
    try:
        yield created
    finally:
        del layer.add_weight


def _apply_weights(ctx: StepContext):
    if not (ctx.with_weights and any(n.layer.blobs for n in ctx.nodes)):
        return
    weights = ctx.keras_weights()
    if weights is None:
        if not ctx._assigned:
            raise CaffeFormatError(
                f"the converter for {ctx.step.type} registered no weights function and set "
                f"no weights; the layer's {len(ctx.layer.blobs)} blobs would be lost",
                path=ctx.graph.net.path, layer=ctx.layer.name)
        return
    by_name = {lay.name: lay for lay in ctx.created}
    for name, arrays in weights.items():
        if name not in by_name:
            raise InternalError(f"{_where(ctx)}: the weights function gives weights for "
                                f"'{name}', a Keras layer the converter did not make")
        if name not in ctx._assigned:
            ctx.set_weights(by_name[name], arrays)
    ctx._keras_weights = None  # let the transposed copies go


def _check_shape(ctx: StepContext, value_id, tensor):
    want = ctx.graph.values[value_id].shape
    if want is None:
        return
    want = keras_shape(want)
    got = tuple(tensor.shape)
    if len(got) != len(want) or any(
            w is not None and g is not None and w != g for w, g in list(zip(want, got))[1:]):
        raise InternalError(
            f"{_where(ctx)}: the converter produced Keras shape {got}, but Caffe's "
            f"shape {ctx.graph.values[value_id].shape} means Keras {want}")


def _caffe_shape(keras_shape_, graph):
    """Caffe shape of a Keras tensor (batch taken from the net's first input)."""
    s = list(keras_shape_)
    if s and s[0] is None and graph.inputs:
        s[0] = graph.values[graph.inputs[0]].shape[0]
    return caffe_shape(s)


def _infer_late(graph, step):
    """Shapes downstream of a layer type without a shape function were unknown when the
    graph was built; the converted tensors have filled them in by now."""
    from ..graph import fit_blobs, infer_node
    for node in step.nodes:
        if node.param_shapes is not None or node.type not in SHAPE_FUNCTIONS:
            continue
        if any(graph.values[v].shape is None for v in node.inputs):
            continue
        infer_node(node, graph.values, graph.net.path)
        fit_blobs(node, graph.net.path)


def build_model(graph: Graph, outputs=None, with_weights=True, name=None,
                fill_fresh=False, seed=None) -> keras.Model:
    """The Keras model of ``graph``; see _build_model."""
    with paused_gc():  # linear time for very deep nets (see depth.py)
        return _build_model(graph, outputs, with_weights, name, fill_fresh, seed)


def _build_model(graph: Graph, outputs, with_weights, name, fill_fresh, seed):
    """The Keras model of ``graph``. with_weights: give layers the graph's Caffe blobs;
    else fill_fresh draws them from the prototxt's fillers (fillers.py, numpy ``seed``),
    and without either every variable keeps its Keras initializer (as for a model built
    with deferred variables, whose values are never computed)."""
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
    rng = np.random.default_rng(seed) if fill_fresh and not with_weights else None
    # training refuses partial sharing before it gets here (train/model.py)
    owners = shared_owners([n.layer for n in graph.nodes], graph.net.path, strict=False)
    made = {}  # Caffe layer name: the Keras layers of its step (for sharing layers)
    for step in plan:
        _infer_late(graph, step)
        if rng is not None:
            for n in step.nodes:
                if n.param_shapes and not n.layer.blobs:
                    n.layer.blobs = fresh_blobs(n.layer, n.param_shapes, rng) or []
        ctx = StepContext(step, graph, tensors, with_weights or rng is not None)
        owner = owners.get(step.node.layer.name)
        if owner is not None:
            if len(step.nodes) > 1 or owner not in made:
                raise CaffeFormatError(
                    f"layer '{step.node.layer.name}' shares the parameters of '{owner}', "
                    f"which is fused with another layer or not built before it",
                    path=graph.net.path, layer=step.node.layer.name)
            ctx.share = made[owner]
            ctx.with_weights = False  # its caffemodel blobs are copies of the owner's
        outs = CONVERTERS[step.type](ctx)
        made[step.node.layer.name] = ctx.created
        if len(outs) != len(step.outputs):
            raise InternalError(
                f"{_where(ctx)}: the converter returned {len(outs)} tensors for "
                f"{len(step.outputs)} tops")
        for vid, t in zip(step.outputs, outs):
            if graph.values[vid].shape is None:  # a type with no shape function
                graph.values[vid].shape = _caffe_shape(t.shape, graph)
            _check_shape(ctx, vid, t)
            tensors[vid] = t
        _apply_weights(ctx)
        for n in step.nodes:  # their values now live in Keras variables
            release(n.layer.blobs)
    model_outputs = {b: tensors[graph.final(b)] for b in out_blobs}
    with warnings.catch_warnings():
        # inputs are keyed by Caffe blob names; Keras wants the Input's own name, which
        # cannot hold '/' and the like (a warning only: the dict maps them all the same)
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        with deep_graphs():  # Keras walks the graph recursively: deep nets need this
            return keras.Model(inputs=model_inputs, outputs=model_outputs,
                               name=keras_name(name or graph.net.name or "caffe_model"))
