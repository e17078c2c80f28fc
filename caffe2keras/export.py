"""Weights-only export: a caffemodel's numbers, streamed into a file other code loads.

    caffe2keras.export_weights("deploy.prototxt", "net.caffemodel", "net.weights.h5")

Formats (``format=``; by default from the output's suffix):

- ``keras`` (``.weights.h5``): Keras 3 weights for the model ``caffe2keras.convert()``
  builds from the same prototxt (same ``outputs=``): ``model.load_weights(path)``.
- ``keras2-h5`` (``.h5``/``.hdf5``): the legacy Keras HDF5 weights layout keyed by layer
  name, in the layouts of Keras's own layers (Conv2D, DepthwiseConv2D, Conv2DTranspose,
  Dense, BatchNormalization, PReLU): ``model.load_weights(path, by_name=True)`` into a
  model written by hand with the Caffe layer names.
- ``npz``: ``LAYER/INDEX`` arrays, Caffe layout (``layout="keras"``: keras2-h5's arrays).
- ``pickle``: a list of ``{name, type, bottoms, tops, weights}`` (Caffe layout), for other
  frameworks. Load a pickle only from a source you trust.

Streaming: blobs are read from the memory-mapped caffemodel and written layer by layer;
a layer above 2 MB is transformed and written in slices of its output channels, and the
mapped pages are dropped once written, so memory stays near one slice, not one model.

A Keras 3 ``.weights.h5`` is keyed by position, not by layer name: the variables of a
functional model's layer live at ``layers/<its class in snake_case>[_<k>]/vars/<i>``,
where ``k`` counts the layers of that class in ``model.layers`` order, and Keras orders a
functional model's layers by their depth in the graph, not by creation. The paths are
therefore taken from the converted model's structure: worked out without Keras when
every layer class that holds weights forms a chain in the net (then the order cannot
depend on depth), and otherwise read from the converted model built without its
weights (no variable is allocated; this imports Keras).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import math
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .emit.context import LayerContext
from .errors import CaffeFormatError, CaffeWarning, UnsupportedLayerError
from .files import atomic_output
from .graph import Graph, load_graph
from .pages import release

FORMATS = ("keras", "keras2-h5", "npz", "pickle")
LAYOUTS = ("caffe", "keras")
# Layers above twice this many bytes are transformed and written in slices of about this
# size (output channels): small enough for the transposes to stay in cache.
BLOCK_BYTES = 1 << 20
# HDF5 keeps attributes in the object header (64 KB); Keras splits longer lists.
_HDF5_ATTR_LIMIT = 64512


# ------------------------------------------------------------------------ entry point

def export_weights(prototxt, caffemodel, out, format=None, *, layout="caffe",
                   outputs=None, input_shapes=None, skip_unknown=False, verbose=False,
                   log=None) -> Path:
    """Write the weights of ``caffemodel`` to ``out`` without building a Keras model.

    format:       "keras", "keras2-h5", "npz" or "pickle"; None picks it from ``out``'s
                  suffix (.weights.h5, .h5/.hdf5, .npz, .pkl/.pickle).
    layout:       npz only: "caffe" (the blobs as stored) or "keras" (keras2-h5's arrays).
    outputs:      keras only: the ``outputs`` given to ``convert()`` for the model that will
                  load the file (they decide which layers exist and BatchNorm+Scale fusion).
    input_shapes: {blob: NCHW shape} to set or override input shapes, as in ``convert()``.
    skip_unknown: leave out layers whose type has no known Keras layout, instead of writing
                  their blobs unchanged with a warning.
    verbose:      report every layer (name, type, Caffe shapes -> written shapes) to ``log``
                  (default: print).
    Returns the path written. Every file is written to a temporary name and renamed into
    place: an error or Ctrl-C leaves no partial file.
    """
    out = Path(out)
    fmt = _pick_format(out, format)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "keras" and fmt != "npz":
        raise ValueError("layout='keras' is for the npz format (the keras formats are "
                         "always in Keras layout, pickle always in Caffe layout)")
    if outputs is not None and fmt != "keras":
        raise ValueError("outputs= only applies to the keras format (the model convert() "
                         "builds); the other formats hold every layer")
    graph = load_graph(prototxt, caffemodel, input_shapes=input_shapes)
    if graph.weights_path is None:
        raise CaffeFormatError("weights export needs a caffemodel", path=prototxt)
    report = _Report(verbose, log)
    with atomic_output(out) as tmp:
        if fmt == "keras":
            _export_keras3(graph, tmp, outputs, skip_unknown, report)
        elif fmt == "keras2-h5":
            _export_keras2(graph, tmp, skip_unknown, report)
        elif fmt == "npz":
            _export_npz(graph, tmp, layout, skip_unknown, report)
        else:
            _export_pickle(graph, tmp, skip_unknown, report)
    report.warn_unknown(graph)
    return out


def _pick_format(out: Path, fmt):
    name = out.name.lower()
    if fmt is None:
        if name.endswith(".weights.h5"):
            return "keras"
        if name.endswith((".h5", ".hdf5")):
            return "keras2-h5"
        if name.endswith(".npz"):
            return "npz"
        if name.endswith((".pkl", ".pickle")):
            return "pickle"
        raise CaffeFormatError(
            "cannot tell the format from the file name; end it in .weights.h5 (keras), "
            ".h5 (keras2-h5), .npz or .pkl, or give the format", path=out)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "keras" and not name.endswith(".weights.h5"):
        raise CaffeFormatError("a keras weights file must end in .weights.h5 (Keras 3's "
                               "load_weights() goes by that suffix)", path=out)
    if fmt == "keras2-h5" and (name.endswith(".weights.h5") or
                               not name.endswith((".h5", ".hdf5"))):
        raise CaffeFormatError(
            "a keras2-h5 file must end in .h5 or .hdf5 but not .weights.h5 (Keras 3 reads "
            ".weights.h5 as its own format, the legacy by-name loader only other .h5 names)",
            path=out)
    return fmt


class _Report:
    """Verbose lines and the one warning about layers written unchanged."""

    def __init__(self, verbose, log, progress=None):
        self.verbose = verbose
        self.log = log or print
        self.unknown = []      # (layer, type, why)
        self.skipped = []
        self.progress = progress  # called with the float32 bytes done so far
        self.done = 0

    def layer(self, name, type_, caffe_shapes, dest, shapes):
        if self.verbose:
            self.log(f"{name} ({type_}): {_fmt(caffe_shapes)} -> {dest}: {_fmt(shapes)}")
        if self.progress is not None:
            self.done += 4 * sum(math.prod(s) for s in caffe_shapes)
            self.progress(self.done)

    def warn_unknown(self, graph):
        if self.unknown:
            listing = "; ".join(f"{n} ({t}{', ' + why if why else ''})"
                                for n, t, why in self.unknown)
            warnings.warn(f"{graph.net.path}: {len(self.unknown)} layer(s) have no known Keras "
                          f"layout, their blobs are written unchanged (Caffe layout): "
                          f"{listing}. Use skip_unknown (--skip-unknown) to leave them out.",
                          CaffeWarning, stacklevel=3)
        if self.skipped:
            warnings.warn(f"{graph.net.path}: left out {len(self.skipped)} layer(s) with no "
                          f"known Keras layout: {'; '.join(self.skipped)}", CaffeWarning,
                          stacklevel=3)


def _fmt(shapes):
    return "[" + ", ".join("(" + ",".join(str(d) for d in s) + ")" for s in shapes) + "]"


# ------------------------------------------------------------------ transforms, sliced

class _Result:
    """A step's Keras-layout arrays: {keras layer name: [arrays]}, either computed whole or
    produced slice by slice (``blocks()``) along one axis per array."""

    def __init__(self, names, shapes, dtypes, axes, blocks):
        self.names = names        # [(keras layer name, count)] in output order
        self.shapes = shapes      # {(name, i): full shape}
        self.dtypes = dtypes      # {(name, i): dtype}
        self.axes = axes          # {(name, i): axis the blocks split, or None (whole)}
        self.blocks = blocks      # () -> iterator of {(name, i): (lo, hi, array)}

    def array_keys(self):
        return [(n, i) for n, c in self.names for i in range(c)]


def _run(fn, ctx):
    out = fn(ctx)
    if not isinstance(out, dict):
        raise CaffeFormatError(f"internal: the weights function for {ctx.step.type} returned "
                               f"{type(out).__name__}, not a dict", path=ctx.graph.net.path,
                               layer=ctx.layer.name)
    return {name: [np.asarray(a) for a in arrays] for name, arrays in out.items()}


class _SlicedContext(LayerContext):
    """A step's context whose first layer's blobs are rows [lo, hi) of their axis 0."""

    @property
    def blobs(self):
        return [b[self._rows] for b in self.layer.blobs]


def _sliced_context(ctx, lo, hi):
    sliced = _SlicedContext.__new__(_SlicedContext)
    sliced.__dict__.update(ctx.__dict__)
    sliced._rows = slice(lo, hi)
    return sliced


def _whole(out, dtype):
    names = [(n, len(a)) for n, a in out.items()]
    arrays = {(n, i): _cast(a, dtype) for n, arrs in out.items() for i, a in enumerate(arrs)}
    shapes = {k: a.shape for k, a in arrays.items()}
    dtypes = {k: a.dtype for k, a in arrays.items()}

    def blocks():
        yield {k: (0, a.shape[0] if a.ndim else 1, a) for k, a in arrays.items()}
    return _Result(names, shapes, dtypes, dict.fromkeys(arrays), blocks)


def _cast(a, dtype):
    a = np.asarray(a)
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    return a


def compute(fn, ctx, dtype=np.float32) -> _Result:
    """Apply the weights function ``fn`` to the step, in slices when its blobs are large.

    Slicing runs ``fn`` on rows of the first layer's blobs (their axis 0: output channels
    for Convolution and InnerProduct; a slice's context shows only its rows), and is used
    only if ``fn`` acts row by row on this layer's own data: ``fn(rows 0..2r)`` must equal
    ``fn(rows 0..r)`` and ``fn(rows r..2r)`` joined along one axis per array, bit for bit.
    A function that fails on a slice, or reshapes by the layer's full size, runs once on
    the whole blobs instead (about one layer of memory).
    """
    blobs = ctx.layer.blobs
    total = sum(b.nbytes for b in blobs)
    n = blobs[0].shape[0] if blobs and blobs[0].ndim else 0
    if total <= 2 * BLOCK_BYTES or len(ctx.nodes) > 1 or \
            any(b.ndim == 0 or b.shape[0] != n for b in blobs):
        return _whole(_run(fn, ctx), dtype)
    rows = _block_rows(n, max(1, BLOCK_BYTES * n // total))
    if 2 * rows >= n:
        return _whole(_run(fn, ctx), dtype)
    try:
        a = _run(fn, _sliced_context(ctx, 0, rows))
        b = _run(fn, _sliced_context(ctx, rows, 2 * rows))
        ab = _run(fn, _sliced_context(ctx, 0, 2 * rows))
        plan = _split_axes(a, b, ab, rows)
    except Exception:  # noqa: BLE001 - a function that cannot take slices runs whole
        plan = None
    if plan is None:
        return _whole(_run(fn, ctx), dtype)
    axes, per_row = plan
    names = [(name, len(arrs)) for name, arrs in a.items()]
    shapes = {}
    for name, arrs in a.items():
        for i, arr in enumerate(arrs):
            s = list(arr.shape)
            s[axes[name, i]] = per_row[name, i] * n
            shapes[name, i] = tuple(s)
    ready = {0: a, rows: b}  # the check's slices are the first two blocks

    def blocks():
        for lo in range(0, n, rows):
            hi = min(n, lo + rows)
            part = ready.pop(lo, None)
            if part is None:
                part = _run(fn, _sliced_context(ctx, lo, hi))
            yield {(name, i): (lo * per_row[name, i], hi * per_row[name, i], _cast(arr, dtype))
                   for name, arrs in part.items() for i, arr in enumerate(arrs)}
            release([blob[lo:hi] for blob in blobs])
    dtypes = {k: np.dtype(dtype) for k in shapes}
    return _Result(names, shapes, dtypes, axes, blocks)


def _block_rows(n, most):
    """Rows per block: a divisor of ``n`` near ``most`` when there is one (every chunk of
    the file then full), else ``n`` split evenly."""
    for rows in range(most, max(1, most // 2) - 1, -1):
        if n % rows == 0:
            return rows
    return -(-n // -(-n // most))


def _split_axes(a, b, ab, rows):
    """The axis each output array grows along with the rows, if slicing is exact."""
    if a.keys() != b.keys() or a.keys() != ab.keys():
        return None
    axes, per_row = {}, {}
    for name in a:
        if not len(a[name]) == len(b[name]) == len(ab[name]):
            return None
        for i, (x, y, xy) in enumerate(zip(a[name], b[name], ab[name])):
            if not x.ndim == y.ndim == xy.ndim or x.shape != y.shape:
                return None
            diff = [k for k in range(x.ndim) if x.shape[k] != xy.shape[k]]
            if len(diff) != 1:
                return None
            k = diff[0]
            if xy.shape[k] != 2 * x.shape[k] or x.shape[k] % rows:
                return None
            if not _same_bits(np.concatenate([x, y], axis=k), xy):
                return None
            axes[name, i] = k
            per_row[name, i] = x.shape[k] // rows
    return axes, per_row


def _same_bits(x, y):
    """Exact equality, NaNs included (a layout transform only moves values)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind in "fc" and x.dtype.itemsize in (4, 8, 16):
        as_int = np.dtype(f"u{min(x.dtype.itemsize, 8)}")
        if x.dtype.itemsize == 16:
            x, y = x.view(np.float64), y.view(np.float64)
        return np.array_equal(x.view(as_int), y.view(as_int))
    return np.array_equal(x, y)


# --------------------------------------------------------------------------- sinks

class _H5Sink:
    """Datasets in an HDF5 file, written whole or slab by slab."""

    def __init__(self, path, userblock=0):
        import h5py

        # HDF5 1.10 structures (any h5py of the last years reads them): chunk indexes
        # that cost nothing to write, unlike 1.8's B-trees
        extra = {"userblock_size": userblock} if userblock else {}
        self.file = h5py.File(path, "x", libver=("earliest", "v110"), **extra)

    def group(self, path, attrs=None):
        g = self.file.require_group(path)
        for k, v in (attrs or {}).items():
            g.attrs[k] = v
        return g

    def write(self, group, key, result, rkey):
        """Create ``group[key]`` for ``result``'s array ``rkey``; returns a block writer."""
        shape, axis = result.shapes[rkey], result.axes[rkey]
        return _H5Array(group, key, shape, axis)

    def close(self):
        self.file.close()


class _H5Array:
    """One dataset, written as its blocks arrive. A small array (a bias) is gathered and
    written once; a large one goes to a chunked dataset, one chunk per block, unless its
    blocks run along axis 0 (then plain slabs of a contiguous dataset)."""

    def __init__(self, group, key, shape, axis):
        self.group, self.key, self.shape, self.axis = group, key, shape, axis
        self.ds = None
        self.chunks = None
        self.parts = []
        self.small = axis is None or 4 * math.prod(shape) <= BLOCK_BYTES

    def put(self, lo, hi, block):
        if self.small:
            self.parts.append(block)
            return
        if self.ds is None:
            if self.axis != 0:
                chunks = list(self.shape)
                chunks[self.axis] = max(1, hi - lo)
                self.chunks = tuple(chunks)
            self.ds = self.group.create_dataset(self.key, shape=self.shape, dtype=block.dtype,
                                                chunks=self.chunks)
        block = np.ascontiguousarray(block)
        if self.chunks is not None and block.shape == self.chunks:
            # a whole chunk: hand HDF5 the bytes, skipping its selection machinery
            offset = [0] * len(self.shape)
            offset[self.axis] = lo
            self.ds.id.write_direct_chunk(tuple(offset), block)
            return
        self.ds[(slice(None),) * self.axis + (slice(lo, hi),)] = block

    def close(self):
        if self.small:
            data = self.parts[0] if len(self.parts) == 1 else \
                np.concatenate(self.parts, axis=self.axis)
            self.group.create_dataset(self.key, data=data)
            self.parts = []


def _write_result(result, targets):
    """Stream ``result`` into ``targets`` {(name, i): writer with put(lo, hi, block)}."""
    for part in result.blocks():
        for key, (lo, hi, block) in part.items():
            w = targets.get(key)
            if w is not None:
                w.put(lo, hi, block)
    for w in targets.values():
        if hasattr(w, "close"):
            w.close()


def _set_list_attr(group, name, values):
    """A list of strings as an HDF5 attribute, split like Keras's
    save_attributes_to_hdf5_group when it would overflow the object header."""
    data = np.asarray([v.encode("utf8") for v in values]) if values else np.zeros(0, "S1")
    chunks = 1
    parts = [data]
    while any(p.nbytes > _HDF5_ATTR_LIMIT for p in parts):
        chunks += 1
        parts = np.array_split(data, chunks)
    if chunks == 1:
        group.attrs[name] = data
    else:
        for i, p in enumerate(parts):
            group.attrs[f"{name}{i}"] = p


# ----------------------------------------------------------- Keras 3 (.weights.h5)

def _export_keras3(graph: Graph, path, outputs, skip_unknown, report, model=None,
                   userblock=0, scope=None):
    """``model``: the converted model built without weights (in a StatelessScope), when
    the caller has it: its own save walk then gives the paths; ``scope``: that
    StatelessScope, whose assignments (e.g. a preprocessing mean image) are the values of
    variables no Caffe blob fills. ``userblock``: bytes HDF5 leaves free at the start of
    the file (saving.py writes a .keras zip around it)."""
    from .emit.plan import check_supported, make_plan, resolve_outputs
    from .emit.registry import WEIGHTS

    try:
        check_supported(graph)
    except UnsupportedLayerError as e:
        raise UnsupportedLayerError(
            f"{e.detail} The keras format is for the model convert() builds, which needs "
            f"every layer type; keras2-h5 and npz export any net.", path=e.path) from None
    keep = {graph.final(b) for b in resolve_outputs(graph, outputs)}
    plan = make_plan(graph, keep)
    if model is not None:
        layout = layout_from_model(graph, outputs, model)
    else:
        layout = fast_layout(graph, plan, keep) or skeleton_layout(graph, outputs)
    sink = _H5Sink(path, userblock)
    written = set()
    try:
        for step in plan:
            if not any(n.layer.blobs for n in step.nodes) or step.name not in layout.in_model:
                continue
            ctx = LayerContext(step, graph)
            fn = WEIGHTS.get(step.type)
            if fn is None:
                result = _passthrough_keras3(ctx, layout, skip_unknown, report)
                if result is None:
                    continue
            else:
                result = compute(fn, ctx)
            targets, dests = {}, []
            for name, count in result.names:
                entry = layout.layers.get(name)
                if entry is None:
                    raise CaffeFormatError(
                        f"internal: the weights function made weights for Keras layer "
                        f"'{name}', which the converted model does not have",
                        path=graph.net.path, layer=step.node.name)
                dests.append(entry.path)
                for i in range(count):
                    want, got = entry.shapes.get(i), result.shapes[name, i]
                    if (want is not None and tuple(want) != tuple(got)) or \
                            (entry.shapes and i not in entry.shapes):
                        raise CaffeFormatError(
                            f"internal: weights for Keras layer '{name}' variable {i} have "
                            f"shape {tuple(got)}, the converted model's is "
                            f"{None if want is None else tuple(want)}",
                            path=graph.net.path, layer=step.node.name)
                    group, key = entry.place(i)
                    g = sink.group(f"{group}/vars", {"name": entry.group_names.get(group, name)})
                    targets[name, i] = sink.write(g, key, result, (name, i))
                    written.add((name, i))
            _write_result(result, targets)
            for node in step.nodes:
                release(node.layer.blobs)
            report.layer(step.node.name, step.type, _caffe_shapes(step), ", ".join(dests),
                         [result.shapes[k] for k in targets])
        for name, entry in layout.layers.items():  # variables no Caffe blob fills
            for i, var in entry.variables.items():
                if (name, i) not in written:
                    group, key = entry.place(i)
                    value = _initial_value(var, scope)
                    sink.group(f"{group}/vars", {"name": entry.group_names.get(group, name)}) \
                        .create_dataset(key, data=value)
                    report.layer(name, "no Caffe blob", [], f"{group} (initial value)",
                                 [value.shape])
    finally:
        sink.close()


def _initial_value(var, scope=None):
    import keras

    value = scope.get_current_value(var) if scope is not None else None
    if value is None:
        value = var._initializer(var.shape, var.dtype)
    return keras.ops.convert_to_numpy(value)


def _caffe_shapes(step):
    return [b.shape for n in step.nodes for b in n.layer.blobs]


def _passthrough_keras3(ctx, layout, skip_unknown, report):
    """A converter that sets its own weights (no weights function): its blobs go through
    unchanged when they fit the model's variables exactly."""
    step = ctx.step
    if skip_unknown:
        report.skipped.append(f"{step.node.name} ({step.type})")
        return None
    entry = layout.layers.get(ctx.name)
    blobs = [b for n in step.nodes for b in n.layer.blobs]
    fits = entry is not None and \
        [tuple(entry.shapes[i]) for i in sorted(entry.shapes)] == [tuple(b.shape) for b in blobs]
    if not fits:
        raise CaffeFormatError(
            f"the {step.type} converter registered no weights function, so the Keras layout "
            f"of its {len(blobs)} blobs is unknown; register one with "
            f"caffe2keras.register_weights('{step.type}'), or export keras2-h5/npz",
            path=ctx.graph.net.path, layer=step.node.name)
    report.unknown.append((step.node.name, step.type, "no weights function"))
    return _whole({ctx.name: blobs}, np.float32)


class Keras3Layout:
    """Where each Keras layer's variables go in a .weights.h5 file."""

    def __init__(self, how):
        self.how = how             # "chain" (worked out) or "model" (read from Keras)
        self.layers = {}           # keras layer name -> _Entry
        self.in_model = set()      # names of the plan steps the model holds


class _Entry:
    """One Keras layer's variables: group path ("layers/conv2d_3"), and when read from the
    model, each variable's shape and place (nested sublayers have their own groups)."""

    def __init__(self, path):
        self.path = path
        self.shapes = {}           # variable index -> shape
        self.places = {}           # variable index -> (group path, key)
        self.variables = {}        # variable index -> keras Variable (read from the model)
        self.group_names = {}      # group path -> the name Keras records there

    def place(self, i):
        return self.places.get(i, (self.path, str(i)))


def snake_case(name):
    """Keras's naming.to_snake_case (the key of a layer class in a .weights.h5)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# Built-in converters of these types make no Keras layer of a class that holds weights
# (checked against the converted models in tests/test_export.py).
PLAIN_TYPES = frozenset({
    "AbsVal", "ArgMax", "BNLL", "Clip", "Concat", "Crop", "Dropout", "ELU", "Eltwise", "Exp",
    "Flatten", "LRN", "Log", "MVN", "Permute", "Pooling", "Power", "ReLU", "Reduction",
    "Reshape", "Sigmoid", "Silence", "Slice", "Softmax", "Split", "Swish", "TanH",
    "Threshold", "Tile",
})


def _weighted_classes(step, ctx):
    """[(keras layer name, Keras class name)] of the layers of weight-holding classes the
    built-in converter makes for ``step`` (weights or not), in data-flow order; None when
    not known."""
    from .emit.converters import conv, dense
    from .emit.plan import FUSED_BN_SCALE

    t = step.type
    if t in ("Convolution", *conv.DEPTHWISE_TYPES):
        if len(step.inputs) != 1:
            return None  # one layer shared by several bottoms: depth decides its order
        return [(ctx.name, "DepthwiseConv2D" if conv._is_depthwise(ctx) else "Conv2D")]
    if t == "Deconvolution":
        if len(step.inputs) != 1:
            return None
        p, _, _, _, d = conv._deconv_geometry(ctx)
        plain = p.group == 1 and tuple(d) == (1, 1)
        return [(ctx.name, "Conv2DTranspose" if plain else "GroupedConv2DTranspose")]
    if t == "InnerProduct":
        kind = dense._ip_plan(ctx)[0]
        return [(ctx.name, "EinsumDense" if kind == "einsum" else "Dense")]
    if t in ("BatchNorm", FUSED_BN_SCALE):
        return [(ctx.name, "BatchNormalization")]
    if t == "PReLU":
        return [(ctx.name, "PReLU")]
    if t == "Scale":
        return [(ctx.name, "Scale")]
    if t == "Bias":
        return [(ctx.name, "Bias")]
    if t == "Embed":
        layers = [(ctx.name, "Embedding")]
        if ctx.param("embed_param").bias_term:
            layers.append((dense._embed_bias_name(ctx), "Bias"))
        return layers
    if t in PLAIN_TYPES:
        return []
    from .emit.zoo import WEIGHTED_CLASSES
    if t in WEIGHTED_CLASSES:
        return WEIGHTED_CLASSES[t](ctx)
    return None


def fast_layout(graph: Graph, plan, keep):
    """The .weights.h5 paths without Keras, or None when they could depend on depth.

    Layers of one class are numbered in ``model.layers`` order. An ancestor always comes
    before its descendants there (Keras sorts by longest distance to an output), so when
    all the layers of each weight-holding class lie on one chain of data flow their order
    is the net's order, whatever helper layers the converters add. Only the first input
    of each step counts as a connection (every built-in converter uses it), so each step
    has at most one such parent and the chains are paths up a forest.
    """
    from .emit.context import LayerContext
    from .emit.registry import CONVERTERS, WEIGHTS, load_builtin

    load_builtin()
    producer = {}
    for step in plan:
        for v in step.outputs:
            producer[v] = step
    parent = {}
    for step in plan:
        p = producer.get(step.inputs[0]) if step.inputs else None
        parent[id(step)] = p
    # steps any output depends on (over all inputs), and over first inputs only
    in_model, strong = set(), set()
    stack = [producer[v] for v in keep if v in producer]
    while stack:
        s = stack.pop()
        if id(s) in in_model:
            continue
        in_model.add(id(s))
        stack.extend(producer[v] for v in s.inputs if v in producer)
    for v in keep:
        s = producer.get(v)
        while s is not None and id(s) not in strong:
            strong.add(id(s))
            s = parent[id(s)]

    builtin = ("caffe2keras.emit.converters.", "caffe2keras.emit.zoo.")
    by_class = {}
    for step in plan:
        if id(step) not in in_model:
            continue
        if step.type not in CONVERTERS:
            return None
        if not CONVERTERS[step.type].__module__.startswith(builtin):
            return None
        fn = WEIGHTS.get(step.type)
        if fn is not None and not fn.__module__.startswith(builtin):
            return None
        ctx = LayerContext(step, graph)
        try:
            layers = _weighted_classes(step, ctx)
        except Exception:  # noqa: BLE001 - whatever the table cannot tell, Keras can
            return None
        if layers is None:
            return None
        if layers and id(step) not in strong:
            return None
        for name, cls in layers:
            by_class.setdefault(cls, []).append((step, name))

    def ancestor(a, b):
        s = parent[id(b)]
        while s is not None:
            if s is a:
                return True
            s = parent[id(s)]
        return False

    layout = Keras3Layout("chain")
    layout.in_model = {s.name for s in plan if id(s) in in_model}
    for cls, members in by_class.items():
        for (sa, _), (sb, _) in itertools.pairwise(members):
            if sa is sb or not ancestor(sa, sb):
                return None
        base = snake_case(cls)
        for k, (_, name) in enumerate(members):
            layout.layers[name] = _Entry(f"layers/{base}" + (f"_{k}" if k else ""))
    return layout


def skeleton_layout(graph: Graph, outputs):
    """The .weights.h5 paths read from the converted model, built without weights: its
    variables are created in a Keras StatelessScope, so none is allocated or initialised.
    Keras's own save walk, run on a store that only records, gives every path."""
    from .emit.builder import build_model

    with stateless_variables():
        model = build_model(graph, outputs=outputs, with_weights=False)
    return layout_from_model(graph, outputs, model)


@contextlib.contextmanager
def stateless_variables():
    """Variables created inside are deferred: none is allocated or initialised (their
    ``.value`` is computed from their initializer on demand). Yields the scope, which
    holds the values assigned inside it."""
    import keras
    from keras.src.backend.common import global_state

    pending = global_state.get_global_attribute("uninitialized_variables")
    try:
        with keras.StatelessScope(initialize_variables=False) as scope:
            yield scope
    finally:
        # forget our deferred variables: a later StatelessScope must not allocate them
        global_state.set_global_attribute("uninitialized_variables", pending)


def layout_from_model(graph: Graph, outputs, model):
    """The .weights.h5 paths of ``model`` (the converted model, or one wrapping it), read
    from Keras's own save walk run on a store that only records."""
    import keras
    from keras.src.saving import saving_lib

    from .emit.plan import make_plan, resolve_outputs

    class Recorder(saving_lib.H5IOStore):
        def __init__(self):  # no file: only remember what would be written where
            self.rows = []
            self.where = None

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            self.where = path
            self.name = (metadata or {}).get("name")
            return self

        def __setitem__(self, key, value):
            self.rows.append((self.where, key, value, self.name))

        def close(self):
            pass

    store = Recorder()
    saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="",
                           visited_saveables=set())
    owner = {}
    for lay in model.layers:
        for i, w in enumerate(lay.weights):
            owner.setdefault(id(w), (lay.name, i))
    layout = Keras3Layout("model")
    keep = {graph.final(b) for b in resolve_outputs(graph, outputs)}
    names = {lay.name for lay in model.layers}
    layout.in_model = {s.name for s in make_plan(graph, keep) if s.name in names}
    for where, key, value, group_name in store.rows:
        if not isinstance(value, keras.Variable) or id(value) not in owner:
            raise CaffeFormatError(
                f"internal: the converted model saves a computed value at {where}/{key}, "
                f"which a weights export cannot reproduce", path=graph.net.path)
        name, i = owner[id(value)]
        top = "/".join(where.split("/")[:2])  # layers/<class>[_k]
        entry = layout.layers.setdefault(name, _Entry(top))
        entry.shapes[i] = tuple(value.shape)
        entry.places[i] = (where, key)
        entry.variables[i] = value
        entry.group_names[where] = group_name
    return layout


