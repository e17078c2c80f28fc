"""Code is data: a converted Keras model written out as plain Keras 3 functional Python.

The source is generated from the Keras model itself (its layers, their non-default
config, and the call graph), so it is right for every converter, built-in or custom.
One statement per layer call; Caffe names are kept in comments where the Keras name
differs. Custom caffe2keras layers are imported from their modules.

    source = generate_source(model, weights_file="model.weights.h5")
    write_python("deploy.prototxt", "model.py", caffemodel="net.caffemodel")
"""
from __future__ import annotations

import inspect
import keyword
import math
import re
from pathlib import Path

from .errors import CaffeFormatError
from .keras_compat import is_symbolic, producer
from .keras_graph import model_nodes

RESERVED = {"keras", "os", "model", "build_model", "weights", "WEIGHTS", "inputs", "outputs",
            "print", "len", "input", "list", "dict", "type", "id", "max", "min", "sum", "map",
            "filter", "range", "format", "object", "super", "open", "vars", "all", "any"}


# --- rendering Python values -----------------------------------------------------------

def _keras_path(module: str, name: str):
    """``keras.initializers.GlorotUniform`` for an object Keras serialised from module
    ``module``, if that public path resolves; else None."""
    import importlib

    if not module or not (module == "keras" or module.startswith("keras.")):
        return None
    try:
        obj = importlib.import_module(module)
        obj = getattr(obj, name)
    except (ImportError, AttributeError):
        return None
    return f"{module}.{name}" if obj is not None else None


def literal(value) -> str:
    """Python source for a config value: JSON-like data, tuples, and Keras-serialised
    objects as constructor calls (``keras.initializers.Constant(value=0.5)``)."""
    import numpy as np

    if isinstance(value, dict):
        if {"module", "class_name", "config"} <= set(value) and isinstance(value["config"],
                                                                          dict):
            path = _keras_path(value["module"], value["class_name"])
            if path is not None:
                args = ", ".join(f"{k}={literal(v)}" for k, v in value["config"].items())
                return f"{path}({args})"
        items = ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        return literal(value.tolist())
    if isinstance(value, np.generic):
        return literal(value.item())
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if value in (float("inf"), float("-inf")):
            return 'float("inf")' if value > 0 else '-float("inf")'
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        if text.startswith("'") and '"' not in value:   # prefer double quotes
            text = '"' + text[1:-1].replace("\\'", "'") + '"'
        return text
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} as Python source")


def identifier(name: str, used: set) -> str:
    """A fresh Python identifier for ``name`` (Caffe/Keras names hold '/', '-', '.', or
    start with digits)."""
    base = re.sub(r"\W", "_", str(name), flags=re.ASCII).strip("_") or "x"
    if base[0].isdigit():
        base = f"x{base}"
    if keyword.iskeyword(base) or keyword.issoftkeyword(base) or base in RESERVED:
        base = f"{base}_"
    ident, k = base, 1
    while ident in used:
        ident, k = f"{base}_{k}", k + 1
    used.add(ident)
    return ident


# --- walking the model -----------------------------------------------------------------

def _class_ref(layer, imports):
    """How the generated code names ``layer``'s class; records imports it needs."""
    import keras

    cls = type(layer)
    for ns, prefix in ((keras.layers, "keras.layers"), (keras, "keras")):
        if getattr(ns, cls.__name__, None) is cls:
            return f"{prefix}.{cls.__name__}"
    module = cls.__module__
    if module == "__main__" or "<" in cls.__qualname__:
        raise CaffeFormatError(
            f"layer '{layer.name}' is a {cls.__name__} defined in a script or function; "
            f"generated code can only import layer classes that live in a module")
    imports.setdefault(module, set()).add(cls.__name__)
    return cls.__name__


def _init_params(cls):
    params = []
    for c in cls.__mro__:
        if "__init__" in vars(c):
            sig = inspect.signature(c.__init__)
            params = [p for p in sig.parameters.values() if p.name != "self"]
            break
    return params


