"""How fast caffe2keras converts a VGG16-sized caffemodel to .keras, and how fast the
converted model runs.

    python bench/bench_convert.py [--runs 3] [--backends jax,tensorflow,torch] [--json out.json]

Uses bench/out/vgg16.caffemodel (553 MB, VGG16's exact layer shapes, random weights),
written once by bench_read.py's generator. Every measurement is a fresh process:

- convert: what `caffe2keras convert deploy.prototxt vgg16.caffemodel -o vgg16.keras`
  does (saving.convert_to_file: architecture with deferred variables, weights streamed
  into the zip), timed from after `import keras` (reported apart) to the file in place,
  with the peak RSS of the whole process (VmHWM). The output is deleted before each run.
- forward: caffe2keras.convert() in memory, then a batch-1 224x224 forward, median of 10
  after 3 warm-up calls: `predict_on_batch` (compiled: jax.jit / tf.function / torch
  eager) and a plain `model(x)` call.
Targets (2-core machine): convert <= 2.5 s and RSS <= 2x the file size; forward <= 0.30 s
on JAX and <= 0.45 s on TensorFlow (real Caffe: 0.305 s).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
TARGET_CONVERT_S = 2.5
TARGET_RSS = 2.0
TARGET_FORWARD_S = {"jax": 0.30, "tensorflow": 0.45}


def _vmhwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def child_convert(deploy, model, out):
    t0 = time.perf_counter()
    import keras  # noqa: F401

    from caffe2keras.graph import load_graph
    from caffe2keras.saving import convert_to_file
    t1 = time.perf_counter()
    converted = convert_to_file(load_graph(deploy, model), out)
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "convert_s": t2 - t1, "vmhwm": _vmhwm(),
                      "params": converted.count_params(), "out_bytes": os.path.getsize(out)}))


def child_forward(deploy, model):
    import keras
    import numpy as np

    import caffe2keras

    t = time.perf_counter()
    m = caffe2keras.convert(deploy, model)
    build_s = time.perf_counter() - t
    x = {"data": np.random.default_rng(0).random((1, 224, 224, 3), np.float32)}
    times = {}
    for how, run in (("predict_on_batch", m.predict_on_batch), ("call", m)):
        for _ in range(3):
            run(x)
        samples = []
        for _ in range(10):
            t = time.perf_counter()
            keras.ops.convert_to_numpy(run(x)["prob"])  # waits for the result
            samples.append(time.perf_counter() - t)
        times[how] = statistics.median(samples)
    print(json.dumps({"build_s": build_s, **times, "vmhwm": _vmhwm()}))


def _run(backend, *args):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                         check=False,
                         text=True)
    if out.returncode:
        raise SystemExit(f"{backend} {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backends", default="jax,tensorflow,torch")
    ap.add_argument("--json", help="also write the raw figures here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench_read import DEPLOY, MODEL, ensure_files

    ensure_files()
    size = MODEL.stat().st_size
    out = OUT / "vgg16_bench.keras"
    results = {}
    print(f"VGG16 caffemodel: {size / 1e6:.1f} MB; load average "
          f"{os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
    print(f"{'backend':<11} {'convert':>8} {'(keras import)':>15} {'peak RSS':>9} "
          f"{'x file':>7} {'forward':>8} {'model(x)':>9}")
    for backend in args.backends.split(","):
        conv = []
        for _ in range(args.runs):
            out.unlink(missing_ok=True)
            conv.append(_run(backend, "--convert", str(DEPLOY), str(MODEL), str(out)))
        out.unlink(missing_ok=True)
        fwd = _run(backend, "--forward", str(DEPLOY), str(MODEL))
        c = statistics.median(r["convert_s"] for r in conv)
        imp = statistics.median(r["import_s"] for r in conv)
        rss = max(r["vmhwm"] for r in conv)
        results[backend] = {"convert": conv, "forward": fwd}
        flags = []
        if c > TARGET_CONVERT_S or rss > TARGET_RSS * size:
            flags.append("convert over target")
        if fwd["predict_on_batch"] > TARGET_FORWARD_S.get(backend, 1e9):
            flags.append("forward over target")
        print(f"{backend:<11} {c:>7.2f}s {imp:>14.2f}s {rss / 1e6:>7.0f}MB {rss / size:>7.2f} "
              f"{fwd['predict_on_batch']:>7.3f}s {fwd['call']:>8.3f}s  {', '.join(flags)}")
    print(f"targets: convert <= {TARGET_CONVERT_S} s and <= {TARGET_RSS}x the file; forward "
          f"<= {TARGET_FORWARD_S['jax']} s (jax), {TARGET_FORWARD_S['tensorflow']} s "
          f"(tensorflow); real Caffe forward 0.305 s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--convert":
        child_convert(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--forward":
        child_forward(*sys.argv[2:4])
    else:
        main()
