"""Large nets: ``convert()`` time and first-call latency of ResNet-152-, DenseNet-121- and
Inception-ResNet-v2-sized Caffe nets (bench/bignets.py: their layers and shapes, random
weights), for the current Keras backend:

    KERAS_BACKEND=jax .venv/bin/python bench/bench_bignets.py [--runs 3] [--profile resnet152]

- convert: ``caffe2keras.convert(deploy, caffemodel)`` in this process, after one
  untimed convert of the same net (imports and first-use costs out); minimum of runs,
  wall and CPU seconds of this process.
- first call: the first ``predict_on_batch`` of a batch-1 image on a fresh model (Keras
  traces and compiles its predict function: XLA on JAX, tf.function on TensorFlow);
  then the steady latency, minimum of ``--repeats``.
The files are written once to bench/out/bignets/ (or ``--dir``) and reused.
Figures in BENCHMARKS.md ("Large nets").
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def ensure(name, directory):
    """(deploy, caffemodel, number of layers, parameters) of net ``name``, written once."""
    import bignets
    d = Path(directory) / name
    deploy, weights = d / "deploy.prototxt", d / "weights.caffemodel"
    net = bignets.NETS[name]()
    if not weights.exists():
        d.mkdir(parents=True, exist_ok=True)
        net.write_prototxt(deploy)
        net.write_caffemodel(weights)
    return deploy, weights, len(net.layers), net.params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default="resnet152,densenet121,inception_resnet_v2")
    ap.add_argument("--dir", default=str(HERE / "out" / "bignets"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5, help="steady-state predict repeats")
    ap.add_argument("--profile", default="", help="cProfile one convert() of these nets")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    import keras
    import numpy as np

    import caffe2keras
    backend = keras.backend.backend()
    print("| backend | net | Caffe layers | Keras layers | parameters | caffemodel | "
          "`convert()` wall / CPU | first call | then |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for name in args.nets.split(","):
        deploy, weights, n_layers, params = ensure(name, args.dir)
        caffe2keras.convert(deploy, weights)  # warm-up
        gc.collect()
        if name in args.profile.split(","):
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
            caffe2keras.convert(deploy, weights)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
            gc.collect()
        wall, cpu = [], []
        for _ in range(args.runs):
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            model = caffe2keras.convert(deploy, weights)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            if len(wall) < args.runs:
                del model
        shape = tuple(model.inputs[0].shape[1:])
        x = {"data": np.random.default_rng(0).random((1, *shape), np.float32)}
        t = time.perf_counter()
        keras.ops.convert_to_numpy(model.predict_on_batch(x)["prob"])
        first = time.perf_counter() - t
        steady = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            keras.ops.convert_to_numpy(model.predict_on_batch(x)["prob"])
            steady = min(steady, time.perf_counter() - t)
        size = os.path.getsize(weights) / 1e6
        print(f"| {backend} | {name} | {n_layers} | {len(model.layers)} | {params / 1e6:.1f} M "
              f"| {size:.0f} MB | {min(wall):.2f} s / {min(cpu):.2f} s | {first:.2f} s | "
              f"{steady * 1e3:.0f} ms |", flush=True)
        del model
        gc.collect()


if __name__ == "__main__":
    main()
