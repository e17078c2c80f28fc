"""A Caffe net as a list of layers: prototxt (V1 or V2) read, upgraded and phase-filtered.

This is the first stage: text -> ``Net``. Shapes and weights are attached by graph.py.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from .errors import CaffeFormatError, CaffeWarning
from .files import read_text
from .proto.message import Message
from .proto.schema import MESSAGES, v1_type_name
from .proto.text import parse_text

# Layers that only make sense while training; dropped from a train_val prototxt.
TRAINING_TYPES = {
    "Accuracy", "Silence", "DetectionEvaluate", "HDF5Output",
}
DATA_TYPES = {
    "Data", "ImageData", "HDF5Data", "WindowData", "AnnotatedData", "MemoryData",
    "VideoData", "Python", "DenseImageData",
}


MAX_AXES = 32           # Caffe's kMaxBlobAxes
MAX_COUNT = 2**31 - 1   # Caffe's limit on the values in one blob (INT_MAX)


def python_layer_type(python_param=None, *, module=None, layer=None) -> str:
    """The type a Python layer gets here: ``Python:MODULE.LAYER`` from its python_param
    (plain ``Python`` without one), so that converters are registered per Python class."""
    if python_param is not None:
        module, layer = python_param.module, python_param.layer
    if not module and not layer:
        return "Python"
    return f"Python:{module}.{layer}"


def is_training_type(layer_type: str) -> bool:
    return layer_type in TRAINING_TYPES or layer_type.endswith("Loss")


def is_data_layer(layer) -> bool:
    """A layer that reads its data at run time (a database, files, Python code). A Python
    layer with bottoms computes something instead, and is kept."""
    return layer.type in DATA_TYPES and not (layer.type == "Python" and layer.bottoms)


@dataclass
class Layer:
    """One Caffe layer. ``params`` is its LayerParameter (or V1LayerParameter) message:
    read type-specific settings as ``layer.params.convolution_param.kernel_size``."""

    name: str
    type: str
    bottoms: list
    tops: list
    params: Message
    position: str = ""                            # line:col in the prototxt
    blobs: list = field(default_factory=list)     # numpy arrays, Caffe layout
    lr_mults: list = field(default_factory=list)  # per blob; 0 means frozen in Caffe
    # 1 for the first layer of its name in the net, k for the k-th: Caffe accepts repeated
    # names and gives a caffemodel's weights only to the first (see graph.attach_weights)
    occurrence: int = 1

    def param(self, name):
        """The layer's ``name`` message (e.g. 'pooling_param'), defaults if unset (also
        for params that V1 layers could not hold)."""
        if name in self.params._mtype.by_name:
            return getattr(self.params, name)
        return Message(MESSAGES["LayerParameter"].by_name[name].type)

    def has_param(self, name) -> bool:
        return name in self.params._mtype.by_name and self.params.has(name)

    def __repr__(self):
        return f"Layer({self.name!r}, {self.type!r}, {self.bottoms} -> {self.tops})"


@dataclass
class Net:
    name: str
    inputs: dict          # blob name -> Caffe (NCHW) shape tuple, in declaration order
    layers: list          # [Layer], in prototxt order, inputs excluded
    path: str = ""
    format: str = "V2"    # "V1" when the prototxt used deprecated `layers {}` entries
    dropped: list = field(default_factory=list)  # (layer name, type, why) left out
    excluded: list = field(default_factory=list)  # (name, type, tops) the phase filtered out
    state: str = "phase TEST"
    layer_names: list = field(default_factory=list)  # every layer's name, as Caffe's
    # Net::layer_names_ (inputs, data and training-only layers included), in order

    def duplicate_names(self) -> dict:
        """{name: count} of the layer names used more than once."""
        counts = {}
        for n in self.layer_names:
            counts[n] = counts.get(n, 0) + 1
        return {n: k for n, k in counts.items() if k > 1}
    held_out: list = field(default_factory=list)  # the dropped Layers (training: losses, data)

    def layer(self, name) -> Layer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)


def _shape_of(blob_shape: Message):
    return tuple(int(d) for d in blob_shape.dim)


def _state_meets_rule(rule: Message, phase: str, level: int, stages) -> bool:
    if rule.has("phase") and rule.phase != phase:
        return False
    if rule.has("min_level") and level < rule.min_level:
        return False
    if rule.has("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def _included(params: Message, phase, level, stages, path, name) -> bool:
    """Caffe's NetState filter (Net::FilterNet): with include rules, any must hold; with
    exclude rules, none may. A layer's own ``phase`` field is not a filter: Caffe only
    fills it in from the net when unset."""
    include, exclude = params.include, params.exclude
    if include and exclude:
        raise CaffeFormatError("has both include and exclude rules; Caffe takes one or the "
                               "other", path=path, position=params._pos, layer=name)
    if include:
        return any(_state_meets_rule(r, phase, level, stages) for r in include)
    return not any(_state_meets_rule(r, phase, level, stages) for r in exclude)


MAX_FIELD_WARNINGS = 20  # then one summary: a file full of fork fields is not a flood


def _unknown_fields(msg: Message, where: str, out: list, skip=()):
    """(where, field, message type, position) of every unknown field inside ``msg``
    (fields named in ``skip`` are left for their own call, with a better ``where``)."""
    for name, pos in msg._unknown:
        out.append((where, name, msg._mtype.name, pos))
    for key, value in msg._values.items():
        if key in skip:
            continue
        for v in value if isinstance(value, list) else (value,):
            if isinstance(v, Message):
                _unknown_fields(v, where, out)
    return out


def _warn_unknown(found, path):
    for where, name, mtype, pos in found[:MAX_FIELD_WARNINGS]:
        warnings.warn(f"{path}:{pos}: {where}: unknown field '{name}' in {mtype} ignored",
                      CaffeWarning, stacklevel=3)
    if len(found) > MAX_FIELD_WARNINGS:
        names = sorted({name for _, name, _, _ in found[MAX_FIELD_WARNINGS:]})
        warnings.warn(f"{path}: {len(found) - MAX_FIELD_WARNINGS} more unknown fields "
                      f"ignored ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})",
                      CaffeWarning, stacklevel=3)


def _check_shape(shape, what, path, position=None, layer=None):
    """A declared blob shape Caffe would accept (Blob::Reshape's checks), so that nothing
    later sizes memory by an absurd number."""
    if len(shape) > MAX_AXES:
        raise CaffeFormatError(f"{what} has {len(shape)} axes; Caffe allows at most "
                               f"{MAX_AXES}", path=path, position=position, layer=layer)
    if any(d < 0 for d in shape):
        raise CaffeFormatError(f"{what} has a negative dimension: {list(shape)}",
                               path=path, position=position, layer=layer)
    count = math.prod(shape)
    if count > MAX_COUNT:
        raise CaffeFormatError(f"{what} {list(shape)} holds {count:,} values, more than "
                               f"Caffe's limit of {MAX_COUNT:,} per blob",
                               path=path, position=position, layer=layer)


def _shape_overrides(input_shapes, path):
    out = {}
    for blob, shape in (input_shapes or {}).items():
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise CaffeFormatError(f"input shape for '{blob}' must be a sequence of ints, "
                                   f"found {shape!r}", path=path) from None
        if not dims or any(d <= 0 for d in dims):
            raise CaffeFormatError(f"input shape for '{blob}' needs positive dims, found "
                                   f"{list(dims)}", path=path)
        _check_shape(dims, f"input shape for '{blob}'", path)
        out[str(blob)] = dims
    return out


def parse_net(text: str, path="<string>", input_shapes=None, phase="TEST", level=0,
              stages=()) -> Net:
    """Build a Net from prototxt text. ``input_shapes`` ({blob: NCHW shape}) overrides or
    supplies input shapes (needed for a train_val net whose data come from a database)."""
    proto = parse_text(text, "NetParameter", path=path)
    unknown = _unknown_fields(proto, "net", [], skip=("layer", "layers"))
    try:
        return _build_net(proto, unknown, path, input_shapes, phase, level, stages)
    finally:  # also when the net is malformed: an unknown field may explain why
        _warn_unknown(unknown, path)


def _build_net(proto, unknown, path, input_shapes, phase, level, stages) -> Net:
    if proto.layer and proto.layers:
        raise CaffeFormatError("mixes V2 'layer' and deprecated V1 'layers' entries; "
                               "Caffe reads only one kind per file", path=path)
    fmt = "V1" if proto.layers else "V2"
    overrides = _shape_overrides(input_shapes, path)
    # as Caffe's Net(file, phase, level, stages): the file's stages plus the given ones
    stages = tuple(proto.state.stage) + tuple(s for s in stages if s not in proto.state.stage)
    inputs, where = _declared_inputs(proto, path)
    layers, dropped, data_tops, excluded, held_out = [], [], {}, [], []
    seen, order = {}, []  # layer name -> how many included layers had it so far
    for entry in proto.layers or proto.layer:
        if fmt == "V1":
            if entry.has("layer"):
                raise CaffeFormatError(
                    "V0 layer definitions (pre-2014 'layers { layer { ... } }') are not "
                    "supported; upgrade the file with Caffe's upgrade_net_proto_text",
                    path=path, position=entry._pos)
            type_ = v1_type_name(entry.type) if entry.has("type") else ""
            lr = list(entry.blobs_lr)
        else:
            type_ = entry.type
            lr = [p.lr_mult for p in entry.param]
        name = entry.name
        if not entry.has("name"):
            name = f"{type_ or 'layer'}_{len(layers) + len(dropped)}"
        _unknown_fields(entry, f"layer '{name}'", unknown)
        if not type_:
            raise CaffeFormatError("layer has no type", path=path, position=entry._pos, layer=name)
        if not _included(entry, phase, level, stages, path, name):
            excluded.append((name, type_, list(entry.top)))
            continue
        seen[name] = seen.get(name, 0) + 1
        order.append(name)
        lay = Layer(name, type_, list(entry.bottom), list(entry.top), entry, entry._pos,
                    lr_mults=lr, occurrence=seen[name])
        if is_data_layer(lay) or is_training_type(type_):
            if is_data_layer(lay):
                for top, shape in zip(lay.tops, _data_shapes(lay)):
                    data_tops[top] = (lay, shape)
            dropped.append((name, type_, "data layer" if is_data_layer(lay)
                            else "training-only layer"))
            held_out.append(lay)
            continue
        if type_ == "Python":
            lay.type = python_layer_type(lay.param("python_param"))
        if type_ == "Input":
            shapes = [_shape_of(s) for s in lay.param("input_param").shape]
            for i, top in enumerate(lay.tops):
                where[top] = (lay.position, name)
                if top in overrides:
                    inputs[top] = overrides[top]
                elif len(shapes) == 1:
                    inputs[top] = shapes[0]
                elif i < len(shapes):
                    inputs[top] = shapes[i]
                else:
                    raise CaffeFormatError(
                        f"Input layer has {len(lay.tops)} tops but {len(shapes)} shapes; "
                        f"give one shape, or one per top", path=path, position=lay.position,
                        layer=name)
            continue
        if type_ == "DummyData":
            for top, shape in zip(lay.tops, _dummy_shapes(lay, path)):
                inputs[top] = overrides.get(top, shape)
                where[top] = (lay.position, name)
            continue
        layers.append(lay)
    inputs.update({k: v for k, v in overrides.items() if k in inputs})
    _data_tops_to_inputs(layers, data_tops, inputs, overrides, path)
    for blob, shape in inputs.items():
        if shape is None:
            raise CaffeFormatError(
                f"input '{blob}' is declared without a shape; give it, e.g. --input-shape "
                f"{blob}=1,3,224,224", path=path)
        _check_shape(shape, f"input '{blob}' shape", path, *where.get(blob, (None, None)))
    used = {b for lay in layers for b in lay.bottoms}
    produced = {t for lay in layers for t in lay.tops}
    for blob in overrides:  # a shape for a blob nobody produces makes it an input
        if blob not in inputs and blob in used and blob not in produced:
            inputs[blob] = overrides[blob]
    unused = set(overrides) - set(inputs) - set(data_tops)  # labels: only losses read them
    if unused:
        raise CaffeFormatError(
            f"--input-shape names {sorted(unused)}, which are not inputs of this net "
            f"(inputs: {list(inputs) or 'none'})", path=path)
    return Net(proto.name, inputs, layers, str(path), fmt, dropped, excluded,
               f"phase {phase}" + (f", stages {list(stages)}" if stages else ""),
               order, held_out)


def load_net(path, input_shapes=None, phase="TEST", level=0, stages=()) -> Net:
    """Read a deploy (or train_val) prototxt into a Net."""
    return parse_net(read_text(path), path, input_shapes, phase, level, stages)


def _declared_inputs(proto: Message, path):
    """Net-level inputs: ``input`` with ``input_shape`` or with legacy ``input_dim``.
    Returns ({blob: shape}, {blob: (position, None)})."""
    names = list(proto.input)
    inputs, where = {}, {}
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise CaffeFormatError(f"input '{dup}' is declared twice", path=path)
    if proto.input_shape:
        if len(proto.input_shape) != len(names):
            raise CaffeFormatError(f"{len(names)} 'input' names but {len(proto.input_shape)} "
                                   f"'input_shape' entries; give one shape per input", path=path)
        for n, s in zip(names, proto.input_shape):
            inputs[n] = _shape_of(s)
            where[n] = (s._pos, None)
    elif proto.input_dim:
        dims = [int(d) for d in proto.input_dim]
        if len(dims) != 4 * len(names):
            raise CaffeFormatError(f"{len(names)} 'input' names need {4 * len(names)} "
                                   f"'input_dim' values, found {len(dims)}", path=path)
        for i, n in enumerate(names):
            inputs[n] = tuple(dims[4 * i:4 * i + 4])
    elif names:
        inputs.update({n: None for n in names})
    return inputs, where


def _dummy_shapes(lay: Layer, path):
    p = lay.param("dummy_data_param")
    n = len(lay.tops)
    if p.shape:
        shapes = [_shape_of(s) for s in p.shape]
    else:
        legacy = [p.num, p.channels, p.height, p.width]
        if not all(legacy):
            raise CaffeFormatError("DummyData needs 'shape' or num/channels/height/width",
                                   path=path, position=lay.position, layer=lay.name)
        k = max(len(v) for v in legacy)
        shapes = [tuple(int(v[i if len(v) > 1 else 0]) for v in legacy) for i in range(k)]
    if len(shapes) == 1:
        shapes = shapes * n
    if len(shapes) != n:
        raise CaffeFormatError(f"DummyData has {n} tops but {len(shapes)} shapes",
                               path=path, position=lay.position, layer=lay.name)
    return shapes


def _data_shapes(lay: Layer):
    """Best-effort NCHW shape of each top of a data layer (None where it depends on the
    database). The second top is the label (HDF5Data: tops are datasets)."""
    t = lay.type
    tp = lay.param("transform_param")
    crop = (tp.crop_h or tp.crop_size, tp.crop_w or tp.crop_size)
    shape = None
    if t == "MemoryData":
        p = lay.param("memory_data_param")
        shape = (p.batch_size, p.channels, p.height, p.width)
    elif t == "ImageData":
        p = lay.param("image_data_param")
        hw = crop if crop[0] else (p.new_height, p.new_width)
        if all(hw):
            shape = (p.batch_size, 3 if p.is_color else 1, *hw)
    elif t == "DenseImageData":  # SegNet's: image and label map, as its DataLayerSetUp
        p = lay.param("dense_image_data_param")
        hw = crop if crop[0] else (p.new_height, p.new_width)
        if all(hw):
            n = p.batch_size or 1
            return [(n, 3 if p.is_color else 1, *hw), (n, 1, *hw)]
    return [shape] + [None] * max(1, len(lay.tops) - 1)  # HDF5Data: any number of tops


def _data_tops_to_inputs(layers, data_tops, inputs, overrides, path):
    """A data layer's tops that the kept layers read become net inputs."""
    used = {b for lay in layers for b in lay.bottoms}
    produced = {t for lay in layers for t in lay.tops}
    for top, (lay, shape) in data_tops.items():
        if top not in used or top in produced or top in inputs:
            continue
        if top in overrides:
            inputs[top] = overrides[top]
        elif shape is not None and all(shape):
            inputs[top] = tuple(int(d) for d in shape)
        else:
            raise CaffeFormatError(
                f"blob '{top}' comes from a {lay.type} layer, which reads its data at run "
                f"time, so its shape is not in the prototxt; give it, e.g. --input-shape {top}=1,3,224,224 "
                f"(Python: input_shapes={{'{top}': (1, 3, 224, 224)}})",
                path=path, position=lay.position, layer=lay.name)