# ------------------------------------------------------ keras2-h5 (legacy, by name)

def _standard_transforms():
    from .emit.converters.conv import DEPTHWISE_TYPES
    from .emit.plan import FUSED_BN_SCALE

    table = {t: (_k2_conv, _k2_conv_names) for t in ("Convolution", *DEPTHWISE_TYPES)}
    table["Deconvolution"] = (_k2_deconv, lambda ctx, n: ["kernel", "bias"][:n])
    table["InnerProduct"] = (_k2_inner_product, lambda ctx, n: ["kernel", "bias"][:n])
    bn_names = ["gamma", "beta", "moving_mean", "moving_variance"]
    table["BatchNorm"] = (_k2_batch_norm, lambda ctx, n: bn_names)
    table[FUSED_BN_SCALE] = (_k2_batch_norm, lambda ctx, n: bn_names)
    table["PReLU"] = (_k2_prelu, lambda ctx, n: ["alpha"])
    return table


def _in_shape(ctx):
    shapes = ctx.in_shapes
    return shapes[0] if shapes and shapes[0] is not None else None


def _conv_in_channels(ctx):
    """C_in: from the inferred shape, else from the blob and the group count."""
    from .emit.converters.conv import DEPTHWISE_TYPES

    shape = _in_shape(ctx)
    if shape is not None:
        return shape[1]
    p = ctx.param("convolution_param")
    w = ctx.layer.blobs[0]
    if ctx.layer.type in DEPTHWISE_TYPES and p.group == 1:
        return w.shape[0] if w.shape[1] == 1 else w.shape[1]
    return w.shape[1] * p.group


