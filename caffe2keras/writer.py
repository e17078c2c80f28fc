"""Writing Caffe files: a deploy prototxt and a binary .caffemodel, from plain Python.

For tests, benchmarks and fixtures (the project never needs Caffe to make them):

    net = CaffeNetWriter("tiny")
    net.input("data", (1, 3, 8, 8))                       # or style="input_dim" / "layer"
    net.layer("conv", "Convolution", "data", "conv",
              convolution_param={"num_output": 4, "kernel_size": 3},
              blobs=[w, b])                                # numpy arrays, Caffe layout
    net.write_prototxt("deploy.prototxt")
    net.write_caffemodel("weights.caffemodel")             # format="V1" / "V0", double=True

Fields are named as in caffe.proto (the table in proto/schema.py) and checked against it,
so a misspelt field fails here rather than in the reader under test. Blob data are never
gathered into one buffer: each array (or any object with ``shape`` and ``__array__``,
materialised only while it is written) goes to the file on its own.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from .files import atomic_output
from .proto.schema import ENUMS, MESSAGES, V1_TYPE_NAMES
from .proto.wire import encode_varint as varint

# Fields caffe.proto declares [packed = true]; other repeated scalars are written unpacked,
# as protobuf (and so Caffe) writes them.
PACKED = {("BlobShape", "dim"), ("BlobProto", "data"), ("BlobProto", "diff"),
          ("BlobProto", "double_data"), ("BlobProto", "double_diff")}
# Fork params whose numbers in schema.py are private to this project: never in a binary.
_PRIVATE_NUMBERS = 1000
_V1_TYPES = {v: k for k, v in V1_TYPE_NAMES.items() if v}
# V0 names of the layer types with weights (Caffe's UpgradeV0LayerType knows no others)
_V0_TYPES = {"Convolution": "conv", "InnerProduct": "innerproduct"}
_VARINT_KINDS = {"int32", "int64", "uint32", "uint64", "bool", "enum"}


class Lazy:
    """A blob made only when written: ``Lazy(shape, make)`` where ``make()`` returns the
    array. Lets a benchmark write a 553 MB file holding one blob in memory at a time."""

    def __init__(self, shape, make):
        self.shape = tuple(int(d) for d in shape)
        self.make = make

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.make())
        if a.shape != self.shape:
            raise ValueError(f"Lazy blob made shape {a.shape}, declared {self.shape}")
        return a if dtype is None else a.astype(dtype, copy=False)


class Hole:
    """A blob of zeros left as a hole in the file (sparse, no disk space, no memory):
    for testing files of several GB."""

    def __init__(self, shape):
        self.shape = tuple(int(d) for d in shape)


def _shape_of(blob):
    return tuple(int(d) for d in np.shape(blob)) if not hasattr(blob, "shape") else \
        tuple(int(d) for d in blob.shape)


class CaffeNetWriter:
    """A net being described: inputs, then layers in order."""

    def __init__(self, name=""):
        self.name = name
        self.inputs = []     # (blob, shape, style)
        self.layers = []     # (name, type, fields dict, blobs list)

    @classmethod
    def from_net(cls, net, weights=None, style="input_shape"):
        """A writer holding an existing ``net.Net`` (``graph.net`` after load_graph, whose
        layers carry their blobs, or a Net plus a ``CaffeModel``), e.g. to rewrite a
        Caffe-made file in another format."""
        w = cls(net.name)
        for blob, shape in net.inputs.items():
            w.input(blob, shape, style)
        skip = {"name", "type", "bottom", "top", "blobs"}
        target = set(MESSAGES["LayerParameter"].by_name) | {"blobs_lr", "weight_decay"}
        for lay in net.layers:
            fields = {k: v for k, v in message_dict(lay.params).items()
                      if k not in skip and k in target}
            blobs = list(lay.blobs)  # set by graph.load_graph: the real param shapes
            if not blobs and weights is not None and lay.name in weights.layers:
                blobs = [b.array() for b in weights.layers[lay.name].blobs]
            w.layer(lay.name, lay.type, lay.bottoms, lay.tops, blobs=blobs, **fields)
        return w

    def input(self, blob, shape, style="input_shape"):
        """Declare a net input. ``style``: "input_shape" (input + input_shape), "input_dim"
        (input + four input_dim values) or "layer" (an Input layer)."""
        if style not in ("input_shape", "input_dim", "layer"):
            raise ValueError(f"unknown input style {style!r}")
        shape = tuple(int(d) for d in shape)
        if style == "input_dim" and len(shape) != 4:
            raise ValueError("input_dim declares exactly 4 dims")
        self.inputs.append((blob, shape, style))
        return self

    def layer(self, name, type, bottom=(), top=(), *, blobs=(), **fields):
        """Add a layer. ``bottom``/``top``: a blob name or a list. ``fields``: any other
        LayerParameter field by its caffe.proto name (``convolution_param={...}``,
        ``include=[{"phase": "TEST"}]``, ``param=[{"lr_mult": 0}]``, V1's ``blobs_lr``...).
        ``blobs``: the layer's parameter blobs in Caffe layout."""
        as_list = (lambda v: [v] if isinstance(v, str) else list(v))
        self.layers.append((name, type, {"bottom": as_list(bottom), "top": as_list(top),
                                         **fields}, list(blobs)))
        return self

    # -- messages ---------------------------------------------------------------------

    def _input_layer_dicts(self, fmt):
        out = []
        for blob, shape, style in self.inputs:
            if style == "layer":
                if fmt != "V2":
                    raise ValueError("V1 files have no Input layer; use style='input_shape' "
                                     "or 'input_dim'")
                out.append(("LayerParameter", {
                    "name": blob, "type": "Input", "top": [blob],
                    "input_param": {"shape": [{"dim": list(shape)}]}}))
        return out

    def _net_fields(self):
        fields = {}
        if self.name:
            fields["name"] = self.name
        declared = [(b, s, st) for b, s, st in self.inputs if st != "layer"]
        if declared:
            fields["input"] = [b for b, _, _ in declared]
        styles = {st for _, _, st in declared}
        if styles == {"input_shape", "input_dim"}:
            raise ValueError("Caffe reads either input_shape or input_dim in one net, not both")
        if "input_shape" in styles:
            fields["input_shape"] = [{"dim": list(s)} for _, s, _ in declared]
        elif "input_dim" in styles:
            fields["input_dim"] = [d for _, s, _ in declared for d in s]
        return fields

    def _layer_dict(self, name, type_, fields, blobs, fmt, blob_opts):
        d = {"name": name}
        fields = dict(fields)
        if fmt == "V2":
            d["type"] = type_
            # V1's per-blob learning settings, upgraded as Caffe's UpgradeV1LayerParameter
            lr, decay = fields.pop("blobs_lr", []), fields.pop("weight_decay", [])
            if (lr or decay) and "param" not in fields:
                fields["param"] = [
                    {**({"lr_mult": lr[i]} if i < len(lr) else {}),
                     **({"decay_mult": decay[i]} if i < len(decay) else {})}
                    for i in range(max(len(lr), len(decay)))]
            d.update(fields)
            type_name = "LayerParameter"
        elif fmt == "V1":
            if isinstance(type_, int):  # a raw enum number, as forks added them
                d["type"] = type_
            elif type_ not in _V1_TYPES:
                raise ValueError(f"layer '{name}': type {type_!r} has no V1 enum value")
            else:
                d["type"] = _V1_TYPES[type_]
            specs = fields.pop("param", [])
            if specs and not any(k in fields for k in ("blobs_lr", "weight_decay")):
                if any(isinstance(p, dict) and set(p) - {"lr_mult", "decay_mult"}
                       for p in specs):
                    raise ValueError(f"layer '{name}': V1 files keep only lr_mult and "
                                     f"decay_mult of a param spec")
                for v1_name, v2_name in (("blobs_lr", "lr_mult"), ("weight_decay", "decay_mult")):
                    if any(v2_name in p for p in specs):
                        fields[v1_name] = [p.get(v2_name, 1.0) for p in specs]
            d.update(fields)
            type_name = "V1LayerParameter"
        else:  # V0 (weights only): the old layer{} inside layers{}, name/type/blobs
            if blobs:
                if type_ not in _V0_TYPES:
                    raise ValueError(f"layer '{name}': V0 files have no {type_!r} type")
                d["type"] = _V0_TYPES[type_]
                d["blobs"] = [_blob_dict(b, **blob_opts) for b in blobs]
            return "V1LayerParameter", {"layer": d}
        if blobs:
            d["blobs"] = [_blob_dict(b, **blob_opts) for b in blobs]
        return type_name, d

    def net_dict(self, fmt="V2", with_blobs=False, legacy_dims=None, double=False):
        """The NetParameter as (field name -> value) with each layer as (type name, dict)."""
        if fmt not in ("V2", "V1", "V0"):
            raise ValueError(f"unknown format {fmt!r}; use 'V2', 'V1' or 'V0'")
        opts = {"legacy": (fmt != "V2") if legacy_dims is None else legacy_dims,
                "double": double}
        layers = self._input_layer_dicts(fmt)
        for name, type_, fields, blobs in self.layers:
            layers.append(self._layer_dict(name, type_, fields, blobs if with_blobs else [],
                                           fmt, opts))
        net = self._net_fields()
        net["layer" if fmt == "V2" else "layers"] = layers
        return net

    # -- output -----------------------------------------------------------------------

    def prototxt(self, fmt="V2") -> str:
        """The deploy prototxt text (``fmt`` "V2": layer { type: "..." }; "V1": layers {
        type: ENUM })."""
        if fmt == "V0":
            raise ValueError("V0 prototxts are not written; use 'V2' or 'V1'")
        return "".join(_text("NetParameter", self.net_dict(fmt), 0))

    def write_prototxt(self, path, fmt="V2"):
        text = self.prototxt(fmt)
        with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def write_caffemodel(self, path, fmt="V2", legacy_dims=None, double=False,
                         params=True):
        """Write the weights file. ``fmt`` "V2" (layer entries), "V1" (layers entries) or
        "V0" (V0 layers inside V1 entries, as 2014 files hold). ``legacy_dims``: blob shapes
        as num/channels/height/width (default for V1/V0). ``double``: store double_data.
        ``params``: also store each layer's settings, as Caffe's Net::ToProto does."""
        net = self.net_dict(fmt, with_blobs=True, legacy_dims=legacy_dims, double=double)
        if not params:
            keep = {"name", "type", "bottom", "top", "blobs", "layer"}
            net["layer" if fmt == "V2" else "layers"] = [
                (t, {k: v for k, v in d.items() if k in keep})
                for t, d in net["layer" if fmt == "V2" else "layers"]]
        parts, _ = _binary("NetParameter", net)
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            for part in parts:
                _write_part(f, part)
        return path


# -- blobs ----------------------------------------------------------------------------

class _Data:
    """Packed float payload of one blob: written from the array at write time."""

    __slots__ = ("blob", "count", "dtype")

    def __init__(self, blob, dtype, count):
        self.blob, self.dtype, self.count = blob, np.dtype(dtype), count

    @property
    def nbytes(self):
        return self.count * self.dtype.itemsize


def _blob_dict(blob, legacy=False, double=False):
    shape = _shape_of(blob)
    d = {}
    if legacy:
        if len(shape) > 4:
            raise ValueError(f"a {len(shape)}-D blob has no legacy num/channels/height/width "
                             f"form")
        dims = (1,) * (4 - len(shape)) + shape
        d.update(zip(("num", "channels", "height", "width"), dims))
    elif shape:  # a 0-D blob has no shape field at all, as Caffe's ToProto writes it
        d["shape"] = {"dim": list(shape)}
    d["double_data" if double else "data"] = _Data(blob, "<f8" if double else "<f4",
                                                   math.prod(shape))
    return d


def _write_part(f, part):
    if isinstance(part, _Data) and isinstance(part.blob, Hole):
        f.seek(part.nbytes, 1)
        f.truncate()  # extends the file, sparsely, in case nothing follows
    elif isinstance(part, _Data):
        arr = np.asarray(part.blob)
        flat = np.ascontiguousarray(arr, dtype=part.dtype).reshape(-1)
        if flat.size != part.count:
            raise ValueError(f"blob has {flat.size} values, declared {part.count}")
        # memoryview in chunks: no copy of the array, bounded buffer in the OS call
        mv = memoryview(flat).cast("B")
        step = 64 << 20
        for i in range(0, len(mv), step):
            f.write(mv[i:i + step])
    else:
        f.write(part)


# -- protobuf binary --------------------------------------------------------------------



def _tag(number, wire):
    return varint(number << 3 | wire)


def _field(mtype, name):
    f = mtype.by_name.get(name)
    if f is None:
        raise ValueError(f"{mtype.name} has no field {name!r} (see proto/schema.py)")
    return f


def _as_values(f, value):
    """The values of field ``f``: a repeated field may be given one value or a sequence."""
    if not f.repeated or isinstance(value, _Data):
        return [value]
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return [value]


def _scalar_bytes(f, v) -> bytes:
    kind = f.kind
    if kind == "enum":
        if isinstance(v, str):
            if v not in ENUMS[f.type]:
                raise ValueError(f"{f.name}: {v!r} is not one of {list(ENUMS[f.type])}")
            v = ENUMS[f.type][v]
        return varint(int(v))
    if kind == "bool":
        return varint(1 if v else 0)
    if kind in _VARINT_KINDS:
        return varint(int(v))
    if kind == "float":
        return struct.pack("<f", v)
    if kind == "double":
        return struct.pack("<d", v)
    raw = v.encode("utf-8") if isinstance(v, str) else bytes(v)
    return varint(len(raw)) + raw


def _wire(f):
    kind = f.kind
    if kind in _VARINT_KINDS:
        return 0
    return {"float": 5, "double": 1}.get(kind, 2)


def _binary(type_name, d):
    """(parts, size): the message as byte strings and _Data payloads, and its length."""
    mtype = MESSAGES[type_name]
    parts, size = [], 0
    for name, value in d.items():
        f = _field(mtype, name)
        if f.number >= _PRIVATE_NUMBERS and mtype.name == "LayerParameter":
            continue  # fork params: no agreed field number, text files only
        values = _as_values(f, value)
        if not f.repeated and isinstance(value, (list, tuple)):
            raise ValueError(f"{type_name}.{name} is not repeated; give one value")
        if isinstance(value, _Data):
            data = value
            head = _tag(f.number, 2) + varint(data.nbytes)
            parts += [head, data]
            size += len(head) + data.nbytes
            continue
        if f.kind == "message":
            for v in values:
                sub_type, sub = v if isinstance(v, tuple) else (f.type, v)
                sub_parts, sub_size = _binary(sub_type, sub)
                head = _tag(f.number, 2) + varint(sub_size)
                parts.append(head)
                parts += sub_parts
                size += len(head) + sub_size
        elif (type_name, name) in PACKED:
            body = b"".join(_scalar_bytes(f, v) for v in values)
            head = _tag(f.number, 2) + varint(len(body))
            parts += [head, body]
            size += len(head) + len(body)
        else:
            wire = _wire(f)
            for v in values:
                chunk = _tag(f.number, wire) + _scalar_bytes(f, v)
                parts.append(chunk)
                size += len(chunk)
    return parts, size


# -- protobuf text ----------------------------------------------------------------------

def _text_scalar(f, v) -> str:
    kind = f.kind
    if kind == "enum":
        if not isinstance(v, str):
            names = {n: k for k, n in ENUMS[f.type].items()}
            v = names.get(int(v), int(v))
        elif v not in ENUMS[f.type]:
            raise ValueError(f"{f.name}: {v!r} is not one of {list(ENUMS[f.type])}")
        return str(v)
    if kind == "bool":
        return "true" if v else "false"
    if kind in ("float", "double"):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if kind == "float":  # shortest text that reads back as the same float32
            return repr(float(np.float32(v))) if v == float(np.float32(v)) else repr(v)
        return repr(v)
    if kind in ("string", "bytes"):
        raw = v.encode("utf-8") if isinstance(v, str) else bytes(v)
        return '"' + "".join(_escape(b) for b in raw) + '"'
    return str(int(v))


def _escape(b):
    c = chr(b)
    if c == '"':
        return '\\"'
    if c == "\\":
        return "\\\\"
    if 32 <= b < 127:
        return c
    return {10: "\\n", 13: "\\r", 9: "\\t"}.get(b, f"\\{b:03o}")


def _text(type_name, d, indent):
    mtype = MESSAGES[type_name]
    pad = "  " * indent
    for name, value in d.items():
        f = _field(mtype, name)
        values = _as_values(f, value)
        if isinstance(value, _Data):
            raise TypeError("blob data are not written to a prototxt")
        for v in values:
            if f.kind == "message":
                sub_type, sub = v if isinstance(v, tuple) else (f.type, v)
                yield f"{pad}{name} {{\n"
                yield from _text(sub_type, sub, indent + 1)
                yield f"{pad}}}\n"
            else:
                yield f"{pad}{name}: {_text_scalar(f, v)}\n"


def message_dict(msg) -> dict:
    """A decoded Message as the nested dict the writer takes (enum values by name)."""
    from .proto.message import Message

    def conv(v):
        if isinstance(v, Message):
            return message_dict(v)
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, np.ndarray):
            return [float(x) for x in v]
        return v
    return {k: conv(v) for k, v in msg._values.items() if not k.startswith("field")}


def write_net(path_prototxt, path_caffemodel, net: CaffeNetWriter, fmt="V2", **kw):
    """Both files of ``net``; the prototxt in ``fmt`` (V0 weights get a V1 prototxt)."""
    net.write_prototxt(path_prototxt, "V1" if fmt == "V0" else fmt)
    net.write_caffemodel(path_caffemodel, fmt, **kw)


__all__ = ["CaffeNetWriter", "Hole", "Lazy", "message_dict", "varint", "write_net"]
