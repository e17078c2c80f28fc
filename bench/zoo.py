"""Run a folder of public deploy prototxts through real Caffe and caffe2keras, blob by blob.

usage: .venv/bin/python bench/zoo.py FOLDER [--nets a,b] [--timeout 900] [--backends jax]
                                            [--rerun-caffe] [--markdown OUT.md]

FOLDER holds one sub-folder per net with a ``deploy.prototxt`` and optionally a ``zoo.json``:
    {"input_shape": {"data": [1, 3, 224, 224]},   # override (or supply, for Data layers)
     "input_values": {"im_info": [[224, 224, 1]]},  # fixed input values (else seeded normal)
     "note": "run at 224 instead of 500"}
The prototxts themselves stay out of the repo (their licenses vary).

Per net:
1. Caffe side (pycaffe, run as a subprocess with Debian's python: $ZOO_CAFFE_PYTHON,
   default /usr/bin/python3, with /tmp/caffe-build on the paths): a copy of the net with
   database inputs replaced by Input layers and loss/accuracy layers dropped, seeded
   random weights, one forward pass on a seeded normal input, every blob saved. Weights
   are He-scaled normals; layer by layer (Caffe's own ``_forward(i, i)``) each
   Convolution/InnerProduct/Deconvolution is then rescaled so that its output has unit
   standard deviation on this input, and each BatchNorm gets the mean and variance of the
   blob that reaches it (perturbed, and stored with a scale factor of 2), so that deep
   nets stay finite. Results go to FOLDER/NET/zoo_cache/ and are reused while the
   prototxt, the overrides and this script's CACHE_VERSION are unchanged.
2. caffe2keras side (this venv, one subprocess per Keras backend): ``inspect`` on the
   original prototxt and the weights (no crash; every unsupported layer listed once; a
   note for every Pooling layer whose weights store field 13; a note for duplicate layer
   names), then ``convert(outputs="all")`` on the original prototxt, run on the same input,
   every blob compared with Caffe's.
3. A table: net, layers, types, result (exact / bulk / fails: ... / unsupported: ... /
   caffe can't run: ...), strict and bulk columns, inspect check, backend agreement.

Criteria (issue 10): "exact" = every blob within rtol 1e-4, atol 1e-4*max(1,|ref|max);
"bulk" = in every blob at least 90% of the elements within 1e-3*|ref|max (how deep
random-weight nets are judged: float32 rounding is amplified there).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

CACHE_VERSION = "1"
CAFFE_ROOT = os.environ.get("ZOO_CAFFE_ROOT", "/tmp/caffe-build")
CAFFE_PYTHON = os.environ.get("ZOO_CAFFE_PYTHON", "/usr/bin/python3")
DATA_TYPES = {"Data", "ImageData", "DenseImageData", "HDF5Data", "MemoryData",
              "WindowData", "AnnotatedData", "VideoData", "DummyData"}
# Fork types that are a BVLC Convolution under another name: Caffe runs them as one (with
# group = num_output, or dilation = hole), which checks caffe2keras's converter for them.
SAME_AS_CONV = {"DepthwiseConvolution", "ConvolutionDepthwise", "HoleConvolution"}
DROP_TYPES_RE = re.compile(r"Loss$|^Accuracy$|^DetectionEvaluate$")
SCALED_TYPES = {"Convolution", "InnerProduct", "Deconvolution", "ConvolutionDepthwise",
                "DepthwiseConvolution"}
MAX_SAVED_ELEMENTS = 150_000_000     # beyond this, blobs are sampled (every k-th kept)


def _read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=str)


# --------------------------------------------------------------------------- Caffe side
# Runs under Debian's python with pycaffe; imports nothing from caffe2keras.

def _caffe_net_text(src, cfg):
    """The prototxt Caffe runs: data layers -> Input, losses dropped, shapes overridden."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = caffe_pb2.NetParameter()
    text = _read(src)
    # The Caffe build used here (brocolli-caffe) has the forks' pooling ceil_mode (field 13)
    # instead of BVLC's round_mode: say the same rounding in its words.
    text = re.sub(r"round_mode\s*:\s*FLOOR", "ceil_mode: false", text)
    text = re.sub(r"round_mode\s*:\s*CEIL", "ceil_mode: true", text)
    text = re.sub(r"\bhole\s*:", "dilation:", text)   # HoleConvolution's dilation
    # fork fields this Caffe lacks are skipped; their layers are dropped below
    text_format.Merge(text, net, allow_unknown_field=True)
    shapes = cfg.get("input_shape", {})
    batch = int(cfg.get("batch", 1))   # batch 1 unless zoo.json says otherwise
    for shp in net.input_shape:
        if shp.dim:
            shp.dim[0] = batch
    if net.input_dim:
        for i in range(0, len(net.input_dim), 4):
            net.input_dim[i] = batch
    for lay in list(net.layer) + list(net.layers):
        if getattr(lay, "type", None) == "Input":
            for shp in lay.input_param.shape:
                if shp.dim:
                    shp.dim[0] = batch
    for i, name in enumerate(net.input):
        if name in shapes:
            if len(net.input_shape) > i:
                del net.input_shape[i].dim[:]
                net.input_shape[i].dim.extend(shapes[name])
            elif net.input_dim:
                net.input_dim[4 * i:4 * i + 4] = shapes[name]
    if net.layers and not net.layer:   # V1: upgraded here so data layers can be replaced
        _upgrade_v1(net, caffe_pb2)
    keep, substituted = [], {}
    all_types = [lay.type for lay in net.layer]
    for lay in net.layer:
        if any(r.phase == caffe_pb2.TRAIN for r in lay.include):
            continue
        if DROP_TYPES_RE.search(lay.type):
            continue
        if lay.type in DATA_TYPES:
            top = lay.top[0]
            if top not in shapes:
                raise SystemExit(f"caffe can't run: data layer {lay.name} ({lay.type}) "
                                 f"needs input_shape for '{top}' in zoo.json")
            new = caffe_pb2.LayerParameter(name=lay.name, type="Input", top=[top])
            new.input_param.shape.add().dim.extend(shapes[top])
            keep.append(new)
            continue
        if lay.type in SAME_AS_CONV:   # fork spellings of a grouped/dilated Convolution
            cp = lay.convolution_param
            if lay.type != "HoleConvolution":   # its hole became dilation above
                cp.group = cp.num_output
            substituted[lay.type] = substituted.get(lay.type, 0) + 1
            lay.type = "Convolution"
        if lay.type in REWRITTEN:   # fork layers that are a few BVLC/SSD layers
            replacement = REWRITTEN[lay.type](lay, text, caffe_pb2)
            keep.extend(replacement)
            substituted[lay.type] = substituted.get(lay.type, 0) + 1
            continue
        if lay.type == "Input":
            for j, top in enumerate(lay.top):
                if top in shapes:
                    while len(lay.input_param.shape) <= j:
                        lay.input_param.shape.add()
                    del lay.input_param.shape[j].dim[:]
                    lay.input_param.shape[j].dim.extend(shapes[top])
        keep.append(lay)
    # Layers this Caffe lacks, and everything downstream of them, are left out: Caffe runs
    # the rest and only the blobs it computed are compared.
    import caffe
    known = set(caffe.layer_type_list())
    available, runnable, dropped = set(net.input), [], []
    for lay in keep:
        if lay.type in known and all(b in available for b in lay.bottom):
            runnable.append(lay)
            available.update(lay.top)
        else:   # a type this Caffe lacks (named), or downstream of one ("")
            dropped.append(lay.type if lay.type not in known else "")
            available.difference_update(lay.top)
    del net.layer[:]
    net.layer.extend(runnable)
    return text_format.MessageToString(net), substituted, dropped, all_types



