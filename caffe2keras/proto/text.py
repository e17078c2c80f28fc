"""Reader for protobuf's text format as Caffe writes it (prototxt).

Hand-written rather than protobuf's text_format: that one needs generated code, stops at
the first field of a fork it was not built with, and reports no layer context. This one
keeps unknown fields (parsed generically) for the caller to warn about, and reports every
error as file:line:column.
"""
from __future__ import annotations

import math
import re

import numpy as np

from ..errors import CaffeFormatError
from .message import Message
from .schema import ENUMS, OPEN_ENUMS

MAX_DEPTH = 100  # protobuf's own default recursion limit

# Each token kind matches in one way only (no nested or adjacent quantifiers that could
# split a run of digits), so a hostile 100k-digit token costs linear time, not quadratic.
# Whitespace and comments before a token are skipped by the same match; anything else is
# "bad" and reported where it stands.
_TOKEN = re.compile(r"""
    (?:[ \t\r\n\f\v]|\#[^\n]*)*
    (?:
      (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)[fF]?(?![\w.]))
    | (?P<ident>[-+]?[A-Za-z_][\w.]*)
    | (?P<punct>[{}<>:;,\[\]])
    | (?P<bad>[^\n][\s\S]*)
    | (?P<end>\Z)
    )""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


class _Tokens:
    def __init__(self, text: str, path):
        self.path = path
        # one regex pass finds every token; lines and columns come from the newline
        # offsets in bulk (the text is read 40k tokens at a time for a ResNet prototxt)
        found = [(m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup))
                 for m in _TOKEN.finditer(text)]
        chars = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        newlines = np.flatnonzero(chars == 10)
        offsets = np.array([f[2] for f in found], np.int64)
        lines = np.searchsorted(newlines, offsets, side="right")
        starts = np.where(lines > 0, newlines[np.maximum(lines - 1, 0)] + 1, 0) \
            if newlines.size else np.zeros_like(lines)
        cols = offsets - starts + 1
        lines += 1
        self.toks = list(zip((f[0] for f in found), (f[1] for f in found), lines.tolist(),
                             cols.tolist()))  # (kind, text, line, col)
        self.end_pos = (int(lines[-1]), int(cols[-1])) if found else (1, 1)
        while self.toks and self.toks[-1][0] == "end":
            self.end_pos = self.toks.pop()[2:]
        if self.toks and self.toks[-1][0] == "bad":  # it swallowed the rest: stop there
            _, tok, line, col = self.toks[-1]
            raise self.error(f"unexpected character {tok[0]!r}", line, col)
        self.i = 0

    def error(self, msg, line, col):
        return CaffeFormatError(msg, path=self.path, position=f"{line}:{col}")

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self, what):
        tok = self.peek()
        if tok is None:
            raise self.error(f"unexpected end of file, expected {what}", *self.end_pos)
        self.i += 1
        return tok

    def expect(self, text):
        tok = self.next(repr(text))
        if tok[1] != text:
            raise self.error(f"expected {text!r}, found {_clip(tok[1])}", tok[2], tok[3])
        return tok


def _unescape(tok, toks):
    body = tok[1][1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(chr(int(m.group(), 8)))
            i += 1 + len(m.group())
        elif e in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if not m:
                raise toks.error("bad \\x escape in string", tok[2], tok[3])
            out.append(chr(int(m.group(), 16)))
            i += 2 + len(m.group())
        else:
            raise toks.error(f"unknown escape '\\{e}' in string", tok[2], tok[3])
    return "".join(out)


_FLOAT_WORDS = {"inf": math.inf, "infinity": math.inf, "-inf": -math.inf,
                "-infinity": -math.inf, "nan": math.nan, "-nan": math.nan}
_INT_LIMITS = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1),
               "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1)}


def _scalar(field, tok, toks, type_name):
    kind, text, line, col = tok
    ftype = field.type
    fkind = field.kind
    where = f"'{field.name}' ({type_name})"
    if fkind == "string" or fkind == "bytes":
        if kind != "string":
            raise toks.error(f"expected a quoted string for {where}, found {_clip(text)}", line, col)
        parts = [_unescape(tok, toks)]
        while (nxt := toks.peek()) is not None and nxt[0] == "string":
            parts.append(_unescape(toks.next("string"), toks))
        return "".join(parts)
    if fkind in _INT_LIMITS:
        if kind != "number" or not re.fullmatch(r"[-+]?(?:0[xX][0-9a-fA-F]+|\d+)", text):
            raise toks.error(f"expected an integer for {where}, found {_clip(text)}", line, col)
        if len(text) > 40:  # longer than any 64-bit number; int() would refuse 4300+ digits
            raise toks.error(f"{_clip(text)} is out of range for {where} ({fkind})", line, col)
        if re.fullmatch(r"[-+]?0\d+", text):  # C-style octal, as protobuf reads it
            if not re.fullmatch(r"[-+]?0[0-7]+", text):
                raise toks.error(f"bad octal integer {_clip(text)} for {where}", line, col)
            value = int(text, 8)
        else:
            value = int(text, 0)
        lo, hi = _INT_LIMITS[fkind]
        if not lo <= value <= hi:
            raise toks.error(f"{text} is out of range for {where} ({fkind})", line, col)
        return value
    if fkind in ("float", "double"):
        if kind == "number":
            if "x" not in text.lower():
                return float(text.rstrip("fF"))
            if len(text) > 40:
                raise toks.error(f"{_clip(text)} is out of range for {where}", line, col)
            return float(int(text, 16))
        if kind == "ident" and text.lower() in _FLOAT_WORDS:
            return _FLOAT_WORDS[text.lower()]
        raise toks.error(f"expected a number for {where}, found {_clip(text)}", line, col)
    if fkind == "bool":
        if text in ("true", "True", "t", "1"):
            return True
        if text in ("false", "False", "f", "0"):
            return False
        raise toks.error(f"expected true or false for {where}, found {_clip(text)}", line, col)
    # enum: a value name, or its number
    values = ENUMS[ftype]
    if kind == "ident" and text in values:
        return text
    if kind == "number" and re.fullmatch(r"-?\d{1,20}", text):
        for name, num in values.items():
            if num == int(text):
                return name
        if ftype in OPEN_ENUMS:  # a fork's value: the caller names it
            return int(text)
    if kind == "ident" and ftype in OPEN_ENUMS and re.fullmatch(r"[A-Za-z_]\w*", text):
        return text
    raise toks.error(f"expected one of {', '.join(values)} for {where}, found {_clip(text)}",
                     line, col)


def _clip(text, n=40):
    """A token for a message: quoted, and cut short if long."""
    return repr(text if len(text) <= n else text[:n] + "...")


def _generic_value(toks, depth):
    """Parse and return the value of a field the schema does not know (kept as raw data)."""
    tok = toks.peek()
    if tok is not None and tok[1] == ":":
        toks.next(":")
        tok = toks.peek()
    if tok is not None and tok[1] in ("{", "<"):
        return _generic_message(toks, depth + 1)
    if tok is not None and tok[1] == "[":  # a list: [1, 2] or [{...}, {...}]
        toks.next("[")
        items = []
        while True:
            nxt = toks.peek()
            if nxt is not None and nxt[1] == "]" and not items:
                toks.next("]")
                return items
            if nxt is not None and nxt[1] in ("{", "<"):
                items.append(_generic_message(toks, depth + 1))
            else:
                items.append(_generic_scalar(toks))
            sep = toks.next("',' or ']'")
            if sep[1] == "]":
                return items
            if sep[1] != ",":
                raise toks.error(f"expected ',' or ']', found {_clip(sep[1])}", sep[2], sep[3])
    return _generic_scalar(toks)


def _generic_scalar(toks):
    tok = toks.next("a value")
    if tok[0] == "punct":
        raise toks.error(f"expected a value, found {tok[1]!r}", tok[2], tok[3])
    if tok[0] == "string":  # adjacent strings are one value
        while (nxt := toks.peek()) is not None and nxt[0] == "string":
            toks.next("string")
    return tok[1]


def _generic_message(toks, depth):
    if depth > MAX_DEPTH:
        tok = toks.peek()
        raise toks.error(f"messages nested deeper than {MAX_DEPTH} levels", tok[2], tok[3])
    open_tok = toks.next("'{'")
    close = "}" if open_tok[1] == "{" else ">"
    out = {}
    for tok in _field_names(toks, close, open_tok):
        out.setdefault(tok[1], []).append(_generic_value(toks, depth))
    return out


def _field_names(toks, close, open_tok):
    """Each field-name token of a block, up to its ``close`` (None: the end of file),
    skipping the optional ';' and ',' separators."""
    while True:
        tok = toks.peek()
        if tok is None:
            if close is None:
                return
            raise toks.error(f"unexpected end of file, expected {close!r} to close the block "
                             f"opened at {open_tok[2]}:{open_tok[3]}", *toks.end_pos)
        if tok[1] == close:
            toks.next(close)
            return
        if tok[1] in (";", ","):
            toks.next(tok[1])
            continue
        if tok[0] != "ident":
            raise toks.error(f"expected a field name, found {tok[1]!r}", tok[2], tok[3])
        toks.next("field name")
        yield tok


def _parse_fields(toks, msg: Message, close, depth, open_tok=None):
    mtype = msg._mtype
    for tok in _field_names(toks, close, open_tok):
        name = tok[1]
        field = mtype.by_name.get(name)
        if field is None:
            _generic_value(toks, depth)  # parsed to get past it; kept only as a warning
            if not mtype.open:
                msg._unknown.append((name, f"{tok[2]}:{tok[3]}"))
            continue
        if field.kind == "message":
            nxt = toks.peek()
            if nxt is not None and nxt[1] == ":":
                toks.next(":")
                nxt = toks.peek()
            if nxt is None or nxt[1] not in ("{", "<"):
                found = "end of file" if nxt is None else repr(nxt[1])
                pos = toks.end_pos if nxt is None else (nxt[2], nxt[3])
                raise toks.error(f"expected '{{' to open '{name}' ({mtype.name}), found {found}", *pos)
            if depth + 1 > MAX_DEPTH:
                raise toks.error(f"messages nested deeper than {MAX_DEPTH} levels", nxt[2], nxt[3])
            sub_open = toks.next("'{'")
            sub = Message(field.type, position=f"{sub_open[2]}:{sub_open[3]}")
            _parse_fields(toks, sub, "}" if sub_open[1] == "{" else ">", depth + 1, sub_open)
            values = [sub]
        else:
            colon = toks.next("':'")
            if colon[1] != ":":
                raise toks.error(f"expected ':' after '{name}', found {colon[1]!r}", colon[2], colon[3])
            nxt = toks.peek()
            if nxt is not None and nxt[1] == "[":
                toks.next("[")
                values = []
                while True:
                    item = toks.next("a value or ']'")
                    if item[1] == "]" and not values:
                        break
                    values.append(_scalar(field, item, toks, mtype.name))
                    sep = toks.next("',' or ']'")
                    if sep[1] == "]":
                        break
                    if sep[1] != ",":
                        raise toks.error(f"expected ',' or ']', found {sep[1]!r}", sep[2], sep[3])
            else:
                values = [_scalar(field, toks.next(f"a value for '{name}'"), toks, mtype.name)]
        if field.repeated:
            msg._values.setdefault(name, []).extend(values)
        else:
            # protobuf's text format rejects a repeated optional field; Caffe files in the
            # wild do it (e.g. kernel_size twice), and the last value is what C++ keeps.
            msg._values[name] = values[-1]
            _mark_alias(msg, field)
    return msg


def _mark_alias(msg, field):
    """Two names on one field number (pooling's round_mode / ceil_mode): keep the last."""
    for other in msg._mtype.by_number[field.number]:
        if other.name != field.name:
            msg._values.pop(other.name, None)


def parse_text(text: str, type_name: str = "NetParameter", path=None) -> Message:
    """Parse text-format protobuf into a Message of ``type_name``."""
    toks = _Tokens(text, path)
    return _parse_fields(toks, Message(type_name, position="1:1"), None, 0)