def _conv_groups(ctx):
    from .emit.converters.conv import DEPTHWISE_TYPES

    p = ctx.param("convolution_param")
    if ctx.layer.type in DEPTHWISE_TYPES and p.group == 1:
        return _conv_in_channels(ctx)
    return p.group


def _k2_is_depthwise(ctx):
    c_in = _conv_in_channels(ctx)
    return c_in > 1 and _conv_groups(ctx) == c_in


def _k2_conv(ctx):
    w = ctx.blobs[0]
    if _k2_is_depthwise(ctx):
        # Caffe (C*m, 1, kh, kw), output c*m + j reads input c -> Keras (kh, kw, C, m)
        c_in = _conv_in_channels(ctx)
        kernel = w.reshape(c_in, -1, *w.shape[2:]).transpose(2, 3, 0, 1)
    else:
        kernel = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO; grouped: Conv2D(groups=g)'s own
    return {ctx.name: [kernel, *ctx.blobs[1:2]]}


def _k2_conv_names(ctx, n):
    first = "depthwise_kernel" if _k2_is_depthwise(ctx) else "kernel"
    return [first, "bias"][:n]


def _k2_deconv(ctx):
    """Conv2DTranspose's (kh, kw, C_out, C_in); a grouped Caffe deconvolution becomes the
    equivalent full kernel (zero between groups), as Conv2DTranspose has no groups."""
    w = ctx.blobs[0]                       # (C_in, C_out/g, kh, kw)
    g = ctx.param("convolution_param").group
    if g == 1:
        kernel = w.transpose(2, 3, 1, 0)
    else:
        c_in, co_g = w.shape[:2]
        ci_g = c_in // g
        kernel = np.zeros((*w.shape[2:], co_g * g, c_in), dtype=w.dtype)
        for j in range(g):
            kernel[:, :, j * co_g:(j + 1) * co_g, j * ci_g:(j + 1) * ci_g] = \
                w[j * ci_g:(j + 1) * ci_g].transpose(2, 3, 1, 0)
    return {ctx.name: [kernel, *ctx.blobs[1:2]]}