def _param_in_text(text, layer, field):
    """A field of a fork param this Caffe's schema lacks, read from the prototxt text."""
    m = re.search(r"name\s*:\s*[\"']" + re.escape(layer) + r"[\"'](.*?)\n\s*layer\s*\{",
                  text + "\nlayer {", re.DOTALL)
    f = re.search(r"\b" + field + r"\s*:\s*(-?\d+)", m.group(1)) if m else None
    return int(f.group(1)) if f else None


def _shuffle_channel(lay, text, caffe_pb2):
    """ShuffleChannel (group g): (N, C, H, W) -> (N, g, C/g, H, W) -> swap 1, 2 -> back.
    Output channel j*g + i is input channel i*C/g + j, as in Resize_cpu of the fork's
    shuffle_channel_layer.cpp (farmingyard/ShuffleNet @ 0dbecdcafa0652fd9f21cadab3cb92b2c1137f41)."""
    g = _param_in_text(text, lay.name, "group") or 1
    a, b = f"{lay.name}/zoo_split", f"{lay.name}/zoo_swap"
    r1 = caffe_pb2.LayerParameter(name=a, type="Reshape", bottom=[lay.bottom[0]], top=[a])
    r1.reshape_param.shape.dim.extend([g, -1])
    r1.reshape_param.axis, r1.reshape_param.num_axes = 1, 1
    pm = caffe_pb2.LayerParameter(name=b, type="Permute", bottom=[a], top=[b])
    pm.permute_param.order.extend([0, 2, 1, 3, 4])
    r2 = caffe_pb2.LayerParameter(name=lay.name, type="Reshape", bottom=[b], top=[lay.top[0]])
    r2.reshape_param.shape.dim.extend([-1])
    r2.reshape_param.axis, r2.reshape_param.num_axes = 1, 2
    return [r1, pm, r2]


