"""Caffe's solvers as one Keras optimizer, and its learning-rate policies as a schedule.

Follows BVLC Caffe's src/caffe/solvers/*.cpp (SGDSolver::ApplyUpdate): the rate of
iteration ``iter`` from the lr policy; gradients clipped to ``clip_gradients`` by their
global L2 norm; divided by ``iter_size``; weight decay ADDED TO THE GRADIENT
(``weight_decay * decay_mult * w`` for L2, ``* sign(w)`` for L1: coupled, unlike
Keras's decoupled ``weight_decay``); then each solver's update with the parameter's
rate ``rate * lr_mult``. Parameters with lr_mult 0 are frozen (non-trainable in Keras).
"""
from __future__ import annotations

import keras
from keras import ops

from ..keras_compat import optimizer_variable_index

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


@keras.saving.register_keras_serializable(package="caffe2keras")
class CaffeLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """SGDSolver::GetLearningRate. ``step`` counts Keras optimizer calls; with
    ``iter_size`` > 1 each Caffe iteration is ``iter_size`` of them."""

    def __init__(self, policy, base_lr, gamma=0.0, power=0.0, stepsize=0, stepvalue=(),
                 max_iter=0, iter_size=1):
        if policy not in LR_POLICIES:
            raise ValueError(f"unknown lr_policy {policy!r}; Caffe knows "
                             f"{', '.join(LR_POLICIES)}")
        self.policy = policy
        self.base_lr = float(base_lr)
        self.gamma = float(gamma)
        self.power = float(power)
        self.stepsize = int(stepsize)
        self.stepvalue = [int(v) for v in stepvalue]
        self.max_iter = int(max_iter)
        self.iter_size = int(iter_size)

    def __call__(self, step):
        it = ops.cast(ops.floor_divide(ops.cast(step, "int32"), self.iter_size), "float32")
        base = self.base_lr
        if self.policy == "fixed":
            return ops.convert_to_tensor(base, "float32")
        if self.policy == "step":
            return base * ops.power(self.gamma, ops.floor(it / self.stepsize))
        if self.policy == "exp":
            return base * ops.power(self.gamma, it)
        if self.policy == "inv":
            return base * ops.power(1.0 + self.gamma * it, -self.power)
        if self.policy == "multistep":
            passed = ops.convert_to_tensor(0.0)
            for v in self.stepvalue:
                passed = passed + ops.cast(it >= v, "float32")
            return base * ops.power(self.gamma, passed)
        if self.policy == "poly":
            return base * ops.power(1.0 - it / self.max_iter, self.power)
        return base / (1.0 + ops.exp(-self.gamma * (it - self.stepsize)))

    def get_config(self):
        return {"policy": self.policy, "base_lr": self.base_lr, "gamma": self.gamma,
                "power": self.power, "stepsize": self.stepsize, "stepvalue": self.stepvalue,
                "max_iter": self.max_iter, "iter_size": self.iter_size}