def _k2_inner_product(ctx):
    """Dense's (in, out). After a 4-D blob (axis 1) Keras's Flatten walks H, W, C while
    Caffe walks C, H, W: the kernel rows are permuted to match."""
    p = ctx.param("inner_product_param")
    w = ctx.blobs[0]
    if p.transpose:  # stored (K, N)
        w = w.T
    n = w.shape[0]
    shape = _in_shape(ctx)
    axis = p.axis
    if shape is not None and axis < 0:
        axis += len(shape)
    if shape is not None and len(shape) == 4 and axis == 1:
        _, c, h, wd = shape
        kernel = w.reshape(n, c, h, wd).transpose(2, 3, 1, 0).reshape(h * wd * c, n)
    else:
        kernel = w.T
    return {ctx.name: [kernel, *(b.reshape(-1) for b in ctx.blobs[1:2])]}


def _k2_batch_norm(ctx):
    """BatchNormalization's gamma, beta, moving mean, moving variance: Caffe's stored sums
    divided by its scale factor (0 -> 0, in float32 as Caffe computes it), gamma and beta
    from the Scale that follows (1 and 0 without one)."""
    mean, var, factor = ctx.blobs[:3]
    f = np.float32(np.asarray(factor).reshape(-1)[0])
    s = np.float32(0) if f == 0 else np.float32(1) / f
    mean = np.asarray(mean, np.float32).reshape(-1) * s
    var = np.asarray(var, np.float32).reshape(-1) * s
    if len(ctx.nodes) > 1:
        sc = ctx.nodes[1].layer.blobs
        gamma = np.asarray(sc[0], np.float32).reshape(-1)
        beta = np.asarray(sc[1], np.float32).reshape(-1) if len(sc) > 1 else \
            np.zeros_like(gamma)
    else:
        gamma, beta = np.ones_like(mean), np.zeros_like(mean)
    return {ctx.name: [gamma, beta, mean, var]}