def _axpy(lay, text, caffe_pb2):
    """Axpy (SENet fork): top = a * x + y with bottoms (a, x, y), a of shape (N, C, 1, 1) or
    (N, C), as in Forward_cpu of hujie-frank/SENet src/caffe/layers/axpy_layer.cpp
    @ 577864e84f0a9a640b24a78fd609ff3c90eb46b9: Flatten a to (N, C), Scale x by it along
    axes 0-1, add y."""
    a, x, y = lay.bottom
    fa, ax = f"{lay.name}/zoo_a", f"{lay.name}/zoo_ax"
    fl = caffe_pb2.LayerParameter(name=fa, type="Flatten", bottom=[a], top=[fa])
    sc = caffe_pb2.LayerParameter(name=ax, type="Scale", bottom=[x, fa], top=[ax])
    sc.scale_param.axis = 0
    el = caffe_pb2.LayerParameter(name=lay.name, type="Eltwise", bottom=[ax, y],
                                  top=[lay.top[0]])
    return [fl, sc, el]


REWRITTEN = {"ShuffleChannel": _shuffle_channel, "Axpy": _axpy}
SUBSTITUTES = {"DepthwiseConvolution": "grouped Convolution",
               "ConvolutionDepthwise": "grouped Convolution",
               "HoleConvolution": "dilated Convolution",
               "ShuffleChannel": "Reshape+Permute+Reshape", "Axpy": "Flatten+Scale+Eltwise"}


def _upgrade_v1(net, caffe_pb2):
    """V1 'layers' -> V2 'layer' (type enum -> string, same-named params copied), as
    Caffe's UpgradeV1Net does for the fields deploy nets use."""
    enum = caffe_pb2.V1LayerParameter.LayerType
    names = {"RELU": "ReLU", "TANH": "TanH", "LRN": "LRN", "BNLL": "BNLL", "MVN": "MVN",
             "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "ABSVAL": "AbsVal",
             "ARGMAX": "ArgMax", "PRELU": "PReLU", "SOFTMAX_LOSS": "SoftmaxWithLoss"}
    v2_fields = {f.name for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields}
    for old in net.layers:
        raw = enum.Name(old.type)
        new = net.layer.add(name=old.name, bottom=old.bottom, top=old.top,
                            type=names.get(raw, "".join(w.title() for w in raw.split("_"))))
        new.include.extend(old.include)
        new.exclude.extend(old.exclude)
        for f, v in old.ListFields():
            if f.name.endswith("_param") and f.name in v2_fields:
                getattr(new, f.name).CopyFrom(v)
    del net.layers[:]


def _fill_blobs(layer_type, blobs, rng):
    for j, b in enumerate(blobs):
        shape = b.data.shape
        if layer_type == "PReLU":
            b.data[...] = rng.uniform(0.0, 0.3, shape)
        elif layer_type in ("Scale", "Normalize") and j == 0:
            b.data[...] = rng.uniform(0.5, 1.5, shape)
        elif j == 0 and len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            b.data[...] = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
        else:
            b.data[...] = rng.standard_normal(shape) * 0.1


def _input_values(net, cfg, rng):
    values = cfg.get("input_values", {})
    feed = {}
    for name in net.inputs:
        shape = net.blobs[name].data.shape
        if name in values:
            x = np.asarray(values[name], np.float32).reshape(shape)
        elif name == "rois":   # (R, 5): batch index 0, boxes inside the first input image
            h, w = net.blobs[net.inputs[0]].data.shape[-2:]
            x1 = rng.uniform(0, w / 2, shape[0])
            y1 = rng.uniform(0, h / 2, shape[0])
            x = np.stack([np.zeros(shape[0]), x1, y1, x1 + rng.uniform(8, w / 2, shape[0]),
                          y1 + rng.uniform(8, h / 2, shape[0])], 1).astype(np.float32)
        else:
            x = rng.standard_normal(shape).astype(np.float32)
        feed[name] = x
    return feed