def constructor_arguments(layer):
    """(positional, keyword) arguments that rebuild ``layer``: its config minus what the
    class's defaults give anyway (checked by rebuilding: defaults can depend on other
    arguments, as pooling strides on pool_size); required arguments positionally, the
    name last."""
    cls = type(layer)
    config = layer.get_config()
    params = _init_params(cls)
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    any_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
    required = [p.name for p in params if p.default is p.empty and
                p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    missing = [r for r in required if r not in config]
    if missing:
        raise CaffeFormatError(
            f"layer '{layer.name}' ({cls.__name__}): get_config() lacks the constructor "
            f"argument(s) {missing}, so code cannot rebuild it")
    keys = [k for k in config if k != "name" and (k in named or any_kwargs)]
    try:
        default = cls(**{k: config[k] for k in required}).get_config()
    except (TypeError, ValueError):   # a class not buildable from its required args alone
        import keras

        default = {**keras.layers.Layer().get_config(),
                   **{p.name: p.default for p in params if p.default is not p.empty}}
    keep = {k for k in keys if k in required or k not in default or
            not _same(default[k], config[k])}
    while True:
        try:
            rebuilt = cls(**{k: config[k] for k in keys if k in keep},
                          name=layer.name).get_config()
        except (TypeError, ValueError):
            keep = set(keys)
            break
        differ = {k for k in keys if k not in rebuilt or not _same(rebuilt[k], config[k])}
        if not differ or differ <= keep:
            if differ:
                keep = set(keys)
            break
        keep |= differ
    positional = [literal(config[k]) for k in required]
    kwargs = [f"{k}={literal(config[k])}" for k in keys if k in keep and k not in required]
    kwargs.append(f"name={literal(layer.name)}")
    return positional, kwargs


def _same(a, b):
    try:
        return bool(a == b)
    except (TypeError, ValueError):   # arrays compare element-wise
        return False


def _call_arguments(node, names):
    """Source for the arguments of a layer call, tensors replaced by their variables."""
    def render(v):
        if is_symbolic(v) and id(v) in names:
            return names[id(v)]
        if isinstance(v, (list, tuple)):
            inner = ", ".join(render(x) for x in v)
            return f"[{inner}]" if isinstance(v, list) else (
                f"({inner},)" if len(v) == 1 else f"({inner})")
        if isinstance(v, dict):
            return "{" + ", ".join(f"{literal(k)}: {render(x)}" for k, x in v.items()) + "}"
        return literal(v)

    parts = [render(a) for a in node.arguments.args]
    parts += [f"{k}={render(v)}" for k, v in node.arguments.kwargs.items()
              if not (k in ("mask", "training") and v is None)]   # Keras's own defaults
    return ", ".join(parts)


def _returns_sequence(node):
    """Whether the layer call returned a list/tuple (so even one output is unpacked)."""
    if len(node.outputs) != 1:
        return True
    layer = node.operation
    if type(layer).__module__.startswith("keras."):
        return False
    try:
        spec = layer.compute_output_spec(*node.arguments.args, **node.arguments.kwargs)
    except (TypeError, ValueError, NotImplementedError):
        return False
    return isinstance(spec, (list, tuple))


# --- the generated file ----------------------------------------------------------------

def _wrap_import(module, names, indent):
    line = f"{indent}from {module} import {', '.join(names)}"
    if len(line) <= 88:
        return [line]
    return [f"{indent}from {module} import ("] + [f"{indent}    {n}," for n in names] + \
        [f"{indent})"]


def _call_line(indent, targets, expr):
    if not targets:
        return f"{indent}{expr}"
    return f"{indent}{', '.join(targets)} = {expr}"


# Beyond this many layers the generated code raises Python's recursion limit around
# keras.Model(...) (Keras's graph walk recurses once per layer; the default limit is 1000).
DEEP_MODEL_LAYERS = 500


def generate_source(model, weights_file=None, caffe_names=None, title=None,
                    source=None, order=None) -> str:
    """Python source that builds ``model`` with plain Keras calls.

    weights_file: file name (beside the .py) the code loads weights from, or None.
    caffe_names:  {Keras layer name: comment}, e.g. the Caffe layer it came from.
    title:        first docstring line; source: more docstring lines (where it came from).
    order:        {Keras layer name: sort key} to write layers in (else Keras's order).
    """
    from keras import tree

    caffe_names = caffe_names or {}
    nodes = model_nodes(model, order)
    imports = {}
    used = set(RESERVED)
    names = {}            # id(KerasTensor) -> variable
    body = []
    ind = "    "

    input_struct = model.input
    input_items = list(input_struct.items()) if isinstance(input_struct, dict) else \
        [(None, t) for t in tree.flatten(input_struct)]
    for _, tensor in input_items:
        layer = producer(tensor)
        var = identifier(layer.name, used)
        names[id(tensor)] = var
        args = [f"shape={literal(tuple(tensor.shape[1:]))}", f"name={literal(layer.name)}"]
        if str(tensor.dtype) != "float32":
            args.insert(1, f"dtype={literal(str(tensor.dtype))}")
        body.append(f"{ind}{var} = keras.Input({', '.join(args)})")

    calls = {}
    for node in nodes:
        calls.setdefault(id(node.operation), []).append(node)
    consumed = {id(t) for n in nodes for t in n.arguments.keras_tensors}
    consumed |= {id(t) for t in tree.flatten(model.output)}
    layer_vars = {}       # id(layer) -> variable, for layers called more than once
    for node in nodes:
        layer = node.operation
        comment = caffe_names.get(layer.name)
        shared = len(calls[id(layer)]) > 1
        if not shared or id(layer) not in layer_vars:
            positional, kwargs = constructor_arguments(layer)
            ctor = f"{_class_ref(layer, imports)}({', '.join(positional + kwargs)})"
        if shared and id(layer) not in layer_vars:
            layer_vars[id(layer)] = identifier(f"{layer.name}_layer", used)
            if comment:
                body.append(f"{ind}# {comment}")
                comment = None
            body.append(f"{ind}{layer_vars[id(layer)]} = {ctor}")
        call_index = calls[id(layer)].index(node)
        targets = []
        for i, t in enumerate(node.outputs):
            if id(t) not in consumed:
                targets.append("_")
                continue
            base = layer.name if len(node.outputs) == 1 else f"{layer.name}_{i}"
            names[id(t)] = identifier(f"{base}_{call_index}" if call_index else base, used)
            targets.append(names[id(t)])
        if _returns_sequence(node) and len(targets) == 1:
            targets = [f"({targets[0]},)"]
        callee = layer_vars[id(layer)] if shared else ctor
        if comment:
            body.append(f"{ind}# {comment}")
        body.append(_call_line(ind, targets, f"{callee}({_call_arguments(node, names)})"))

    def struct(s, depth):
        pad = ind * depth
        if isinstance(s, dict):
            items = [f"{literal(k)}: {names[id(v)]}" for k, v in s.items()]
            text = "{" + ", ".join(items) + "}"
            if len(text) + len(pad) > 80:
                text = "{\n" + "".join(f"{pad}{ind}{i},\n" for i in items) + pad + "}"
            return text
        flat = tree.flatten(s)
        if len(flat) == 1 and not isinstance(s, (list, tuple)):
            return names[id(flat[0])]
        return "[" + ", ".join(names[id(v)] for v in flat) + "]"

    deep = len(nodes) > DEEP_MODEL_LAYERS
    if deep:  # keras.Model walks the graph recursively: one Python frame per layer
        body += [f"{ind}# keras.Model walks the graph recursively, a Python frame per layer",
                 f"{ind}limit = sys.getrecursionlimit()",
                 f"{ind}sys.setrecursionlimit(limit + {len(nodes) + 1000})",
                 f"{ind}try:"]
    pad = ind * (2 if deep else 1)
    body += [f"{pad}model = keras.Model(",
             f"{pad}{ind}inputs={struct(model.input, 3 if deep else 2)},",
             f"{pad}{ind}outputs={struct(model.output, 3 if deep else 2)},",
             f"{pad}{ind}name={literal(model.name)},",
             f"{pad})"]
    if deep:
        body += [f"{ind}finally:", f"{ind}{ind}sys.setrecursionlimit(limit)"]
    body.append(f"{ind}if weights:")
    body.append(f"{ind}{ind}model.load_weights(weights)")
    body.append(f"{ind}return model")

    local_imports = []
    for module in sorted(imports):
        local_imports += _wrap_import(module, sorted(imports[module]), ind)

    doc = [f'"""{title or f"Keras model {model.name}, generated by caffe2keras."}', ""]
    doc += [*(source or []), ""] if source else []
    doc += ["Run it to build the model (and load its weights); or import it and call",
            "build_model(). Inputs and outputs are dicts keyed by Caffe blob names; 4-D",
            "blobs are NHWC.", '"""']
    lines = doc + [""]
    std = (["import os"] if weights_file else []) + (["import sys"] if deep else [])
    if std:
        lines += [*std, ""]
    lines += ["import keras", ""]
    if weights_file:
        here = "os.path.dirname(os.path.abspath(__file__))"
        lines += [f"WEIGHTS = os.path.join({here}, {literal(str(weights_file))})", "", "",
                  "def build_model(weights=WEIGHTS):"]
    else:
        lines += ["", "def build_model(weights=None):"]
    lines.append(f'{ind}"""The Keras model; ``weights``: a .weights.h5 file to load, or None."""')
    if local_imports:
        lines += [f"{ind}# caffe2keras's own layers (Caffe semantics Keras lacks)", *local_imports,
                  ""]
    lines += body
    report = ('print(f"{model.name}: {len(model.layers)} layers, '
              '{model.count_params():,} parameters")')
    lines += ["", "", 'if __name__ == "__main__":', f"{ind}model = build_model()",
              f"{ind}{report}"]
    return "\n".join(lines) + "\n"


def caffe_comments(graph, outputs=None):
    """({Keras layer name: "Caffe <type> '<name>'"} where the Keras name is not the Caffe
    name (sanitised, made unique, or several Caffe layers fused into one), {Keras step
    name: position in the prototxt}). ``outputs`` as for convert(): the plan, and so the
    names, depend on them."""
    from .emit.plan import make_plan, resolve_outputs

    keep = {graph.final(b) for b in resolve_outputs(graph, outputs)}
    comments, order = {}, {}
    for i, step in enumerate(make_plan(graph, keep)):
        order[step.name] = i
        caffe = [f"{n.type} '{n.name}'" for n in step.nodes]
        if len(step.nodes) > 1 or step.node.name != step.name:
            comments[step.name] = "Caffe " + " + ".join(caffe)
    return comments, order


def _layer_order(model, steps):
    """Sort keys for every layer of ``model``: its Caffe step's position; helper layers
    (``<step>_pad``...) go with their step, preprocessing layers first."""
    from keras import tree

    inputs = {producer(t).name for t in tree.flatten(model.input)}
    order = {}
    for layer in model.layers:
        name = layer.name
        if name in steps:
            order[name] = (steps[name], 1)
            continue
        # the longest step name that ``name`` extends with "_..." (its helper layers)
        owner = next((name[:i] for i in range(len(name) - 1, 0, -1)
                      if name[i] == "_" and name[:i] in steps), None)
        order[name] = (steps[owner], 0) if owner is not None else \
            ((-1, 0) if name in inputs or owner is None else (len(steps), 0))
    return order


def write_python(prototxt, output, caffemodel=None, outputs=None, input_shapes=None,
                 preprocessor=None, weights_output=None):
    """Convert ``prototxt`` (+ ``caffemodel``), write the model as Python to ``output``
    and, with weights, a ``.weights.h5`` file beside it. Returns (model, weights path)."""
    from .emit.builder import build_model
    from .files import atomic_output
    from .graph import load_graph

    out = Path(output)
    if out.suffix != ".py":
        raise CaffeFormatError("output must be a .py file", path=output)
    graph = load_graph(prototxt, caffemodel, input_shapes=input_shapes)
    model = build_model(graph, outputs=outputs, with_weights=caffemodel is not None)
    comments, steps = caffe_comments(graph, outputs)
    if preprocessor is not None:
        model = preprocessor.wrap(model)
    weights_path = None
    if caffemodel is not None or preprocessor is not None and preprocessor.mean is not None \
            and preprocessor.mean.ndim == 3:
        weights_path = Path(weights_output) if weights_output else \
            out.with_name(out.stem + ".weights.h5")
        if not weights_path.name.endswith(".weights.h5"):
            raise CaffeFormatError("weights file name must end in .weights.h5 (Keras)",
                                   path=weights_path)
    net = graph.net
    from . import __version__

    title = f"Caffe net '{net.name or Path(prototxt).stem}' as Keras 3 code."
    origin = [f"Generated by caffe2keras {__version__} from {Path(prototxt).name}" +
              (f" and {Path(caffemodel).name}." if caffemodel else " (fresh weights).")]
    rel = None
    if weights_path is not None:
        rel = weights_path.name if weights_path.resolve().parent == out.resolve().parent \
            else str(weights_path.resolve())
    source = generate_source(model, weights_file=rel, caffe_names=comments, title=title,
                             source=origin, order=_layer_order(model, steps))
    if weights_path is not None:
        with atomic_output(weights_path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
    with atomic_output(out, suffix=".py") as tmp:
        Path(tmp).write_text(source)
    return model, weights_path