def _k2_prelu(ctx):
    """PReLU's alpha: input shape[1:] with the shared axes 1 (shared_axes=[1, 2] after a
    conv: (1, 1, C); after a Dense: (C,))."""
    shape = _in_shape(ctx)
    a = np.asarray(ctx.blobs[0]).reshape(-1)
    rank = len(shape)
    if rank == 4:
        alpha = a.reshape(1, 1, a.size)
    else:
        alpha = a.reshape((a.size,) + (1,) * (rank - 2))
    return {ctx.name: [alpha]}


def _needs_shape(step_type):
    return step_type in ("InnerProduct", "PReLU")


def keras_layout_steps(graph: Graph, skip_unknown, report):
    """Yield (step, ctx, result, weight names {name: [names]}) in Keras layout for every
    step with blobs (the keras2-h5 / npz --layout keras arrays); unknown types come back
    with result None after being reported."""
    from .emit.context import LayerContext
    from .emit.plan import make_plan
    from .emit.registry import WEIGHTS, load_builtin

    load_builtin()
    table = _standard_transforms()
    for step in make_plan(graph, keep=()):
        if not any(n.layer.blobs for n in step.nodes):
            continue
        ctx = LayerContext(step, graph)
        known_shapes = all(s is not None for s in ctx.in_shapes)
        fn, names = None, None
        why = ""
        if step.type in table and (known_shapes or not _needs_shape(step.type)):
            fn, namer = table[step.type]
            names = lambda res, namer=namer, ctx=ctx: {
                n: namer(ctx, c) for n, c in res.names}
        elif step.type in WEIGHTS and known_shapes:
            fn = WEIGHTS[step.type]
        elif step.type in table or step.type in WEIGHTS:
            why = "input shape unknown"
        else:
            why = "no weights function"
        if fn is None:
            if skip_unknown:
                report.skipped.append(f"{step.node.name} ({step.type})")
                yield step, ctx, None, None
                continue
            report.unknown.append((step.node.name, step.type, why))
            blobs = [b for n in step.nodes for b in n.layer.blobs]
            result = _whole({step.name: blobs}, None)
            yield step, ctx, result, {step.name: [str(i) for i in range(len(blobs))]}
            continue
        result = compute(fn, ctx)
        if names is None:
            wnames = {n: [str(i) for i in range(c)] for n, c in result.names}
        else:
            wnames = names(result)
        yield step, ctx, result, wnames


