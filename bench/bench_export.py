"""How fast caffe2keras exports a VGG16-sized caffemodel's weights, and with how much memory.

    python bench/bench_export.py [--runs 3] [--formats keras,keras2-h5,npz,pickle]
                                 [--verify] [--json out.json]

Uses bench/out/vgg16.caffemodel (553 MB, VGG16's exact layer shapes, random weights),
written once by bench_read.py's generator. Each measurement is a fresh process that
calls caffe2keras.export_weights() for one format and reports the export time, the
import time and the peak RSS (VmHWM: mapped caffemodel pages count while touched).
The output file is deleted before each run, so no run pays for unlinking the last one.

For scale, each round also times a plain copy of the caffemodel's bytes into a new file
(read + write in 4 MB blocks, in a fresh process): the disk/page-cache cost any export
of 553 MB pays. On a shared machine the wall times move with the load; the copy beside
them shows how much.

--verify then checks the written files: the keras file loads into convert()'s model with
every variable equal to what convert(deploy, caffemodel) gives it (fc6/fc7 are written
in slices, so this checks the slicing), keras2-h5 holds the Dense kernels in flatten
order, and npz/pickle hold every blob bit for bit.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
EXPORT_DIR = OUT / "export"
SUFFIX = {"keras": ".weights.h5", "keras2-h5": ".h5", "npz": ".npz", "pickle": ".pkl"}
TARGET_RSS = 0.5          # times the caffemodel size, every format
TARGET_S = {"keras": 1.5}  # export seconds


def _vmhwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(fmt, deploy, model, out):
    t0 = time.perf_counter()
    from caffe2keras.export import export_weights
    t1 = time.perf_counter()
    export_weights(deploy, model, out, format=fmt)
    t2 = time.perf_counter()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"format": fmt, "import_s": t1 - t0, "export_s": t2 - t1,
                      "cpu_s": ru.ru_utime + ru.ru_stime, "vmhwm": _vmhwm(),
                      "out_bytes": os.path.getsize(out),
                      "keras_imported": "keras" in sys.modules}))


def child_copy(model, out):
    """The floor: the caffemodel's bytes read and written once, in blocks."""
    t0 = time.perf_counter()
    with open(model, "rb", buffering=0) as src, open(out, "wb", buffering=0) as dst:
        while True:
            block = src.read(4 << 20)
            if not block:
                break
            dst.write(block)
    t1 = time.perf_counter()
    print(json.dumps({"format": "copy", "import_s": 0.0, "export_s": t1 - t0, "cpu_s": 0.0,
                      "vmhwm": _vmhwm(), "out_bytes": os.path.getsize(out),
                      "keras_imported": "keras" in sys.modules}))


def measure(fmt, deploy, model):
    out = EXPORT_DIR / ("vgg16" + SUFFIX.get(fmt, ".copy"))
    if out.exists():
        out.unlink()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", fmt, str(deploy), str(model), str(out)]
    res = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{fmt} export failed:\n{res.stderr}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    r["process_s"] = time.perf_counter() - t
    r["path"] = str(out)
    return r