def caffe_side(net_dir, cache, cfg_json):
    """Make weights, run Caffe, save inputs/outputs; print a JSON line of facts."""
    import caffe
    caffe.set_mode_cpu()
    cfg = json.loads(cfg_json)
    text, substituted, dropped, all_types = _caffe_net_text(os.path.join(net_dir, "deploy.prototxt"), cfg)
    run_proto = os.path.join(cache, "caffe_deploy.prototxt")
    with open(run_proto, "w") as f:
        f.write(text)
    caffe.set_random_seed(0)
    net = caffe.Net(run_proto, caffe.TEST)
    rng = np.random.default_rng(int(cfg.get("seed", 0)))
    feed = _input_values(net, cfg, rng)
    for name, x in feed.items():
        net.blobs[name].data[...] = x
    blob_names = list(net._blob_names)
    t0 = time.time()
    for i, layer in enumerate(net.layers):
        tops = [blob_names[k] for k in net._top_ids(i)]
        bottoms = [blob_names[k] for k in net._bottom_ids(i)]
        if layer.type == "BatchNorm" and len(layer.blobs) >= 3:
            x = net.blobs[bottoms[0]].data
            axes = (0,) + tuple(range(2, x.ndim))
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            mean = mean + 0.1 * np.sqrt(var) * rng.standard_normal(mean.shape)
            var = var * rng.uniform(0.8, 1.25, var.shape) + 1e-3
            layer.blobs[0].data[...] = 2.0 * mean
            layer.blobs[1].data[...] = 2.0 * var
            layer.blobs[2].data[...] = 2.0
        elif len(layer.blobs):
            _fill_blobs(layer.type, layer.blobs, rng)
        net._forward(i, i)
        if layer.type in SCALED_TYPES and len(layer.blobs) and not set(tops) & set(bottoms):
            std = float(net.blobs[tops[0]].data.std())
            if np.isfinite(std) and std > 1e-12:
                for b in layer.blobs:
                    b.data[...] /= std
                net._forward(i, i)
    seconds = time.time() - t0
    net.save(os.path.join(cache, "weights.caffemodel"))
    proto = _read(os.path.join(net_dir, "deploy.prototxt"))
    outs = {k: v.data for k, v in net.blobs.items()
            if not re.search(r"_split_\d+$", k) or f'"{k}"' in proto or f"'{k}'" in proto}
    total = sum(v.size for v in outs.values())
    step = max(1, int(np.ceil(total / MAX_SAVED_ELEMENTS)))
    names = list(outs)
    kept = {k for j, k in enumerate(names) if j % step == 0} | set(net.outputs) | set(feed)
    np.savez(os.path.join(cache, "inputs.npz"), **feed)
    np.savez(os.path.join(cache, "outputs.npz"), **{k: outs[k] for k in names if k in kept})
    info = {"layers": len(all_types), "types": sorted(set(all_types)),
            "blobs": len(outs), "saved_blobs": len(kept & set(outs)), "sampled": step > 1,
            "caffe_seconds": round(seconds, 2), "substituted": substituted,
            "dropped": sorted(set(dropped) - {""}), "dropped_layers": len(dropped),
            "inputs": {k: list(v.shape) for k, v in feed.items()},
            "nonfinite": [k for k in names if not np.all(np.isfinite(outs[k]))]}
    print("ZOO-CAFFE " + json.dumps(info))


# ------------------------------------------------------------------ caffe2keras side

