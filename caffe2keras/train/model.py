"""convert_for_training: a solver and its train net become a compiled Keras model."""
from __future__ import annotations

import os
import warnings

import keras
import numpy as np
from keras import ops

from ..caffemodel import load_caffemodel
from ..errors import CaffeFormatError, CaffeWarning, UnsupportedLayerError
from ..graph import attach_weights, build_graph
from ..net import is_data_layer
from .layers import (
    Accuracy,
    CaffeBatchNorm,
    ContrastiveLoss,
    EuclideanLoss,
    HingeLoss,
    InfogainLoss,
    MultinomialLogisticLoss,
    SigmoidCrossEntropyLoss,
    SmoothL1Loss,
    SoftmaxWithLoss,
)
from .optimizer import CaffeLearningRate, CaffeSolver
from .solver import Solver, load_solver

LOSS_TYPES = ("SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
              "MultinomialLogisticLoss", "InfogainLoss", "ContrastiveLoss", "SmoothL1Loss")


@keras.saving.register_keras_serializable(package="caffe2keras")
class CaffeTrainingModel(keras.Model):
    """A functional model whose outputs include Caffe's loss tops (scalars). Its
    training loss is sum(loss_weight * loss), as Caffe's solver reports it; Accuracy
    tops are reported as metrics."""

    def __init__(self, *args, **kwargs):  # (*args, **kwargs): Keras revives it as functional
        loss_weights = kwargs.pop("loss_weights", None) or {}
        accuracies = kwargs.pop("accuracies", ())
        frozen = kwargs.pop("frozen", ())
        super().__init__(*args, **kwargs)
        self.loss_weights = {str(k): float(v) for k, v in loss_weights.items()}
        self.accuracies = list(accuracies)
        self.frozen = sorted(frozen)  # paths of lr_mult 0 variables: a variable's
        for var in self.weights:      # trainable flag is not saved, so this keeps it
            if var.path in self.frozen:
                var.trainable = False
        self._accuracy_trackers = [keras.metrics.Mean(name=a) for a in self.accuracies]

    def train_on_batch(self, x=None, y=None, sample_weight=None, class_weight=None,
                       return_dict=False):
        """Keras's train_on_batch; with the solver's ``iter_size`` n > 1 the loss it
        returns is the mean over the calls of the Caffe iteration so far, so the n-th
        call returns what Caffe's solver reports for that iteration (Solver::Step
        averages the loss of its n forward/backward passes)."""
        n = int(getattr(self.optimizer, "iter_size", 1) or 1)
        if n <= 1:
            return super().train_on_batch(x, y, sample_weight=sample_weight,
                                          class_weight=class_weight,
                                          return_dict=return_dict)
        calls = getattr(self.optimizer, "_iterations", None)  # every call, unlike
        done = int(ops.convert_to_numpy(calls)) if calls is not None else 0  # .iterations
        if done % n == 0 or not hasattr(self, "_iteration_losses"):
            self._iteration_losses = []
        logs = super().train_on_batch(x, y, sample_weight=sample_weight,
                                      class_weight=class_weight, return_dict=True)
        self._iteration_losses.append(float(logs["loss"]))
        logs["loss"] = sum(self._iteration_losses) / len(self._iteration_losses)
        if return_dict:
            return logs
        return self._flatten_metrics_in_order(logs)  # Keras's own non-dict form

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = ops.convert_to_tensor(0.0)
        for name, w in self.loss_weights.items():
            if w:
                total = total + w * y_pred[name]
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for name, tracker in zip(self.accuracies, self._accuracy_trackers):
            tracker.update_state(y_pred[name])
        return self.get_metrics_result()

    def get_config(self):
        config = super().get_config()
        config.update({"loss_weights": self.loss_weights, "accuracies": self.accuracies,
                       "frozen": self.frozen})
        return config


def _layer_mults(layer):
    """[(lr_mult, decay_mult)] per blob as the prototxt gives them (V1: blobs_lr,
    weight_decay); blobs past the list get (1, 1)."""
    p = layer.params
    if layer.params._mtype.name == "V1LayerParameter":
        lrs, decays = list(p.blobs_lr), list(p.weight_decay)
        n = max(len(lrs), len(decays))
        return [(lrs[i] if i < len(lrs) else 1.0, decays[i] if i < len(decays) else 1.0)
                for i in range(n)]
    return [(s.lr_mult, s.decay_mult) for s in p.param]


def _mults_of(layer, i):
    m = _layer_mults(layer)
    return m[i] if i < len(m) else (1.0, 1.0)


