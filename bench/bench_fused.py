"""Fused activations, A/B: each net converted in both forms in one process, with the ReLU after
each Convolution/InnerProduct as its own Keras layer (``FUSE_ACTIVATIONS = False``) and
inside the Conv2D/Dense (``activation="relu"``), then ``predict_on_batch`` of a batch-1
image on each, in a shuffled order every repeat, minimum of repeats (compiled and warmed
up first). ``--copies`` models of each form: their spread shows the noise.

    KERAS_BACKEND=jax .venv/bin/python bench/bench_fused.py --dir /work/benchdata [--repeats 20]

Nets: the 553 MB VGG16 (``--dir``, or bench/out as bench_read.py writes it) and ResNet-50
with BatchNorm folded into biased convolutions (bench/bignets.py, random weights,
generated into a temporary folder). Figures in BENCHMARKS.md ("Fused activations").
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _models(deploy, weights, copies):
    """``copies`` pairs of (unfused, fused) models of the same files."""
    import caffe2keras
    from caffe2keras.emit import plan

    models = []
    try:
        for _ in range(copies):
            for fuse in (False, True):
                plan.FUSE_ACTIVATIONS = fuse
                models.append(caffe2keras.convert(deploy, weights))
    finally:
        plan.FUSE_ACTIVATIONS = True
    return models


def compare(label, deploy, weights, repeats, size, copies):
    import gc

    import keras
    import numpy as np

    models = _models(deploy, weights, copies)
    n_sep, n_fused = len(models[0].layers), len(models[1].layers)
    x = {"data": np.random.default_rng(0).random((1, size, size, 3), np.float32)}
    run = [lambda m=m: keras.ops.convert_to_numpy(m.predict_on_batch(x)["prob"])
           for m in models]
    ref = run[0]()
    for fn in run[1:]:
        np.testing.assert_allclose(fn(), ref, rtol=1e-5, atol=1e-7)
    for fn in run:
        fn()
    best = [float("inf")] * len(run)
    rng = np.random.default_rng(0)
    for _ in range(repeats):
        for i in rng.permutation(len(run)):  # no model always first or always after another
            gc.collect()
            t = time.perf_counter()
            run[i]()
            best[i] = min(best[i], time.perf_counter() - t)
    sep, fused = min(best[0::2]), min(best[1::2])
    print(f"| {keras.backend.backend()} | {label} | {n_sep} / {n_fused} | "
          f"{sep * 1e3:.1f} ms | {fused * 1e3:.1f} ms | {fused / sep:.3f} | "
          f"{' '.join(f'{b * 1e3:.1f}' for b in best)} |", flush=True)
    del models, run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="folder with vgg16_deploy.prototxt and vgg16.caffemodel")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--nets", default="vgg16,resnet50")
    ap.add_argument("--copies", type=int, default=2,
                    help="models of each form (the spread among copies is the noise)")
    args = ap.parse_args(argv)
    import warnings
    warnings.simplefilter("ignore")
    import bignets
    nets = args.nets.split(",")
    print("| backend | net | Keras layers (separate / fused) | separate ReLU | fused | "
          "fused / separate | each copy, ms (separate, fused, ...) |")
    print("|---|---|---|---|---|---|---|")
    if "vgg16" in nets:
        if args.dir:
            d = Path(args.dir)
            deploy, weights = d / "vgg16_deploy.prototxt", d / "vgg16.caffemodel"
        else:
            import bench_read
            bench_read.ensure_files()
            deploy, weights = bench_read.DEPLOY, bench_read.MODEL
        compare("VGG16", deploy, weights, args.repeats, 224, args.copies)
    if "resnet50" in nets:
        with tempfile.TemporaryDirectory() as tmp:
            net = bignets.resnet(50, batchnorm=False)
            net.write_prototxt(f"{tmp}/deploy.prototxt")
            net.write_caffemodel(f"{tmp}/weights.caffemodel")
            compare("ResNet-50, BatchNorm folded", f"{tmp}/deploy.prototxt",
                    f"{tmp}/weights.caffemodel", args.repeats, 224, args.copies)


if __name__ == "__main__":
    main()
