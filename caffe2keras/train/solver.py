"""solver.prototxt: read, checked, and the train net it names. No Keras here."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import CaffeFormatError
from ..files import read_text
from ..net import Net, _build_net, _unknown_fields, _warn_unknown, load_net
from ..proto.message import Message
from ..proto.text import parse_text

# V1 files name the solver with the solver_type enum; newer ones with the type string.
_V1_SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                    "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}
SOLVER_TYPES = tuple(_V1_SOLVER_TYPES.values())
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


@dataclass
class Solver:
    params: Message       # the SolverParameter
    path: str
    type: str             # "SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta" or "Adam"
    net_path: str | None  # the train net's file (None: inline in the solver)

    def __getattr__(self, name):
        return getattr(self.params, name)

    def train_net(self, input_shapes=None) -> Net:
        """The net in TRAIN phase with the solver's train_state (level, stages)."""
        state = self.params.train_state
        level, stages = state.level, tuple(state.stage)
        if self.net_path is not None:
            return load_net(self.net_path, input_shapes=input_shapes, phase="TRAIN",
                            level=level, stages=stages)
        proto = self.params.train_net_param if self.params.has("train_net_param") \
            else self.params.net_param
        unknown = _unknown_fields(proto, "net", [], skip=("layer", "layers"))
        try:
            return _build_net(proto, unknown, self.path, input_shapes, "TRAIN", level, stages)
        finally:
            _warn_unknown(unknown, self.path)


    def test_net(self, index=0, input_shapes=None) -> Net:
        """Test net ``index`` in TEST phase: test_net[index] or test_net_param[index],
        else the solver's net with test_state[index] (as Caffe's Solver::InitTestNets)."""
        p = self.params
        states = p.test_state
        state = states[index] if index < len(states) else None
        level = state.level if state is not None else 0
        stages = tuple(state.stage) if state is not None else ()
        if p.test_net or p.test_net_param:
            files, inline = list(p.test_net), list(p.test_net_param)
            if index < len(inline):
                proto = inline[index]
            elif index - len(inline) < len(files):
                return load_net(_resolve(files[index - len(inline)], self.path),
                                input_shapes=input_shapes, phase="TEST", level=level,
                                stages=stages)
            else:
                raise IndexError(f"the solver has {len(files) + len(inline)} test nets")
        elif self.net_path is not None:
            return load_net(self.net_path, input_shapes=input_shapes, phase="TEST",
                            level=level, stages=stages)
        else:
            proto = p.net_param
        unknown = _unknown_fields(proto, "net", [], skip=("layer", "layers"))
        try:
            return _build_net(proto, unknown, self.path, input_shapes, "TEST", level, stages)
        finally:
            _warn_unknown(unknown, self.path)

    @property
    def test_net_path(self):
        """The file of test net 0 (None: inline)."""
        p = self.params
        if p.test_net_param:
            return None
        if p.test_net:
            return _resolve(p.test_net[0], self.path)
        return self.net_path


def _fail(msg, path, position=None):
    raise CaffeFormatError(msg, path=path, position=position)


def _resolve(name, solver_path):
    """A net file named in a solver: relative to the solver's folder, then to the
    working directory (where `caffe train` looks)."""
    if os.path.isabs(name):
        return name
    beside = os.path.join(os.path.dirname(os.path.abspath(solver_path)), name)
    return beside if os.path.exists(beside) or not os.path.exists(name) else name


def parse_solver(text, path="<string>") -> Solver:
    p = parse_text(text, "SolverParameter", path=path)
    found = _unknown_fields(p, "solver", [], skip=("net_param", "train_net_param",
                                                   "test_net_param"))
    _warn_unknown(found, path)
    sources = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.has(f)]
    if len(sources) != 1:
        _fail("needs exactly one of net, net_param, train_net, train_net_param to say the "
              f"train net; found {', '.join(sources) or 'none'}", path)
    net_path = None
    if sources[0] in ("net", "train_net"):
        net_path = _resolve(getattr(p, sources[0]), path)
    if p.has("type"):
        type_ = p.type
        # Caffe's registry also takes the lowercase forms of older files
        by_lower = {t.lower(): t for t in SOLVER_TYPES}
        if type_.lower() not in by_lower:
            _fail(f"unknown solver type '{type_}'; Caffe has {', '.join(SOLVER_TYPES)}", path)
        type_ = by_lower[type_.lower()]
    else:
        type_ = _V1_SOLVER_TYPES[p.solver_type]
    if not p.has("base_lr"):
        _fail("base_lr is not set", path)
    policy = p.lr_policy
    if policy not in LR_POLICIES:
        _fail(f"unknown lr_policy '{policy}'; Caffe knows {', '.join(LR_POLICIES)}", path)
    needs = {"step": ("gamma", "stepsize"), "exp": ("gamma",), "inv": ("gamma", "power"),
             "multistep": ("gamma", "stepvalue"), "poly": ("power", "max_iter"),
             "sigmoid": ("gamma", "stepsize")}.get(policy, ())
    missing = [f for f in needs if not p.has(f)]
    if missing:
        _fail(f"lr_policy '{policy}' needs {', '.join(missing)}", path)
    if policy == "step" and p.stepsize <= 0:
        _fail(f"stepsize must be positive, found {p.stepsize}", path)
    if policy == "poly" and p.max_iter <= 0:
        _fail(f"lr_policy 'poly' needs a positive max_iter, found {p.max_iter}", path)
    if list(p.stepvalue) != sorted(p.stepvalue):
        _fail(f"stepvalue must increase, found {list(p.stepvalue)}", path)
    if p.iter_size < 1:
        _fail(f"iter_size must be at least 1, found {p.iter_size}", path)
    if p.regularization_type not in ("L1", "L2"):
        _fail(f"unknown regularization_type '{p.regularization_type}' (L1 or L2)", path)
    if len(p.test_iter) not in (0, 1) and not (p.test_net or p.test_net_param):
        _fail(f"{len(p.test_iter)} test_iter values for one test net", path)
    return Solver(p, str(path), type_, net_path)


def load_solver(path) -> Solver:
    """Read a solver.prototxt."""
    return parse_solver(read_text(path), path)