def _inspect_check(prototxt, weights, input_shapes):
    """Run `caffe2keras inspect --json` as a user would; check what it must say."""
    cmd = [sys.executable, "-m", "caffe2keras.cli", "inspect", prototxt]
    if weights:
        cmd.append(weights)
    for b, s in input_shapes.items():
        cmd += ["--input-shape", f"{b}={','.join(str(d) for d in s)}"]
    p = subprocess.run(cmd + ["--json"], check=False, capture_output=True, text=True, timeout=600)
    if "Traceback" in p.stderr:
        return {"ok": False, "why": "crash: " + p.stderr.strip().splitlines()[-1][:200]}
    if p.returncode != 0:
        return {"ok": False, "error": p.stderr.strip()[:300], "why": "refused"}
    info = json.loads(p.stdout)
    problems = []
    unsupported = [u["layer"] + "/" + u["type"] for u in info["unsupported"]]
    if len(unsupported) != len(set(unsupported)):
        problems.append("an unsupported layer listed twice")
    listed = {u["type"] for u in info["unsupported"]}
    missing = {lay["type"] for lay in info["layers"] if not lay["supported"]} - listed
    if missing:
        problems.append("unsupported types not listed: " + ",".join(sorted(missing)))
    noted = {n["layer"] for n in info["notes"]}
    if weights:
        from caffe2keras.caffemodel import load_caffemodel
        model = load_caffemodel(weights)
        for lw in model.all_layers:
            if lw.type == "Pooling" and lw.pool_field13 is not None and lw.name not in noted:
                problems.append(f"no rounding note for pooling {lw.name}")
    names = [lay["name"] for lay in info["layers"]]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups and not noted & set(dups):
        problems.append("no note for duplicate names " + ",".join(dups))
    return {"ok": not problems, "why": "; ".join(problems),
            "unsupported": sorted(listed), "notes": len(info["notes"])}


def _compare(ref, got):
    """(strict ok, bulk ok, max err / max(1,|ref|max), fraction within 1e-3*|ref|max)."""
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = np.abs(got - ref)
    if not np.all(np.isfinite(got)):
        return False, False, float("inf"), 0.0
    strict = bool(np.all(err <= 1e-4 * max(1.0, peak) + 1e-4 * np.abs(ref)))
    within = float(np.mean(err <= 1e-3 * peak)) if ref.size else 1.0
    worst = float(err.max() / max(1.0, peak)) if ref.size else 0.0
    return strict, within >= 0.9 or strict, worst, within


def _detection_rows(ref, got):
    """Detection heads: Caffe's top is (1, 1, n, k), one row per detection (n decided by
    the data); the converted model gives a fixed (1, rows, k) block padded with -1. Compare
    Caffe's n rows with the first n rows, and the padding with -1."""
    if (ref.ndim == 4 and ref.shape[:2] == (1, 1) and got.ndim == 3 and got.shape[0] == 1
            and got.shape[2] == ref.shape[3] and got.shape[1] >= ref.shape[2]):
        n, rows = ref.shape[2], got.shape[1]
        want = np.concatenate([ref[0, 0], -np.ones((rows - n, ref.shape[3]), ref.dtype)])
        return want[None], got
    return ref, got


def keras_side(net_dir, cache, cfg_json):
    """Inspect, convert, run, compare with Caffe's blobs; print a JSON line of results."""
    cfg = json.loads(cfg_json)
    prototxt = os.path.join(net_dir, "deploy.prototxt")
    weights = os.path.join(cache, "weights.caffemodel")
    weights = weights if os.path.exists(weights) else None
    shapes = {k: tuple(v) for k, v in cfg.get("input_shape", {}).items()}
    if weights:   # the shapes Caffe ran with (batch 1 unless zoo.json says otherwise)
        with np.load(os.path.join(cache, "inputs.npz")) as f:
            shapes.update({k: tuple(f[k].shape) for k in f.files})
    res = {"inspect": _inspect_check(prototxt, weights, shapes)}
    import keras

    import caffe2keras
    from caffe2keras.graph import load_graph
    from caffe2keras.support import supported_types
    res["backend"] = keras.backend.backend()
    try:
        graph = load_graph(prototxt, weights, input_shapes=shapes or None)
    except Exception as e:   # noqa: BLE001 - every failure becomes a row of the table
        res["result"] = "fails to load: " + str(e).splitlines()[0][:300]
        print("ZOO-KERAS " + json.dumps(res))
        return
    missing = sorted({n.type for n in graph.nodes} - supported_types())
    if weights is None:
        res["result"] = ("unsupported: " + ", ".join(missing) + "; " if missing else "") + \
            "no Caffe weights (Caffe could not run it)"
        print("ZOO-KERAS " + json.dumps(res))
        return
    # Types Caffe could not run have no weights in the caffemodel: cut there too.
    meta_path = os.path.join(cache, "caffe.json")
    caffe_lacks = set(((json.loads(_read(meta_path)).get("info") or {}).get("dropped") or [])
                      if os.path.exists(meta_path) else [])
    convert_from = prototxt
    if missing or caffe_lacks:   # still check the rest: the layers that do not depend on them
        convert_from, kept = _supported_prefix(prototxt, shapes, set(missing) | caffe_lacks,
                                               cache)
        res["prefix_layers"] = kept
    try:
        model = caffe2keras.convert(convert_from, weights, outputs="all",
                                    input_shapes=shapes or None)
        _compare_run(model, cache, res, keras)
    except Exception as e:   # noqa: BLE001
        res["result"] = "convert/run fails: " + str(e).splitlines()[0][:300]
    if missing:
        res["result"] = (f"unsupported: {', '.join(missing)} (the {res['prefix_layers']} "
                         f"layers that do not depend on them: {res['result']})")
    elif caffe_lacks:
        res["result"] = (f"{res['result']} (the {res['prefix_layers']} layers that do not "
                         f"depend on {', '.join(sorted(caffe_lacks))})")
    else:
        finals = {k: v for k, v in res.pop("_out").items() if k in graph.outputs}
        np.savez(os.path.join(cache, f"keras_{res['backend']}.npz"), **finals)
    res.pop("_out", None)
    print("ZOO-KERAS " + json.dumps(res))


