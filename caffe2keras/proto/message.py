"""A decoded protobuf message: typed fields with Caffe's defaults, read as attributes."""
from __future__ import annotations

from .schema import ENUMS, MESSAGES, MessageType

_ZERO = {"int32": 0, "int64": 0, "uint32": 0, "uint64": 0, "float": 0.0, "double": 0.0,
         "bool": False, "string": "", "bytes": b""}


class Message:
    """Field values of one message. Unset fields read as their proto2 defaults.

    ``values`` maps field name -> value (a list for repeated fields). ``unknown`` lists
    (field name or number, position) of fields the schema does not know, so that the
    caller can warn with context (layer name, file) instead of the parser guessing.
    """

    __slots__ = ("_mtype", "_pos", "_unknown", "_values")

    def __init__(self, type_name: str, position=None):
        self._mtype: MessageType = MESSAGES[type_name]
        self._values: dict = {}
        self._unknown: list = []
        self._pos = position  # line:col (text) or byte offset (binary) where it began

    def __getattr__(self, name):
        try:
            f = self._mtype.by_name[name]
        except KeyError:
            raise AttributeError(f"{self._mtype.name} has no field '{name}'") from None
        try:
            return self._values[name]
        except KeyError:
            pass
        if f.repeated:
            return []
        if f.default is not None:
            return f.default
        kind = f.kind
        if kind == "message":
            return Message(f.type)
        if kind == "enum":
            return next(iter(ENUMS[f.type]))
        return _ZERO[kind]

    def has(self, name: str) -> bool:
        return name in self._values

    def set(self, name, value):
        self._values[name] = value

    def add(self, name, value):
        self._values.setdefault(name, []).append(value)

    def get(self, name, default=None):
        return self._values.get(name, default)

    def __repr__(self):
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items() if k != "blobs")
        return f"{self._mtype.name}({inner})"

    def to_dict(self) -> dict:
        """Plain dict of the set fields (nested messages as dicts), for JSON and tests."""
        def conv(v):
            if isinstance(v, Message):
                return v.to_dict()
            if isinstance(v, list):
                return [conv(x) for x in v]
            if hasattr(v, "shape") and hasattr(v, "dtype"):
                return f"<array {tuple(v.shape)} {v.dtype}>"
            return v
        return {k: conv(v) for k, v in self._values.items()}
