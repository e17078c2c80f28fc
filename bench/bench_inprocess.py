"""In-process speed of the Python API on the 553 MB VGG16-size model, against Keras's own
VGG16 holding the same weights (issue 12's table), for the current Keras backend:

    KERAS_BACKEND=jax .venv/bin/python bench/bench_inprocess.py [--runs 3] [--profile]

- convert: ``caffe2keras.convert(deploy, caffemodel)`` in this process (after a warm-up
  convert of a small net, so imports are not counted); the first run also gives the peak
  memory growth (VmHWM minus the RSS before it) over the caffemodel's size. Minimum of runs.
- forward: ``predict_on_batch`` of a batch-1 224x224 image, converted model / Keras
  VGG16, interleaved in the same process, minimum of repeats (compiled and warmed up).
- save: ``model.save(path.keras)``, converted / Keras VGG16, interleaved, minimum.
Uses bench/out/vgg16.caffemodel (written once by bench_read.py's generator) or ``--dir``.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak():
    """Let VmHWM restart from the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def files(directory):
    if directory:
        d = Path(directory)
        return d / "vgg16_deploy.prototxt", d / "vgg16.caffemodel"
    sys.path.insert(0, str(HERE))
    import bench_read
    bench_read.ensure_files()
    return bench_read.DEPLOY, bench_read.MODEL


def keras_vgg16_like(model):
    """keras.applications.VGG16 with the converted model's weights (conv and dense layers
    in order), so both run the same numbers."""
    import keras
    ref = keras.applications.VGG16(weights=None)
    ours = [lay for lay in model.layers if lay.weights]
    theirs = [lay for lay in ref.layers if lay.weights]
    assert len(ours) == len(theirs) == 16, (len(ours), len(theirs))
    for a, b in zip(ours, theirs):
        b.set_weights(a.get_weights())
    return ref


def interleaved(fns, repeats):
    """Minimum time of each function, run in turn ``repeats`` times."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            gc.collect()
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", help="folder with vgg16_deploy.prototxt and vgg16.caffemodel")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10, help="forward repeats")
    ap.add_argument("--save-repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one convert()")
    ap.add_argument("--skip-keras", action="store_true", help="convert() only")
    args = ap.parse_args(argv)
    deploy, model_path = files(args.dir)

    import keras
    import numpy as np

    import caffe2keras
    from caffe2keras.writer import CaffeNetWriter
    backend = keras.backend.backend()

    # warm-up: imports and first-use costs of the backend, on a tiny net
    with tempfile.TemporaryDirectory() as tmp:
        w = CaffeNetWriter("warm")
        w.input("data", (1, 3, 8, 8))
        w.layer("conv", "Convolution", "data", "conv",
                convolution_param={"num_output": 4, "kernel_size": [3]},
                blobs=[np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)])
        w.layer("ip", "InnerProduct", "conv", "ip", inner_product_param={"num_output": 2},
                blobs=[np.ones((2, 144), np.float32), np.zeros(2, np.float32)])
        w.write_prototxt(f"{tmp}/d.prototxt")
        w.write_caffemodel(f"{tmp}/m.caffemodel")
        caffe2keras.convert(f"{tmp}/d.prototxt", f"{tmp}/m.caffemodel")

    size = os.path.getsize(model_path)
    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        m = caffe2keras.convert(deploy, model_path)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        del m
        gc.collect()

    times, growth = [], None
    for i in range(args.runs):
        gc.collect()
        exact = _reset_peak()
        before = _status("VmRSS")
        t = time.perf_counter()
        m = caffe2keras.convert(deploy, model_path)
        times.append(time.perf_counter() - t)
        if i == 0 and exact:
            growth = (_status("VmHWM") - before) / size
        if i < args.runs - 1:
            del m
    print(f"convert(): {min(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}); "
          f"peak memory growth {growth:.2f}x the file" if growth is not None else
          f"convert(): {min(times):.2f} s (peak memory: no /proc/self/clear_refs)", flush=True)
    if args.skip_keras:
        return
    ref = keras_vgg16_like(m)
    x = np.random.default_rng(0).random((1, 224, 224, 3), np.float32)
    ya = m.predict_on_batch({"data": x})["prob"]
    yb = ref.predict_on_batch(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ya), keras.ops.convert_to_numpy(yb),
                               rtol=1e-4, atol=1e-6)
    fwd = interleaved([lambda: keras.ops.convert_to_numpy(m.predict_on_batch({"data": x})),
                       lambda: keras.ops.convert_to_numpy(ref.predict_on_batch(x))],
                      args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [f"{tmp}/ours.keras", f"{tmp}/keras.keras"]

        def saver(model, path):
            def run():
                if os.path.exists(path):
                    os.remove(path)  # overwriting costs a flush on ext4; not what we time
                model.save(path)
            return run
        save = interleaved([saver(m, paths[0]), saver(ref, paths[1])], args.save_repeats)
    print(f"forward (predict_on_batch): {fwd[0] * 1e3:.1f} ms vs Keras VGG16 "
          f"{fwd[1] * 1e3:.1f} ms = {fwd[0] / fwd[1]:.2f}")
    print(f"model.save(): {save[0]:.2f} s vs Keras VGG16 {save[1]:.2f} s = "
          f"{save[0] / save[1]:.2f}")
    print()
    print("| backend | `convert()` | memory growth | forward vs `keras.applications.VGG16` "
          "| `model.save()` vs the same VGG16's save |")
    print("|---|---|---|---|---|")
    g = f"{growth:.2f}×" if growth is not None else "n/a"
    print(f"| {backend} | {min(times):.2f} s | {g} the file | {fwd[0] / fwd[1]:.2f} | "
          f"{save[0]:.2f} s vs {save[1]:.2f} s = {save[0] / save[1]:.2f}× |")


if __name__ == "__main__":
    main()