def _supported_prefix(prototxt, shapes, missing, cache):
    """The net without the layers of unsupported types and everything downstream of them,
    written as a prototxt next to the cache (caffe2keras's own reader and writer)."""
    import dataclasses

    from caffe2keras.net import load_net
    from caffe2keras.writer import CaffeNetWriter
    net = load_net(prototxt, input_shapes=shapes or None)
    available, kept = set(net.inputs), []
    for lay in net.layers:
        if lay.type not in missing and all(b in available for b in lay.bottoms):
            kept.append(lay)
            available.update(lay.tops)
        else:
            available.difference_update(lay.tops)
    path = os.path.join(cache, "c2k_supported_part.prototxt")
    CaffeNetWriter.from_net(dataclasses.replace(net, layers=kept)).write_prototxt(path)
    return path, len(kept)


def _compare_run(model, cache, res, keras):
    """Run the model on Caffe's input; compare every blob Caffe saved that it outputs."""
    inputs = dict(np.load(os.path.join(cache, "inputs.npz")))
    ref = np.load(os.path.join(cache, "outputs.npz"))
    feed = {k: (v.transpose(0, 2, 3, 1) if v.ndim == 4 else v) for k, v in inputs.items()}
    feed = {k: v for k, v in feed.items() if k in model.input_names} \
        if hasattr(model, "input_names") else feed
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model(feed).items()}
    blobs, worst, strict_all, bulk_all = [], None, True, True
    first_strict = first_bulk = None
    order = {n: i for i, n in enumerate(ref.files)}
    for name in ref.files:
        if name in inputs or name not in out:
            continue
        r = ref[name]
        g = np.asarray(out[name])
        if g.ndim == 4 and r.ndim == 4:
            g = g.transpose(0, 3, 1, 2)
        r, g = _detection_rows(r, g)
        if g.shape != r.shape:
            ok_s = ok_b = False
            err, within = float("inf"), 0.0
        else:
            ok_s, ok_b, err, within = _compare(r, g)
        blobs.append(name)
        if worst is None or err > worst[1]:
            worst = (name, err)
        if not ok_s and first_strict is None:
            first_strict = (name, err, within, list(r.shape), list(g.shape))
        if not ok_b and first_bulk is None:
            first_bulk = (name, err, within, list(r.shape), list(g.shape))
        strict_all &= ok_s
        bulk_all &= ok_b
    ours = [n for n in ref.files if n not in inputs and "/zoo_" not in n]  # not our helpers
    res.update(compared=len(blobs), of=len(ours),
               strict=strict_all, bulk=bulk_all, worst=worst,
               first_strict=first_strict, first_bulk=first_bulk, _out=out)
    if not blobs:
        res["result"] = "nothing to compare"
    elif first_bulk:
        res["result"] = (f"fails: {first_bulk[0]} (blob #{order[first_bulk[0]]}) "
                         f"err {first_bulk[1]:.3g}, {100 * first_bulk[2]:.0f}% within")
    else:
        res["result"] = "exact" if strict_all else "bulk"


# ------------------------------------------------------------------------- driver