def verify(deploy, model, paths):
    """Every written value against the Caffe blobs (outside the timed runs)."""
    import h5py
    import numpy as np

    from caffe2keras.graph import load_graph

    graph = load_graph(deploy, model)
    blobs = {n.name: n.layer.blobs for n in graph.nodes if n.layer.blobs}
    checked = []
    if "npz" in paths:
        with np.load(paths["npz"]) as z:
            for name, bs in blobs.items():
                for i, b in enumerate(bs):
                    assert np.array_equal(z[f"{name}/{i}"], b), f"npz {name}/{i}"
        checked.append("npz: every blob bit for bit")
    if "pickle" in paths:
        sys.path.insert(0, str(ROOT))
        from tests.test_export import load_trusted_pickle

        layers = load_trusted_pickle(paths["pickle"])
        got = {d["name"]: d["weights"] for d in layers if d["weights"]}
        assert got.keys() == blobs.keys()
        for name, bs in blobs.items():
            assert all(np.array_equal(a, b) for a, b in zip(got[name], bs, strict=True)), name
        checked.append("pickle: every blob bit for bit (restricted unpickler)")
    if "keras2-h5" in paths:
        with h5py.File(paths["keras2-h5"], "r") as f:
            w = blobs["fc6"][0]
            want = w.reshape(4096, 512, 7, 7).transpose(2, 3, 1, 0).reshape(25088, 4096)
            assert np.array_equal(f["fc6/fc6/kernel"][()], want), "keras2-h5 fc6"
            w = blobs["conv5_3"][0]
            assert np.array_equal(f["conv5_3/conv5_3/kernel"][()], w.transpose(2, 3, 1, 0))
        checked.append("keras2-h5: fc6 (flatten order) and conv5_3 kernels")
    if "keras" in paths:
        import keras

        import caffe2keras

        ref = caffe2keras.convert(deploy, model)
        want = {v.path: keras.ops.convert_to_numpy(v) for v in ref.weights}
        del ref
        fresh = caffe2keras.convert(deploy)
        fresh.load_weights(paths["keras"])
        for v in fresh.weights:
            assert np.array_equal(keras.ops.convert_to_numpy(v), want[v.path]), v.path
        checked.append(f"keras: all {len(want)} variables equal convert(deploy, caffemodel)'s")
    return checked


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per format (default 3)")
    ap.add_argument("--formats", default="keras,keras2-h5,npz,pickle")
    ap.add_argument("--verify", action="store_true", help="check the written files after")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        fmt, deploy, model, out = args.child
        if fmt == "copy":
            child_copy(model, out)
        else:
            child(fmt, deploy, model, out)
        return 0
    sys.path.insert(0, str(HERE))
    from bench_read import DEPLOY, MODEL, ensure_files

    ensure_files()
    EXPORT_DIR.mkdir(exist_ok=True)
    size = MODEL.stat().st_size
    formats = [f for f in args.formats.split(",") if f]
    measure("copy", DEPLOY, MODEL)  # warm the page cache and the imports
    results = []
    for _ in range(args.runs):
        for fmt in ["copy", *formats]:
            results.append(measure(fmt, DEPLOY, MODEL))
    print(f"VGG16 caffemodel: {size / 1e6:.1f} MB; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'format':10} {'export s':>9} {'(min)':>7} {'cpu s':>6} {'import':>7} "
          f"{'peak RSS':>9} {'RSS/file':>8} {'out MB':>7}  keras imported")
    summary = {}
    for fmt in ["copy", *formats]:
        rs = [r for r in results if r["format"] == fmt]
        med = statistics.median(r["export_s"] for r in rs)
        rss = max(r["vmhwm"] for r in rs)
        summary[fmt] = {"export_s_median": med, "export_s_min": min(r["export_s"] for r in rs),
                        "cpu_s_median": statistics.median(r["cpu_s"] for r in rs),
                        "import_s_median": statistics.median(r["import_s"] for r in rs),
                        "peak_rss_bytes": rss, "rss_over_file": rss / size,
                        "out_bytes": rs[0]["out_bytes"],
                        "keras_imported": any(r["keras_imported"] for r in rs)}
        s = summary[fmt]
        print(f"{fmt:10} {med:9.3f} {s['export_s_min']:7.3f} {s['cpu_s_median']:6.2f} "
              f"{s['import_s_median']:7.3f} {rss / 1e6:6.0f} MB {rss / size:8.3f} "
              f"{s['out_bytes'] / 1e6:7.1f}  {'yes' if s['keras_imported'] else 'no'}")
    print("(median of the runs; export = the export_weights() call; copy = the caffemodel's "
          "bytes read and written once, the floor for any 553 MB export)")
    for fmt in formats:
        s = summary[fmt]
        limit = TARGET_S.get(fmt)
        ok = s["rss_over_file"] <= TARGET_RSS and (limit is None or s["export_s_median"] <= limit)
        target = f"<= {TARGET_RSS}x file" + (f", <= {limit} s" if limit else "")
        print(f"{fmt}: {s['export_s_median']:.2f} s, {s['rss_over_file']:.3f}x file "
              f"[target {target}: {'met' if ok else 'MISSED'}]")
    if args.verify:
        paths = {r["format"]: r["path"] for r in results if r["format"] in formats}
        for line in verify(DEPLOY, MODEL, paths):
            print("verified", line)
    if args.json:
        Path(args.json).write_text(json.dumps({"file_bytes": size, "runs": results,
                                               "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