def _export_keras2(graph: Graph, path, skip_unknown, report):
    sink = _H5Sink(path)
    layer_names = []
    try:
        root = sink.file
        for step, ctx, result, wnames in keras_layout_steps(graph, skip_unknown, report):
            if result is None:
                continue
            targets = {}
            for name, count in result.names:
                if name in root:
                    raise CaffeFormatError(f"two layers export weights as '{name}'",
                                           path=graph.net.path, layer=step.node.name)
                group = root.create_group(name)
                layer_names.append(name)
                full = [f"{name}/{w}" for w in wnames[name]]
                _set_list_attr(group, "weight_names", full)
                for i in range(count):
                    targets[name, i] = sink.write(group, full[i], result, (name, i))
            _write_result(result, targets)
            for node in step.nodes:
                release(node.layer.blobs)
            report.layer(step.node.name, step.type, _caffe_shapes(step),
                         ", ".join(n for n, _ in result.names),
                         [result.shapes[k] for k in result.array_keys()])
        _set_list_attr(root, "layer_names", layer_names)
        root.attrs["backend"] = b"tensorflow"  # channels-last layouts; never Theano's
        root.attrs["keras_version"] = _keras_version().encode()
    finally:
        sink.close()


def _keras_version():
    try:
        return importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return "3"