def _loss_weight(layer):
    w = list(layer.params.loss_weight)
    if len(layer.tops) > 1 and len(w) > 1:
        raise CaffeFormatError("a loss layer with several weighted tops is not supported",
                               layer=layer.name)
    if w:
        return float(w[0])
    return 1.0 if layer.type.endswith("Loss") else 0.0


def _loss_layer(lay, path):
    t = lay.type
    lp = lay.param("loss_param")
    ignore = lp.ignore_label if lp.has("ignore_label") else None
    if t == "SoftmaxWithLoss":
        if lp.has("normalization") or not lp.has("normalize"):
            norm = lp.normalization
        else:
            norm = "VALID" if lp.normalize else "BATCH_SIZE"
        return SoftmaxWithLoss(axis=lay.param("softmax_param").axis, ignore_label=ignore,
                               normalization=norm, name=f"{_kname(lay.name)}")
    if t == "SigmoidCrossEntropyLoss":
        if lp.has("normalization"):
            norm = lp.normalization
        elif lp.has("normalize"):
            norm = "VALID" if lp.normalize else "BATCH_SIZE"
        else:
            norm = "BATCH_SIZE"
        return SigmoidCrossEntropyLoss(ignore_label=ignore, normalization=norm,
                                       name=_kname(lay.name))
    if t == "EuclideanLoss":
        return EuclideanLoss(name=_kname(lay.name))
    if t == "HingeLoss":
        return HingeLoss(norm=lay.param("hinge_loss_param").norm, name=_kname(lay.name))
    if t == "MultinomialLogisticLoss":
        return MultinomialLogisticLoss(name=_kname(lay.name))
    if t == "InfogainLoss":
        h = None
        if len(lay.bottoms) < 3:
            source = lay.param("infogain_loss_param").source
            if not source:
                raise CaffeFormatError("InfogainLoss needs infogain_loss_param source or a "
                                       "third bottom", path=path, layer=lay.name)
            from ..mean import read_binaryproto
            h = np.asarray(read_binaryproto(_beside(source, path)), np.float32)
            k = round(h.size ** 0.5)
            h = h.reshape(k, k)
        return InfogainLoss(infogain=h, name=_kname(lay.name))
    if t == "ContrastiveLoss":
        p = lay.param("contrastive_loss_param")
        return ContrastiveLoss(margin=p.margin, legacy_version=p.legacy_version,
                               name=_kname(lay.name))
    if t == "SmoothL1Loss":
        return SmoothL1Loss(sigma=lay.param("smooth_l1_loss_param").sigma,
                            name=_kname(lay.name))
    if t == "Accuracy":
        p = lay.param("accuracy_param")
        return Accuracy(top_k=p.top_k, axis=p.axis,
                        ignore_label=p.ignore_label if p.has("ignore_label") else None,
                        name=_kname(lay.name))
    raise UnsupportedLayerError(f"loss layer type {t} is not supported for training "
                                f"(supported: {', '.join(LOSS_TYPES)}, Accuracy)",
                                path=path, layer=lay.name)


def _beside(name, path):
    if os.path.isabs(name) or os.path.exists(name):
        return name
    return os.path.join(os.path.dirname(os.path.abspath(path)), name)


def _kname(name):
    from ..emit.plan import keras_name
    return keras_name(name)


def convert_for_training(solver, caffemodel=None, input_shapes=None, seed=None,
                         compile=True):
    """A solver.prototxt (path or Solver) and its train net as a compiled Keras model.

    caffemodel:   initial weights (``caffe train --weights``); None draws them from the
                  prototxt's fillers (numpy ``seed``).
    input_shapes: {blob: NCHW shape} for blobs whose shape the prototxt does not hold
                  (tops of Data layers: images and labels).

    Inputs: a dict keyed by blob name holding every blob the net reads, labels too
    (4-D NHWC). Outputs: the loss and accuracy tops (scalars) and the blobs they read.
    ``model.train_on_batch(inputs)`` does one Caffe iteration (with iter_size n, n calls
    make one) and returns the loss as Caffe reports it (sum of loss_weight x loss before
    the update, no weight decay; with iter_size n, the mean over the iteration's calls so
    far: the n-th call returns Caffe's iteration loss), followed by the accuracies if
    there are any.
    """
    if not isinstance(solver, Solver):
        solver = load_solver(solver)
    net = solver.train_net(input_shapes)
    model, multipliers = _training_model(net, caffemodel, input_shapes, seed)
    if compile:
        model.compile(optimizer=make_optimizer(solver, multipliers))
    model.caffe_solver = solver
    return model


