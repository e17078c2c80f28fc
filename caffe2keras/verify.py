"""Check a converted model blob by blob against a Caffe runtime.

References: OpenCV's dnn module (``cv2.dnn.readNetFromCaffe``, opencv-python-headless
< 5; OpenCV 5 dropped the Caffe importer), pycaffe (in this Python, or another one given
as ``caffe_python``), or a .npz of blobs dumped from Caffe (``caffe2keras dump-reference``).

OpenCV is not Caffe. Run with layer fusion and Winograd off (fused-away blobs come back as
garbage otherwise) it matches Caffe on the conformance suite except where its importer
deviates; those deviations are named per net (``opencv_deviations``) and the blobs they
reach are reported as such, not as conversion errors.

    report = verify("deploy.prototxt", "net.caffemodel", input="cat.jpg", reference="opencv",
                    preprocessor=Preprocessor.from_net("deploy.prototxt", mean=[104, 117, 123]))
    print(format_table(report)); report.ok
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .criterion import ATOL, RTOL, blob_errors  # noqa: F401  (the one criterion)
from .errors import CaffeFormatError
from .layout import to_caffe, to_keras
from .verify_report import format_table, summary, write_report  # noqa: F401  (API)

# Layer types OpenCV's Caffe importer cannot create (it fails on the whole net).
OPENCV_MISSING_TYPES = {"Threshold", "ArgMax", "Bias"}


class ReferenceUnavailable(RuntimeError):
    """The chosen reference cannot run this net here (not installed, or lacks a layer)."""


# --- results --------------------------------------------------------------------------

@dataclass
class BlobCheck:
    blob: str
    layer: str            # Caffe layer that wrote the blob last ("" for inputs)
    layer_type: str
    shape: tuple          # ours, Caffe layout
    ref_shape: tuple | None = None
    ref_max: float = 0.0
    max_abs: float | None = None
    max_rel: float | None = None
    status: str = "ok"    # ok | FAIL | deviation | missing | input
    note: str = ""


@dataclass
class VerifyReport:
    net: str
    reference: str
    input_desc: str
    checks: list = field(default_factory=list)
    deviations: dict = field(default_factory=dict)   # layer name -> reason
    notes: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)      # net output blob -> (ours, reference)
    subject: str = "our Keras model"

    @property
    def failed(self):
        return [c for c in self.checks if c.status in ("FAIL", "missing")]

    @property
    def ok(self):
        return not self.failed

    def counts(self):
        out = {}
        for c in self.checks:
            out[c.status] = out.get(c.status, 0) + 1
        return out


# --- inputs ---------------------------------------------------------------------------

def make_feed(graph, input=None, preprocessor=None, seed=0, reference_blobs=None):
    """The Caffe input blobs (NCHW float32) and a description. ``input``: None (random
    normal, or the input blobs a reference file holds), an image path/array (through
    ``preprocessor``), or a .npz of input blobs. Also returns the raw image (RGB pixels at
    the input size) when preprocessing ran, for a model with preprocessing layers."""
    shapes = {b: graph.values[b].shape for b in graph.inputs}
    raw = None
    if input is None and reference_blobs is not None and all(b in reference_blobs
                                                              for b in shapes):
        feed = {b: np.asarray(reference_blobs[b], np.float32) for b in shapes}
        return feed, "the input blobs stored in the reference file", None
    if input is None:
        rng = np.random.default_rng(seed)
        feed = {b: rng.standard_normal(s).astype(np.float32) for b, s in shapes.items()}
        return feed, f"random normal input (std 1, seed {seed})", None
    if isinstance(input, (str, os.PathLike)) and str(input).endswith(".npz"):
        data = np.load(input)
        missing = [b for b in shapes if b not in data.files]
        if missing:
            raise CaffeFormatError(f"holds no blob for net input(s) {missing} (has "
                                   f"{data.files})", path=input)
        feed = {b: np.asarray(data[b], np.float32) for b in shapes}
        for b, s in shapes.items():
            if feed[b].shape[1:] != tuple(s[1:]):
                raise CaffeFormatError(f"blob '{b}' has shape {list(feed[b].shape)}, the net "
                                       f"takes {list(s)} (NCHW)", path=input)
        return feed, f"input blobs from {input}", None
    if preprocessor is None:
        from .preprocess import Preprocessor
        preprocessor = Preprocessor.from_net(graph.net.path)
    raw = preprocessor.load(input)[None]
    feed = {preprocessor.input_name: preprocessor.normalize(raw[0])[None]}
    rng = np.random.default_rng(seed)
    for b, s in shapes.items():
        if b not in feed:
            feed[b] = rng.standard_normal(s).astype(np.float32)
    name = input if isinstance(input, (str, os.PathLike)) else "the image"
    return feed, f"{name}, preprocessed: " + "; ".join(preprocessor.describe()), raw


# --- our side -------------------------------------------------------------------------

def run_ours(model, feed, raw=None, preprocessor=None):
    """Every output of ``model`` (convert(..., outputs="all"), maybe preprocessing-wrapped)
    in Caffe layout."""
    x = {b: to_keras(v) for b, v in feed.items()}
    if raw is not None and preprocessor is not None:
        x[preprocessor.input_name] = raw
    if not isinstance(model.input, dict) or not isinstance(model.output, dict):
        raise TypeError("verify needs a model from caffe2keras.convert(): inputs and "
                         "outputs keyed by Caffe blob names")
    from keras import ops

    out = model(x)
    return {k: to_caffe(ops.convert_to_numpy(v)) for k, v in out.items()}


def run_artifact(artifact, feed, raw=None, preprocessor=None):
    """An exported artifact's outputs (Caffe layout) on ``feed``; the input blobs as fed
    (an artifact does not output them)."""
    x = {b: to_keras(v) for b, v in feed.items()}
    if raw is not None and preprocessor is not None:
        x[preprocessor.input_name] = np.asarray(raw, np.float32)
    out = {k: to_caffe(v) for k, v in artifact.run(x).items()}
    for b, v in feed.items():
        out.setdefault(b, v)
    return out


# --- references -----------------------------------------------------------------------

def opencv_deviations(graph):
    """{Caffe layer name: why OpenCV's result differs from Caffe's} for this net."""
    out = {}
    for node in graph.nodes:
        lay = node.layer
        if lay.type == "LRN":
            p = lay.param("lrn_param")
            if p.norm_region in ("ACROSS_CHANNELS", 0) and p.k != 1:
                out[lay.name] = f"OpenCV's LRN ignores k (Caffe's k is {p.k:g}, OpenCV uses 1)"
        elif lay.type == "InnerProduct" and lay.param("inner_product_param").transpose:
            out[lay.name] = "OpenCV's InnerProduct ignores transpose: true"
    return out


def _opencv():
    try:
        import cv2
    except ImportError:
        raise ReferenceUnavailable(
            "OpenCV is not installed: pip install 'caffe2keras[opencv]' "
            "(opencv-python-headless<5)") from None
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise ReferenceUnavailable(
            f"OpenCV {cv2.__version__} has no Caffe importer (OpenCV 5 removed it): "
            f"pip install 'opencv-python-headless>=4.8,<5'")
    return cv2


def run_opencv(graph, prototxt, caffemodel, feed):
    """Every blob of the net as OpenCV's Caffe runtime computes it (Caffe layout)."""
    cv2 = _opencv()
    missing = [(n.name, n.type) for n in graph.nodes if n.type in OPENCV_MISSING_TYPES]
    if missing:
        listing = ", ".join(f"'{n}' ({t})" for n, t in missing)
        raise ReferenceUnavailable(
            f"OpenCV's Caffe importer has no {', '.join(sorted({t for _, t in missing}))} "
            f"layer (this net has {listing}); use --reference pycaffe or a file from "
            f"`caffe2keras dump-reference`")
    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        net.enableFusion(False)          # fused-away layers' blobs would be garbage
        if hasattr(net, "enableWinograd"):
            net.enableWinograd(False)    # Winograd 3x3 convolutions are ~1e-3 off
        for name, arr in feed.items():
            net.setInput(np.ascontiguousarray(arr, np.float32), name)
        wanted = {}
        for blob in graph.blob_names():
            producer = graph.values[graph.final(blob)].producer
            if producer is not None:
                wanted[blob] = (producer.name, producer.outputs.index(graph.final(blob)))
        layers = list(dict.fromkeys(name for name, _ in wanted.values()))
        multi = {n.name for n in graph.nodes if len(n.outputs) > 1}
        single = [name for name in layers if name not in multi]
        # OpenCV reuses the memory of a multi-output layer's later tops once their
        # consumers ran, even when asked for them: fetch each such layer on its own run.
        by_layer = dict(zip(single, net.forwardAndRetrieve(single))) if single else {}
        for name in layers:
            if name in multi:
                by_layer[name] = net.forwardAndRetrieve([name])[0]
    except cv2.error as e:
        msg = str(e).strip().splitlines()[-1]
        m = re.search(r"Can't create layer \"([^\"]*)\" of type \"([^\"]*)\"", msg)
        if m:
            raise ReferenceUnavailable(
                f"OpenCV's Caffe importer cannot create layer '{m.group(1)}' of type "
                f"{m.group(2)}; use --reference pycaffe or a dumped file") from None
        raise ReferenceUnavailable(f"OpenCV failed on this net: {msg}") from None
    result = {b: np.asarray(v, np.float32) for b, v in feed.items()}
    for blob, (layer, i) in wanted.items():
        got = by_layer.get(layer)
        if got is not None and i < len(got):
            result[blob] = np.asarray(got[i])
    return result