# ----------------------------------------------------------------------------- npz

class _NpzSink:
    """A zip of .npy entries (what numpy.savez writes), each streamed in blocks. Entries
    are written one at a time; arrays a step makes alongside a streamed one (its bias)
    are small and wait in memory."""

    def __init__(self, path):
        self.zip = zipfile.ZipFile(path, "x", compression=zipfile.ZIP_STORED,
                                   allowZip64=True)
        self.streaming = None
        self.queue = []

    def write(self, key, shape, dtype, axis):
        return _NpzArray(self, key, shape, np.dtype(dtype), axis)

    def close(self):
        self.zip.close()


class _NpzArray:
    def __init__(self, sink, key, shape, dtype, axis):
        self.sink, self.key, self.shape, self.dtype, self.axis = sink, key, shape, dtype, axis
        self.fortran = axis is not None and axis == len(shape) - 1 and len(shape) > 1
        self.file = None
        self.parts = []

    def _open(self):
        f = self.sink.zip.open(self.key + ".npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype),
                  "fortran_order": self.fortran, "shape": tuple(self.shape)}
        try:
            np.lib.format.write_array_header_1_0(f, header)
        except ValueError:  # header over 64 KB
            np.lib.format.write_array_header_2_0(f, header)
        return f

    def put(self, lo, hi, block):
        block = np.asarray(block, dtype=self.dtype)
        streamable = self.axis in (None, 0) or self.fortran
        if streamable and self.sink.streaming in (None, self):
            if self.file is None:
                self.file = self._open()
                self.sink.streaming = self
            # Fortran order: the last axis varies slowest, so its slabs are contiguous
            data = np.ascontiguousarray(block.T if self.fortran else block)
            self.file.write(memoryview(data).cast("B") if data.size else b"")
        else:
            self.parts.append((lo, hi, block))

    def close(self):
        if self.file is not None:
            self.file.close()
            self.sink.streaming = None
            queued, self.sink.queue = self.sink.queue, []
            for q in queued:
                q.close()
            return
        if self.sink.streaming is not None:
            self.sink.queue.append(self)
            return
        if self.axis is None:
            data = self.parts[0][2] if self.parts else np.zeros(self.shape, self.dtype)
        else:
            data = np.concatenate([p[2] for p in self.parts], axis=self.axis)
        self.parts = []
        with self.sink.zip.open(self.key + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(data), allow_pickle=False)