def _digest(net_dir, cfg):
    h = hashlib.sha256(_read(os.path.join(net_dir, "deploy.prototxt"), "rb"))
    h.update(json.dumps(cfg, sort_keys=True).encode() + CACHE_VERSION.encode())
    return h.hexdigest()[:16]


def _code_digest():
    """What the caffe2keras side's result depends on: the package's code (after editing
    this script's comparison, pass --rerun-keras)."""
    here = os.path.dirname(os.path.abspath(__file__))
    pkg = os.path.join(here, "..", "caffe2keras")
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(pkg)):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                h.update(f.encode() + _read(os.path.join(root, f), "rb"))
    return h.hexdigest()[:16]


def _last_json(tag, text):
    for line in reversed(text.splitlines()):
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    return None


def _caffe_failure(text):
    """The line of Caffe's log that says why it stopped."""
    for pat in (r"Unknown layer type: \S+", r"Check failed: .*", r"Error parsing text.*",
                r"caffe can't run: .*", r"\w+Error: .*"):
        m = re.findall(pat, text)
        if m:
            return m[-1][:200]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def run_net(folder, net, args):
    net_dir = os.path.join(folder, net)
    cfg_path = os.path.join(net_dir, "zoo.json")
    cfg = json.loads(_read(cfg_path)) if os.path.exists(cfg_path) else {}
    cache = os.path.join(net_dir, "zoo_cache")
    os.makedirs(cache, exist_ok=True)
    digest = _digest(net_dir, cfg)
    meta_path = os.path.join(cache, "caffe.json")
    meta = json.loads(_read(meta_path)) if os.path.exists(meta_path) else {}
    row = {"net": net, "note": cfg.get("note", "")}
    if args.rerun_caffe or meta.get("digest") != digest:
        for f in ("weights.caffemodel", "outputs.npz", "inputs.npz"):
            if os.path.exists(os.path.join(cache, f)):
                os.remove(os.path.join(cache, f))
        env = dict(os.environ, PYTHONPATH=os.path.join(CAFFE_ROOT, "src/python"),
                   LD_LIBRARY_PATH=os.path.join(CAFFE_ROOT, "libs"), GLOG_minloglevel="2")
        t0 = time.time()
        try:
            p = subprocess.run([CAFFE_PYTHON, os.path.abspath(__file__), "--caffe-side",
                                net_dir, cache, json.dumps(cfg)], env=env, check=False,
                               capture_output=True, text=True, timeout=args.timeout)
            info = _last_json("ZOO-CAFFE", p.stdout)
            meta = {"digest": digest, "ok": info is not None, "info": info,
                    "why": None if info else _caffe_failure(p.stderr + p.stdout)}
        except subprocess.TimeoutExpired:
            meta = {"digest": digest, "ok": False, "info": None,
                    "why": f"timeout after {args.timeout} s"}
        meta["wall"] = round(time.time() - t0, 1)
        _write_json(meta_path, meta)
    row["caffe"] = meta
    row["keras"] = {}
    code = _code_digest()
    for backend in args.backends:
        done_path = os.path.join(cache, f"keras_{backend}.json")
        done = json.loads(_read(done_path)) if os.path.exists(done_path) else {}
        if not args.rerun_keras and done.get("key") == [digest, code]:
            row["keras"][backend] = done["result"]
            continue
        env = dict(os.environ, KERAS_BACKEND=backend)
        try:
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--keras-side",
                                net_dir, cache, json.dumps(cfg)], env=env, check=False,
                               capture_output=True, text=True, timeout=args.timeout)
            res = _last_json("ZOO-KERAS", p.stdout) or {
                "result": "crash: " + _caffe_failure(p.stderr)}
        except subprocess.TimeoutExpired:
            res = {"result": f"timeout after {args.timeout} s"}
        row["keras"][backend] = res
        _write_json(done_path, {"key": [digest, code], "result": res})
    row["agreement"] = _agreement(cache)
    return row


def _agreement(cache):
    """Largest difference between the net outputs of the Keras backends run so far on this
    net (this run or earlier ones), relative to max(1, |output|max); None for one backend."""
    files = sorted(f for f in os.listdir(cache) if f.startswith("keras_") and f.endswith(".npz"))
    if len(files) < 2:
        return None
    loaded = [np.load(os.path.join(cache, f)) for f in files]
    worst = 0.0
    for a in loaded[1:]:
        b = loaded[0]
        for k in a.files:
            if k in b.files and a[k].shape == b[k].shape and a[k].size:
                peak = max(1.0, float(np.max(np.abs(b[k]))))
                worst = max(worst, float(np.max(np.abs(a[k] - b[k]))) / peak)
    return {"backends": [f[6:-4] for f in files], "max_rel_diff": worst}