def convert_for_testing(solver, caffemodel=None, input_shapes=None, index=0):
    """The solver's test net ``index`` (``test_net``, or the net in TEST phase with
    ``test_state``) as a model whose outputs include its loss and accuracy tops (run it
    with ``training=False``: BatchNorm uses the stored statistics, as Caffe's test)."""
    if not isinstance(solver, Solver):
        solver = load_solver(solver)
    net = solver.test_net(index, input_shapes)
    model, _ = _training_model(net, caffemodel, input_shapes, None, need_loss=False)
    return model


def _training_model(net, caffemodel, input_shapes, seed, need_loss=True):
    from ..emit.builder import build_model
    from ..emit.plan import FUSED_BN_SCALE, make_plan
    from ..layout import keras_shape

    path = net.path
    losses = [lay for lay in net.held_out if not is_data_layer(lay)
              and (lay.type.endswith("Loss") or lay.type == "Accuracy")]
    others = [lay for lay in net.held_out if not is_data_layer(lay) and lay not in losses
              and lay.type not in ("Silence",)]
    if others:
        raise UnsupportedLayerError(
            "training-only layers not supported for training: " + "; ".join(
                f"{lay.name} ({lay.type})" for lay in others), path=path)
    _refuse_what_would_train_wrong(net, path)
    if need_loss and not any(lay.type != "Accuracy" for lay in losses):
        raise CaffeFormatError("the train net has no loss layer; nothing to train", path=path)
    weights = load_caffemodel(caffemodel) if caffemodel is not None else None
    graph = build_graph(net)
    if weights is not None:
        weights = _with_fresh_layers(graph, weights, np.random.default_rng(seed))
        attach_weights(graph, weights)
    bn_state = {}
    for node in graph.nodes:
        if node.type == "BatchNorm":
            p = node.layer.param("batch_norm_param")
            factor = 0.0
            if weights is not None and len(node.layer.blobs) >= 3:
                factor = float(np.asarray(node.layer.blobs[2]).reshape(-1)[0])
            bn_state[node.name] = (factor, p.use_global_stats if p.has("use_global_stats")
                                   else False)
    produced = set(graph.versions) - {graph.values[v].blob for v in graph.inputs}
    needed = []
    for lay in losses:
        for b in lay.bottoms:
            if b in produced and b not in needed:
                needed.append(b)
    base = build_model(graph, outputs=needed, with_weights=weights is not None,
                       fill_fresh=True, seed=seed, name=net.name or "caffe_train")
    plan = make_plan(graph, {graph.final(b) for b in needed})
    by_step = {}
    for step in plan:
        if step.type in ("BatchNorm", FUSED_BN_SCALE):
            by_step[step.name] = step

    def swap_batch_norm(layer):
        if not isinstance(layer, keras.layers.BatchNormalization):
            return layer
        step = by_step[layer.name]
        factor, global_stats = bn_state[step.node.name]
        new = CaffeBatchNorm(axis=layer.axis, epsilon=layer.epsilon,
                             moving_average_fraction=layer.momentum, center=layer.center,
                             scale=layer.scale, use_global_stats=global_stats,
                             name=layer.name)
        old = layer.get_weights()
        if factor == 0:  # Caffe's start: statistics 0 and an empty average
            old[-2:] = [np.zeros_like(old[-2]), np.zeros_like(old[-1])]
        new._caffe_start = old + [np.float32(factor)]
        return new

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        clone = keras.models.clone_model(base, clone_function=swap_batch_norm)
    for layer in clone.layers:
        start = getattr(layer, "_caffe_start", None)
        if start is not None:
            layer.set_weights(start)
            del layer._caffe_start
    multipliers, frozen = _set_multipliers(clone, plan, path)

    tensors = dict(clone.input)
    outputs = dict(clone.output)
    for lay in losses:
        for b in lay.bottoms:
            if b in tensors or b in outputs:
                continue
            shape = (input_shapes or {}).get(b)
            if shape is None:
                raise CaffeFormatError(
                    f"blob '{b}' (read by {lay.type} layer '{lay.name}') comes from a data "
                    f"layer whose shape the prototxt does not give; pass input_shapes="
                    f"{{'{b}': (N, ...)}}", path=path, layer=lay.name)
            tensors[b] = keras.Input(shape=keras_shape(tuple(shape))[1:], name=_kname(b))
    loss_weights, accuracies = {}, []
    for lay in losses:
        if len(lay.tops) != 1:
            raise CaffeFormatError(f"{lay.type} with {len(lay.tops)} tops is not supported "
                                   f"for training (one top: the loss)", path=path,
                                   layer=lay.name)
        args = [outputs[b] if b in outputs else tensors[b] for b in lay.bottoms]
        outputs[lay.tops[0]] = _loss_layer(lay, path)(args)
        if lay.type == "Accuracy":
            accuracies.append(lay.tops[0])
        else:
            loss_weights[lay.tops[0]] = _loss_weight(lay)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        model = CaffeTrainingModel(tensors, outputs, loss_weights=loss_weights,
                                   accuracies=accuracies, frozen=frozen, name=clone.name)
    return model, multipliers


