"""`caffe2keras inspect`: what a Caffe net holds, as a table for people or JSON."""
from __future__ import annotations

import json
import math
import os
import re

from .depth import paused_gc
from .graph import Graph


def _shape(s):
    if s is None:
        return "?"
    dims = ["*" if d is None else str(d) for d in s]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def describe(graph: Graph) -> dict:
    """Everything inspect reports, as plain data."""
    with paused_gc():  # linear time for very deep nets (see depth.py)
        return _describe(graph)


def _describe(graph: Graph) -> dict:
    from .emit.plan import unsupported_layers
    from .emit.registry import layer_type

    bad = unsupported_layers(graph)
    unsupported = [{"layer": n.name, "type": n.type, **({"reason": why} if why else {})}
                   for n, why in bad]
    refused = {id(n) for n, _ in bad}
    layers, total, weighted = [], 0, 0
    for n in graph.nodes:
        pshapes = [tuple(b.shape) for b in n.layer.blobs] if n.layer.blobs else \
            (n.param_shapes or [])
        count = sum(math.prod(s) for s in pshapes)
        total += count
        weighted += bool(pshapes)
        entry = {
            "name": n.name, "type": n.type, "bottoms": list(n.layer.bottoms),
            "tops": list(n.layer.tops),
            "top_shapes": [_caffe_shape(graph, n, v) for v in n.outputs],
            "param_shapes": [list(s) for s in pshapes], "param_count": count,
            "supported": id(n) not in refused,
        }
        if n.type == "DetectionOutput" and graph.values[n.outputs[0]].shape:
            rows = graph.values[n.outputs[0]].shape[1]
            entry["max_rows"] = rows
            entry["note"] = (f"Caffe's top holds one row per detection (up to {rows}); "
                             f"the converted model gives a fixed (N, {rows}, 7) block, "
                             f"unused rows -1")
        rec = layer_type(n.type)
        if rec is not None and rec.note is not None and entry["supported"] \
                and "note" not in entry:
            text = rec.note(n.layer)
            if text:
                entry["note"] = text
        layers.append(entry)
    info = {
        "name": graph.net.name, "prototxt": graph.net.path, "format": graph.net.format,
        "weights": graph.weights_path,
        "weights_bytes": os.path.getsize(graph.weights_path) if graph.weights_path else None,
        "inputs": {b: list(s) for b, s in graph.net.inputs.items()},
        "outputs": {b: _caffe_shape(graph, graph.values[graph.final(b)].producer,
                                    graph.final(b)) for b in graph.outputs},
        "unsupported": unsupported,
        "layers": layers,
        "totals": {"layers": len(graph.nodes), "layers_with_params": weighted,
                   "params": total, "param_bytes_float32": 4 * total},
        "dropped": [{"layer": n, "type": t, "why": w} for n, t, w in graph.net.dropped],
        "extra_weights": list(graph.extra_weights),
        "notes": [{"layer": n, "text": t} for n, t in graph.notes],
    }
    return info


def _json_shape(s):
    return None if s is None else [d for d in s]


def _caffe_shape(graph, node, value_id):
    """A blob's shape as Caffe reports it. DetectionOutput's row count is decided by the
    data (None here); the graph holds the converted model's fixed block instead."""
    s = graph.values[value_id].shape
    if node is not None and node.type == "DetectionOutput" and s is not None:
        return [1, 1, None, s[-1]]
    return _json_shape(s)


def _mb(n):
    """A byte count for people: 553.4 MB, 12.3 kB, 512 B."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def to_json(info: dict) -> str:
    """JSON with each shape on one line ([1, 3, 224, 224], not one number per line)."""
    text = json.dumps(info, indent=1)
    return re.sub(r"\[\s*((?:-?\d+|null)(?:,\s*(?:-?\d+|null))*)\s*\]",
                  lambda m: "[" + re.sub(r",\s*", ", ", m.group(1)) + "]", text)


def _python_hint(types) -> str:
    from .emit.plan import python_hint  # no Keras import
    hint = python_hint(types)
    return f"; add a converter for each{hint}" if hint else ""


def format_table(info: dict) -> str:
    out = []
    src = info["prototxt"] + (f" + {info['weights']} ({_mb(info['weights_bytes'])})"
                              if info["weights"] else " (no weights)")
    out.append(f'Net "{info["name"] or "(unnamed)"}", {info["format"]} format: {src}')
    by_type = [u for u in info["unsupported"] if "reason" not in u]
    by_setting = [u for u in info["unsupported"] if "reason" in u]
    if by_type:
        types = sorted({u["type"] for u in by_type})
        out.append(f"UNSUPPORTED: {len(by_type)} layer(s) of type {', '.join(types)}: "
                   + ", ".join(f"{u['layer']} ({u['type']})" for u in by_type)
                   + _python_hint(types))
    if by_setting:
        out.append(f"UNSUPPORTED: {len(by_setting)} layer(s) with unsupported settings: "
                   + "; ".join(f"{u['layer']} ({u['type']}): {u['reason']}"
                               for u in by_setting))
    if not info["unsupported"]:
        out.append("Unsupported layers: none (every layer converts)")
    out.append("Inputs: " + ", ".join(f"{b} {_shape(s)}" for b, s in info["inputs"].items()))
    if info["dropped"]:
        out.append("Left out: " + ", ".join(f"{d['layer']} ({d['type']}, {d['why']})"
                                            for d in info["dropped"]))
    out.append("")
    rows = [("#", "layer", "type", "bottoms -> tops", "output shape", "params", "count")]
    for i, lay in enumerate(info["layers"], 1):
        flow = f"{', '.join(lay['bottoms'])} -> {', '.join(lay['tops'])}"
        shapes = " ".join(_shape(s) for s in lay["top_shapes"])
        params = " ".join(_shape(s) for s in lay["param_shapes"]) or "-"
        count = f"{lay['param_count']:,}" if lay["param_count"] else "-"
        mark = "" if lay["supported"] else " !"
        rows.append((str(i), lay["name"], lay["type"] + mark, flow, shapes, params, count))
    widths = [min(max(len(r[c]) for r in rows), 48) for c in range(len(rows[0]))]
    for r in rows:
        cells = [r[c].ljust(widths[c]) if c != 6 else r[c].rjust(widths[c])
                 for c in range(len(r))]
        out.append("  ".join(cells).rstrip())
    t = info["totals"]
    out.append("")
    out.append(f"Total: {t['params']:,} parameters ({_mb(t['param_bytes_float32'])} as float32) "
               f"in {t['layers_with_params']} of {t['layers']} layers")
    out.append("Outputs: " + ", ".join(f"{b} {_shape(s)}" for b, s in info["outputs"].items()))
    if any(d is None for lay in info["layers"] for s in lay["top_shapes"] if s for d in s):
        out.append("(* = decided by the data at run time, e.g. the number of detections)")
    if any(s is None for lay in info["layers"] for s in lay["top_shapes"]):
        out.append("(? = unknown: the shape follows an unsupported layer)")
    for x in info["extra_weights"]:
        out.append(f"Note: the weights hold layer '{x}', which the prototxt lacks (ignored)")
    for n in info["notes"]:
        out.append(f"Note: {n['layer']}: {n['text']}")
    for lay in info["layers"]:
        if lay.get("note"):
            out.append(f"Note: {lay['name']}: {lay['note']}")
    return "\n".join(out)