def _types_of(folder, net):
    """Layer types as written in the prototxt (V1 enums included), without Caffe."""
    text = _read(os.path.join(folder, net, "deploy.prototxt"))
    text = re.sub(r"#.*", "", text)
    found = re.findall(r"\btype\s*:\s*\"?'?([A-Za-z0-9_]+)", text)
    return [t for t in found if not t.islower()]   # fillers' types are lower case


def format_row(row, backends):
    c = row["caffe"]
    info = c.get("info") or {}
    main = row["keras"].get(backends[0], {})
    result = main.get("result", "?")
    if not c.get("ok") and not result.startswith(("unsupported", "fails to load")):
        result = "caffe can't run: " + (c.get("why") or "?")
    elif not c.get("ok"):
        result += f" (and caffe can't run: {c.get('why')})"
    if info.get("dropped") and c.get("ok"):
        result += (f" [Caffe lacks {', '.join(info['dropped'])}: ran without it and the "
                   f"{info['dropped_layers']} layer(s) from it on, not compared]")
    if info.get("substituted"):
        result += " [Caffe ran " + ", ".join(
            f"{n} {t} as {SUBSTITUTES.get(t, 'BVLC layers')}"
            for t, n in info["substituted"].items()) + "]"
    if info.get("nonfinite"):
        result += f" [caffe: {len(info['nonfinite'])} non-finite blobs]"
    layer_types = info.get("types") or sorted(set(row["types"]))
    n_layers = info.get("layers") or len(row["types"])
    strict = "yes" if main.get("strict") else ("no" if "strict" in main else "-")
    bulk = "yes" if main.get("bulk") else ("no" if "bulk" in main else "-")
    worst = main.get("worst")
    worst = f"{worst[1]:.1e}" if worst else "-"
    compared = f"{main['compared']}/{main['of']}" if "compared" in main else "-"
    insp = main.get("inspect", {})
    insp = "ok" if insp.get("ok") else ("-" if not insp else "NO: " + insp.get("why", ""))
    agree = row.get("agreement")
    agree = "-" if not agree else f"{agree['max_rel_diff']:.1e} ({'/'.join(agree['backends'])})"
    inp = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in info.get("inputs", {}).items())
    return (f"| {row['net']} | {n_layers} | {len(layer_types)} | {inp or '-'} | {result} | "
            f"{strict} | {bulk} | {worst} | {compared} | {agree} | {insp} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--nets", help="comma-separated sub-folder names (default: all)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per net and side")
    ap.add_argument("--backends", default="jax",
                    help="Keras backends, comma-separated; the first decides the result "
                         "column, two give the agreement column")
    ap.add_argument("--rerun-caffe", action="store_true", help="ignore cached Caffe runs")
    ap.add_argument("--rerun-keras", action="store_true",
                    help="ignore cached caffe2keras results (reused while the code in "
                         "caffe2keras/ is unchanged; pass this after editing zoo.py)")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--json", help="also write every row's details to this JSON file")
    args = ap.parse_args(argv)
    args.backends = args.backends.split(",")
    nets = sorted(d for d in os.listdir(args.folder)
                  if os.path.exists(os.path.join(args.folder, d, "deploy.prototxt")))
    if args.nets:
        wanted = args.nets.split(",")
        nets = [n for n in nets if n in wanted]
    head = ("| net | layers | types | input | result | exact | bulk | worst err | blobs | "
            "backends agree | inspect |\n|" + "---|" * 11)
    print(head, flush=True)
    lines, rows = [head], []
    for net in nets:
        try:
            row = run_net(args.folder, net, args)
        except Exception as e:   # noqa: BLE001 - one net never stops the table
            row = {"net": net, "caffe": {"ok": False, "why": f"zoo.py: {e}"}, "keras": {}}
        row["types"] = _types_of(args.folder, net)
        line = format_row(row, args.backends)
        print(line, flush=True)
        lines.append(line)
        rows.append(row)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    if args.json:
        _write_json(args.json, rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--caffe-side":
        caffe_side(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--keras-side":
        keras_side(*sys.argv[2:5])
    else:
        main()