def _refuse_what_would_train_wrong(net, path):
    """Losses on ordinary layers are not built: say so, rather than train something
    else. Shared parameters are checked here too (sharing.py says what is built)."""
    from ..sharing import shared_owners

    for lay in net.layers:
        if any(lay.params.loss_weight):
            raise UnsupportedLayerError(
                f"loss_weight on a {lay.type} layer (a loss from an ordinary layer's top) is "
                f"not supported for training", path=path, layer=lay.name)
    shared_owners(net.layers, path)


class _Blob:
    """A fresh blob dressed as a caffemodel one (for graph.attach_weights)."""

    legacy = False

    def __init__(self, array):
        self._array = array
        self.shape = tuple(array.shape)

    def array(self, shape=None):
        return self._array if shape is None else self._array.reshape(shape)


class _Entry:
    def __init__(self, name, blobs):
        self.name = name
        self.blobs = [_Blob(b) for b in blobs]
        self.pool_field13 = None


class _WithFresh:
    """A caffemodel plus fresh blobs for the layers it lacks: as `caffe train --weights`,
    a layer the weights file does not name keeps its filler's values (a new head)."""

    def __init__(self, weights, fresh):
        self.path = weights.path
        self.all_layers = weights.all_layers
        self.layers = {**weights.layers, **fresh}


def _with_fresh_layers(graph, weights, rng):
    from ..fillers import fresh_blobs

    fresh = {}
    for node in graph.nodes:
        if node.param_shapes and node.name not in weights.layers:
            if node.type == "BatchNorm":  # Caffe's start: empty sums, factor 0
                blobs = [np.zeros(s, np.float32) for s in node.param_shapes]
            else:
                blobs = fresh_blobs(node.layer, node.param_shapes, rng)
            if blobs is None:
                continue  # let attach_weights name it
            fresh[node.name] = _Entry(node.name, blobs)
    if not fresh:
        return weights
    warnings.warn(f"{weights.path} has no weights for {', '.join(fresh)}: they start from "
                  f"their fillers, as in caffe train --weights", CaffeWarning, stacklevel=3)
    return _WithFresh(weights, fresh)


def _set_multipliers(model, plan, path):
    """Per-variable (lr_mult, decay_mult) from the Caffe layers' param specs; variables
    with lr_mult 0 become non-trainable, as Caffe computes no diff for them."""
    from ..emit.plan import FUSED_BN_SCALE

    names = {layer.name for layer in model.layers}
    out, frozen = {}, []
    for step in plan:
        if step.name not in names:
            continue
        layer = model.get_layer(step.name)
        if step.type == FUSED_BN_SCALE:
            node = step.nodes[1]
        elif step.type == "BatchNorm":
            continue  # statistics: never optimized (BVLC masks their lr to 0)
        else:
            node = step.node
        owner = node.layer
        if not _layer_mults(owner):
            continue
        trainable = list(layer.trainable_weights)
        if len(trainable) != len(node.param_shapes or trainable):
            raise CaffeFormatError(
                f"cannot match the {len(trainable)} Keras weights of '{layer.name}' to the "
                f"Caffe layer's parameters for lr_mult/decay_mult", path=path,
                layer=owner.name)
        for i, var in enumerate(trainable):
            lr, decay = _mults_of(owner, i)
            if lr == 0:
                var.trainable = False
                frozen.append(var.path)
            else:
                out[var.path] = (lr, decay)
    return out, frozen


def make_optimizer(solver, multipliers=None) -> CaffeSolver:
    """The Keras optimizer of a Solver: its type, schedule, momentum, decay and clip."""
    p = solver.params
    schedule = CaffeLearningRate(p.lr_policy, p.base_lr, gamma=p.gamma, power=p.power,
                                 stepsize=p.stepsize, stepvalue=list(p.stepvalue),
                                 max_iter=p.max_iter, iter_size=p.iter_size)
    return CaffeSolver(solver.type, schedule, momentum=p.momentum, momentum2=p.momentum2,
                       delta=p.delta, rms_decay=p.rms_decay, weight_decay=p.weight_decay,
                       regularization_type=p.regularization_type,
                       clip_gradients=p.clip_gradients, iter_size=p.iter_size,
                       multipliers=multipliers)