def _export_npz(graph: Graph, path, layout, skip_unknown, report):
    sink = _NpzSink(path)
    try:
        if layout == "keras":
            for step, ctx, result, _ in keras_layout_steps(graph, skip_unknown, report):
                if result is None:
                    continue
                targets = {(n, i): sink.write(f"{n}/{i}", result.shapes[n, i],
                                              result.dtypes[n, i],
                                              result.axes[n, i])
                           for n, i in result.array_keys()}
                _write_result(result, targets)
                for node in step.nodes:
                    release(node.layer.blobs)
                report.layer(step.node.name, step.type, _caffe_shapes(step),
                             ", ".join(f"{n}/*" for n, _ in result.names),
                             [result.shapes[k] for k in result.array_keys()])
            return
        for node in _caffe_layers(graph, skip_unknown, report):
            for i, blob in enumerate(node.layer.blobs):
                _stream_raw(sink.write(f"{node.name}/{i}", blob.shape, blob.dtype, 0), blob)
            report.layer(node.name, node.type, [b.shape for b in node.layer.blobs],
                         f"{node.name}/*", [b.shape for b in node.layer.blobs])
    finally:
        sink.close()


def _stream_raw(writer, blob):
    """A Caffe blob as stored, in blocks of rows; its pages dropped as they are written."""
    blob = np.asarray(blob)
    if blob.ndim == 0 or blob.nbytes <= BLOCK_BYTES:
        writer.put(0, blob.shape[0] if blob.ndim else 1, blob)
        release([blob])
    else:
        rows = max(1, BLOCK_BYTES * blob.shape[0] // blob.nbytes)
        for lo in range(0, blob.shape[0], rows):
            part = blob[lo:lo + rows]
            writer.put(lo, lo + part.shape[0], part)
            release([part])
    writer.close()


def _caffe_layers(graph: Graph, skip_unknown, report):
    """Graph nodes with blobs (and for skip_unknown, a known Keras layout)."""
    from .emit.registry import WEIGHTS, load_builtin

    load_builtin()
    known = set(_standard_transforms()) | set(WEIGHTS)
    for node in graph.nodes:
        if not node.layer.blobs:
            continue
        if skip_unknown and node.type not in known:
            report.skipped.append(f"{node.name} ({node.type})")
            continue
        yield node


# -------------------------------------------------------------------------- pickle

class _ChunkedWriter:
    """File wrapper for the pickler: large buffers go out in blocks, and the mapped pages
    behind each block are dropped once written."""

    def __init__(self, f):
        self.f = f
        self.sources = {}    # address of a large array's data -> its bytes (uint8 view)

    def write(self, data):
        mv = memoryview(data)
        n = mv.nbytes
        if n <= BLOCK_BYTES:
            return self.f.write(mv)
        mv = mv.cast("B")
        src = self.sources.pop(np.frombuffer(mv, np.uint8, count=1).ctypes.data, None)
        for lo in range(0, n, BLOCK_BYTES):
            self.f.write(mv[lo:lo + BLOCK_BYTES])
            if src is not None:
                release([src[lo:lo + BLOCK_BYTES]])
        return n


_RECONSTRUCT = np.empty(0).__reduce__()[0]   # numpy's own unpickling entry point


class _Pickler(pickle.Pickler):
    """Arrays pickle as numpy pickles them (_reconstruct + raw bytes, so they load as
    ordinary writable arrays), but the bytes go out straight from the mapped file."""

    def __init__(self, writer):
        super().__init__(writer, protocol=5)
        self.writer = writer

    def reducer_override(self, obj):
        if type(obj) is not np.ndarray:
            return NotImplemented
        a = obj if obj.flags.c_contiguous else obj.copy(order="C")  # keeps 0-d arrays 0-d
        if a.nbytes > BLOCK_BYTES:
            self.writer.sources[a.ctypes.data] = a.reshape(-1).view(np.uint8)
        return (_RECONSTRUCT, (np.ndarray, (0,), b"b"),
                (1, a.shape, a.dtype, False, pickle.PickleBuffer(a)))


def _export_pickle(graph: Graph, path, skip_unknown, report):
    from .emit.registry import WEIGHTS, load_builtin

    load_builtin()
    known = set(_standard_transforms()) | set(WEIGHTS)
    layers = []
    for node in graph.nodes:
        blobs = list(node.layer.blobs)
        if blobs and skip_unknown and node.type not in known:
            report.skipped.append(f"{node.name} ({node.type})")
            continue
        layers.append({"name": node.name, "type": node.type,
                       "bottoms": list(node.layer.bottoms), "tops": list(node.layer.tops),
                       "weights": blobs})
        if blobs:
            report.layer(node.name, node.type, [b.shape for b in blobs],
                         f"[{len(layers) - 1}]['weights']",
                         [b.shape for b in blobs])
    with open(path, "xb") as f:
        _Pickler(_ChunkedWriter(f)).dump(layers)


__all__ = [
    "FORMATS",
    "LAYOUTS",
    "PLAIN_TYPES",
    "compute",
    "export_weights",
    "fast_layout",
    "skeleton_layout",
    "snake_case",
]
