"""Deployment formats: export time and artifact size for open_nsfw and VGG16, and the
latency of open_nsfw in each format's runtime.

    python bench/bench_deploy.py [--models open_nsfw,vgg16] [--formats onnx,tflite,...]
                                 [--runs 20] [--json out.json]

open_nsfw comes from ../shared/caffe-models/open_nsfw (or CAFFE2KERAS_SHARED); VGG16 is
bench/out/vgg16.caffemodel (553 MB, VGG16's layer shapes, random weights; written by
bench_read.py's generator on first use). Each export runs in a fresh process with
KERAS_BACKEND=tensorflow (the backend deployment exports are traced on) and times
caffe2keras.export_model() alone: read, build, trace, convert, write; the imports are
done before the clock starts. Latency: batch 1, the artifact loaded in its runtime
(onnxruntime CPU, LiteRT interpreter with its default XNNPACK delegate, TensorFlow's
SavedModel signature), 3 warm-up runs, then the median of --runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "deploy"
SHARED = Path(os.environ.get("CAFFE2KERAS_SHARED", ROOT.parent / "shared"))
SUFFIX = {"keras": ".keras", "onnx": ".onnx", "tflite": ".tflite", "saved_model": ""}

CHILD = r'''
import json, os, sys, time
import numpy as np
import keras, tensorflow  # noqa: F401  (imports are not part of the export time)
import tf2onnx, onnx  # noqa: F401
import caffe2keras
from caffe2keras.deploy import export_model
from caffe2keras.deploy.runtime import artifact_bytes, load_artifact
deploy, weights, out, fmt, runs = sys.argv[1:6]
runs = int(runs)
t0 = time.perf_counter()
export_model(deploy, weights, out, format=fmt)
t1 = time.perf_counter()
import resource
result = {"export_s": t1 - t0, "bytes": artifact_bytes(out),
          "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
if runs:
    art = load_artifact(out)
    name = art.inputs[0]
    from caffe2keras.graph import load_graph
    g = load_graph(deploy)
    shape = g.values[g.inputs[0]].shape
    x = np.random.default_rng(0).standard_normal((1, shape[2], shape[3], shape[1]))
    feed = {g.inputs[0]: x.astype(np.float32)}
    for _ in range(3):
        art.run(feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        art.run(feed)
        times.append(time.perf_counter() - t)
    result["latency_s"] = float(np.median(times))
    result["runtime"] = art.runtime
print("RESULT " + json.dumps(result))
'''


def models():
    nsfw = SHARED / "caffe-models" / "open_nsfw"
    out = {"open_nsfw": (nsfw / "deploy.prototxt", nsfw / "resnet_50_1by2_nsfw.caffemodel")}
    sys.path.insert(0, str(HERE))
    from bench_read import DEPLOY, MODEL, ensure_files
    out["vgg16"] = (DEPLOY, MODEL, ensure_files)
    return out


def run_one(deploy, weights, fmt, runs):
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"{Path(weights).stem}{SUFFIX[fmt]}"
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(deploy), str(weights), str(out),
                           fmt, str(runs)], capture_output=True, text=True, env=env,
                          check=False, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    if proc.returncode < 0:
        return {"failed": f"killed by signal {-proc.returncode}"}
    raise RuntimeError(f"{fmt} export failed: {proc.stderr[-1500:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="open_nsfw,vgg16")
    ap.add_argument("--formats", default="keras,onnx,tflite,saved_model")
    ap.add_argument("--runs", type=int, default=20, help="latency runs (open_nsfw)")
    ap.add_argument("--json")
    args = ap.parse_args()
    table = models()
    results = []
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name in args.models.split(","):
        entry = table[name]
        if len(entry) == 3:
            entry[2]()
        deploy, weights = entry[:2]
        size = Path(weights).stat().st_size
        for fmt in args.formats.split(","):
            r = run_one(deploy, weights, fmt, args.runs if name == "open_nsfw" else 0)
            r.update(model=name, format=fmt, caffemodel_bytes=size)
            results.append(r)
            if "failed" in r:
                print(f"{name:10s} {fmt:12s} {r['failed']} (out of memory?)", flush=True)
                continue
            lat = f", latency {r['latency_s'] * 1e3:.1f} ms ({r['runtime']})" \
                if "latency_s" in r else ""
            print(f"{name:10s} {fmt:12s} export {r['export_s']:6.2f} s, "
                  f"{r['bytes'] / 1e6:7.1f} MB (caffemodel {size / 1e6:.1f} MB), peak RSS "
                  f"{r['peak_rss'] / 1e9:.2f} GB{lat}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t:.0f} s)")