PYCAFFE_SCRIPT = r'''
import os, re, sys
os.environ.setdefault("GLOG_minloglevel", "2")
import numpy as np
import caffe
caffe.set_mode_cpu()
deploy, weights, inputs, out = sys.argv[1:5]
net = caffe.Net(deploy, caffe.TEST, weights=weights)
feed = np.load(inputs)
for name in feed.files:
    net.blobs[name].reshape(*feed[name].shape)
    net.blobs[name].data[...] = feed[name]
net.reshape()
net.forward()
np.savez(out, **{k: v.data for k, v in net.blobs.items() if not re.search(r"_split_\d+$", k)})
'''


def _pycaffe_importable():
    try:
        import caffe  # noqa: F401
    except ImportError:
        return False
    return True


def run_pycaffe(prototxt, caffemodel, feed, python=None):
    """Every blob after ``net.forward()`` in real Caffe, via pycaffe: in this Python if it
    imports ``caffe``, else in ``python`` (an interpreter that does; its environment is
    ours, so set PYTHONPATH/LD_LIBRARY_PATH for it)."""
    if python is None and not _pycaffe_importable():
        raise ReferenceUnavailable(
            "pycaffe is not importable in this Python; give --caffe-python PYTHON (one that "
            "can `import caffe`), or run `caffe2keras dump-reference` where Caffe is "
            "installed and pass the file with --reference FILE.npz")
    with tempfile.TemporaryDirectory(prefix="caffe2keras-ref-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        out = Path(tmp) / "blobs.npz"
        np.savez(inputs, **feed)
        cmd = [python or sys.executable, "-c", PYCAFFE_SCRIPT, str(prototxt),
               str(caffemodel), str(inputs), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ReferenceUnavailable(f"pycaffe ({cmd[0]}) failed: {' | '.join(tail)}")
        with np.load(out) as data:
            return {k: data[k] for k in data.files}


def load_reference_file(path):
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise CaffeFormatError("no such reference file", path=path) from None
    except (OSError, ValueError) as e:
        raise CaffeFormatError(f"cannot read as a .npz of blobs: {e}", path=path) from None


# --- comparing ------------------------------------------------------------------------

def _detections(a):
    """Valid rows of a DetectionOutput blob: Caffe (1, 1, n, 7), OpenCV (1, 1, keep_top_k,
    7) zero-padded, ours (batch, rows, 7) -1-padded."""
    rows = np.asarray(a).reshape(-1, 7)
    return rows[(rows[:, 0] >= 0) & (rows[:, 2] > 0)]


# Layers whose rows the converted model pads to a fixed count (-1 rows) where Caffe's
# blob holds only the valid ones: compared on their valid rows.
_DETECTION_ROWS = {"DetectionOutput", "YoloDetectionOutput", "Yolov3DetectionOutput"}


def _proposals(a, width):
    """Valid rows of a Proposal top: rois (rows, 5) with image >= 0, or scores (>= 0)."""
    rows = np.asarray(a).reshape(-1, width)
    return rows[rows[:, 0] >= 0] if width == 5 else rows[rows[:, 0] >= 0].reshape(-1)


def _tainted(graph, deviations):
    """Value ids that a deviating layer computes or feeds."""
    bad = set()
    for node in graph.nodes:
        if node.name in deviations or any(v in bad for v in node.inputs):
            bad.update(node.outputs)
    return bad


def _origin(graph, deviations, blob):
    """The first deviating layer upstream of ``blob``'s final value."""
    vid = graph.final(blob)
    seen, stack = set(), [vid]
    found = []
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        node = graph.values[v].producer
        if node is None:
            continue
        if node.name in deviations:
            found.append(node.name)
        stack.extend(node.inputs)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return min(found, key=order.get) if found else None


def compare(graph, ours, ref, deviations=None):
    """BlobChecks for every blob of the net, in graph order."""
    deviations = deviations or {}
    tainted = _tainted(graph, deviations)
    order = list(graph.inputs)
    for node in graph.nodes:
        order += [graph.values[v].blob for v in node.outputs]
    blobs = [b for b in dict.fromkeys(order) if b in graph.versions]
    checks = []
    for blob in blobs:
        producer = graph.values[graph.final(blob)].producer
        c = BlobCheck(blob, producer.name if producer else "",
                      producer.type if producer else "Input", ())
        checks.append(c)
        if blob not in ours:
            c.status, c.note = "missing", "not an output of the converted model"
            continue
        got = ours[blob]
        c.shape = tuple(got.shape)
        if blob not in ref:
            c.status, c.note = "missing", "the reference has no such blob"
            continue
        r = np.asarray(ref[blob])
        c.ref_shape = tuple(r.shape)
        if producer is not None and producer.type in _DETECTION_ROWS | {"Proposal"}:
            if producer.type == "Proposal":
                width = 5 if np.ndim(r) > 1 and np.shape(r)[-1] == 5 else 1
                got, r = _proposals(got, width), _proposals(r, width)
            else:
                got, r = _detections(got), _detections(r)
            c.note = f"{len(r)} detections compared"
            if got.shape != r.shape:
                c.status = "FAIL"
                c.note = f"{len(got)} detections, the reference has {len(r)}"
                continue
        elif got.shape != r.shape:
            if got.size == r.size and r.shape[0] == got.shape[0]:
                r = r.reshape(got.shape)   # OpenCV drops or adds unit axes
                c.note = f"reference shape {list(c.ref_shape)} reshaped"
            else:
                c.status = "FAIL"
                c.note = f"shape {list(got.shape)}, the reference has {list(r.shape)}"
                if graph.final(blob) in tainted:
                    c.status = "deviation"
                    c.note += f" (reference deviates: {deviations[_origin(graph, deviations, blob)]})"
                continue
        c.ref_max = float(np.abs(r).max()) if r.size else 0.0
        c.max_abs, c.max_rel, ok = blob_errors(got, r)
        if producer is None:
            c.status = "input" if ok else "FAIL"
            if not ok:
                c.note = "the model's preprocessing layers disagree with the numpy pipeline"
            continue
        if ok:
            c.status = "ok"
        elif graph.final(blob) in tainted:
            origin = _origin(graph, deviations, blob)
            c.status = "deviation"
            c.note = (f"layer '{origin}': {deviations[origin]}" if origin == producer.name
                      else f"downstream of layer '{origin}'")
        else:
            c.status = "FAIL"
    return checks


# --- the whole check ------------------------------------------------------------------

def verify(prototxt, caffemodel, input=None, reference="opencv", preprocessor=None,
           input_shapes=None, seed=0, model=None, caffe_python=None, against=None,
           against_takes_image=False):
    """Run the converted model and a reference on the same input; compare every blob.

    reference:    "opencv", "pycaffe", or a .npz path of Caffe blobs (NCHW).
    input:        None, an image (preprocessed with ``preprocessor``), or a .npz of inputs.
    model:        a model from convert(..., outputs="all") to check instead of converting
                  (it may carry preprocessing layers from ``preprocessor.wrap``).
    against:      an exported artifact (.onnx, .tflite, SavedModel folder, .keras) to check
                  instead, run in its own runtime; only the blobs it outputs are compared.
    against_takes_image: the artifact was exported with preprocessing layers: feed it the
                  image (RGB pixels at the input size), not the preprocessed blob.
    """
    import warnings

    from .graph import load_graph

    if caffemodel is None:
        raise CaffeFormatError("verify needs the .caffemodel: both sides must use the "
                               "same weights", path=prototxt)
    graph = load_graph(prototxt, caffemodel, input_shapes=input_shapes)
    ref_blobs = None
    if reference not in ("opencv", "pycaffe"):
        ref_blobs = load_reference_file(reference)
    feed, input_desc, raw = make_feed(graph, input, preprocessor, seed, ref_blobs)
    artifact = None
    if against is not None:
        from .deploy.runtime import load_artifact
        artifact = load_artifact(against)
    elif model is None:
        from .emit.builder import build_model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(graph, outputs="all", with_weights=True)
    if artifact is not None:
        wrapped = raw is not None and preprocessor is not None and against_takes_image
        ours = run_artifact(artifact, feed, raw if wrapped else None, preprocessor)
    else:
        wrapped = raw is not None and preprocessor is not None and _has_preprocessing(model)
        ours = run_ours(model, feed, raw if wrapped else None, preprocessor)
    deviations = {}
    if reference == "opencv":
        ref = run_opencv(graph, prototxt, caffemodel, feed)
        deviations = opencv_deviations(graph)
        ref_name = f"OpenCV {_opencv().__version__} dnn (Caffe importer; fusion and " \
                   f"Winograd off)"
    elif reference == "pycaffe":
        ref = run_pycaffe(prototxt, caffemodel, feed, caffe_python)
        ref_name = "pycaffe (real Caffe)"
    else:
        ref = ref_blobs
        ref_name = f"blobs in {reference}"
        bad = [b for b in graph.inputs if b in ref and (
            ref[b].shape != feed[b].shape or not np.allclose(ref[b], feed[b], 1e-5, 1e-5))]
        if bad:
            raise CaffeFormatError(
                f"input blob(s) {bad} differ from the input the reference was computed "
                f"on; give that input with --input (or leave --input out to use it)",
                path=reference)
    checks = compare(graph, ours, ref, deviations)
    if artifact is not None:  # an artifact holds the blobs it was exported with
        checks = [c for c in checks if c.blob in ours]
    report = VerifyReport(graph.net.name or Path(prototxt).stem, ref_name, input_desc,
                          checks, deviations)
    if artifact is not None:
        report.subject = f"{against} in {artifact.runtime}"
    report.outputs = {b: (ours[b], np.asarray(ref[b])) for b in graph.outputs
                      if b in ours and b in ref}
    if wrapped:
        report.notes.append("the converted model includes the preprocessing layers; its "
                            "input blob is checked against the numpy pipeline")
    return report


def _has_preprocessing(model):
    from .emit.layers.preprocess import ChannelReorder, MeanSubtraction
    return any(isinstance(layer, (ChannelReorder, MeanSubtraction)) or
               layer.name.endswith(("_raw_scale", "_input_scale")) for layer in model.layers)