@keras.saving.register_keras_serializable(package="caffe2keras")
class CaffeSolver(keras.optimizers.Optimizer):
    """Caffe's SGD, Nesterov, AdaGrad, RMSProp, AdaDelta and Adam solvers.

    multipliers: {variable path: (lr_mult, decay_mult)}; variables not named use (1, 1).
    momentum is Adam's beta1 and AdaDelta's decay, momentum2 Adam's beta2, delta the
    epsilon of the adaptive solvers (Caffe's names).
    """

    def __init__(self, solver_type="SGD", learning_rate=0.01, momentum=0.0, momentum2=0.999,
                 delta=1e-8, rms_decay=0.99, weight_decay=0.0, regularization_type="L2",
                 clip_gradients=-1.0, iter_size=1, multipliers=None, name="caffe_solver",
                 **kwargs):
        if solver_type not in SOLVER_TYPES:
            raise ValueError(f"unknown solver type {solver_type!r}; Caffe has "
                             f"{', '.join(SOLVER_TYPES)}")
        if regularization_type not in ("L1", "L2"):
            raise ValueError(f"regularization_type must be L1 or L2, got "
                             f"{regularization_type!r}")
        iter_size = int(iter_size)
        for k in ("weight_decay", "global_clipnorm", "gradient_accumulation_steps"):
            kwargs.pop(k, None)
        # Caffe clips the diffs summed over iter_size, then divides; Keras averages
        # first, so the same clip is threshold / iter_size on the average.
        clip = float(clip_gradients)
        super().__init__(
            learning_rate=learning_rate, name=name,
            global_clipnorm=clip / iter_size if clip >= 0 else None,
            gradient_accumulation_steps=iter_size if iter_size > 1 else None, **kwargs)
        self.solver_type = solver_type
        self.momentum = float(momentum)
        self.momentum2 = float(momentum2)
        self.delta = float(delta)
        self.rms_decay = float(rms_decay)
        self.caffe_weight_decay = float(weight_decay)
        self.regularization_type = regularization_type
        self.clip_gradients = clip
        self.iter_size = iter_size
        self.multipliers = {str(k): (float(v[0]), float(v[1]))
                            for k, v in (multipliers or {}).items()}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._mults = [self.multipliers.get(v.path, (1.0, 1.0)) for v in var_list]
        self._history = [self.add_variable_from_reference(v, "history") for v in var_list]
        if self.solver_type in ("AdaDelta", "Adam"):
            self._history2 = [self.add_variable_from_reference(v, "history2")
                              for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        i = optimizer_variable_index(self, variable)
        lr_mult, decay_mult = self._mults[i]
        dtype = variable.dtype
        g = ops.cast(gradient, dtype)
        local_decay = self.caffe_weight_decay * decay_mult
        if local_decay:
            w = variable if self.regularization_type == "L2" else ops.sign(variable)
            g = g + local_decay * w
        rate = ops.cast(learning_rate, dtype) * lr_mult
        h = self._history[i]
        t = self.solver_type
        # new values are computed before assigning: no read-after-assign
        if t == "SGD":
            new = rate * g + self.momentum * h
            step = new
        elif t == "Nesterov":
            new = rate * g + self.momentum * h
            step = (1.0 + self.momentum) * new - self.momentum * h
        elif t == "AdaGrad":
            new = h + g * g
            step = rate * (g / (ops.sqrt(new) + self.delta))
        elif t == "RMSProp":
            new = (1.0 - self.rms_decay) * (g * g) + self.rms_decay * h
            step = rate * (g / (ops.sqrt(new) + self.delta))
        elif t == "AdaDelta":
            h2 = self._history2[i]
            new = (1.0 - self.momentum) * (g * g) + self.momentum * h
            update = g * ops.sqrt((h2 + self.delta) / (new + self.delta))
            self.assign(h2, (1.0 - self.momentum) * (update * update) + self.momentum * h2)
            step = rate * update
        else:  # Adam
            h2 = self._history2[i]
            b1, b2 = self.momentum, self.momentum2
            n = ops.cast(self.iterations + 1, dtype)
            correction = ops.sqrt(1.0 - ops.power(b2, n)) / (1.0 - ops.power(b1, n))
            new = (1.0 - b1) * g + b1 * h
            v = (1.0 - b2) * (g * g) + b2 * h2
            self.assign(h2, v)
            step = (rate * correction) * (new / (ops.sqrt(v) + self.delta))
        self.assign(h, new)
        self.assign_sub(variable, step)

    def get_config(self):
        config = super().get_config()
        for k in ("weight_decay", "global_clipnorm", "gradient_accumulation_steps"):
            config.pop(k, None)
        config.update({
            "solver_type": self.solver_type, "momentum": self.momentum,
            "momentum2": self.momentum2, "delta": self.delta, "rms_decay": self.rms_decay,
            "weight_decay": self.caffe_weight_decay,
            "regularization_type": self.regularization_type,
            "clip_gradients": self.clip_gradients, "iter_size": self.iter_size,
            "multipliers": {k: list(v) for k, v in self.multipliers.items()}})
        return config
