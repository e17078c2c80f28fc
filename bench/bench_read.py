"""How fast caffe2keras reads a VGG16-sized caffemodel, and how much memory it takes.

    python bench/bench_read.py [--runs 5] [--cold-runs 3] [--json out.json]

The first run writes bench/out/vgg16.caffemodel (553 MB, VGG16's exact layer shapes,
random weights) and its deploy prototxt; later runs reuse them. Each measurement is a
fresh process that imports only the reader (never Keras), loads the file and touches
every weight byte (an XOR over every blob's 32-bit words, checked against the value the
writer computed). It reports the read time (load + checksum), the import time, and the
peak RSS (VmHWM: the mapped file pages the process touched count too).

"cold" runs first evict the file from the page cache with posix_fadvise(DONTNEED), so
the data come from the disk (or the host's cache, on a VM).
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
OUT = HERE / "out"
MODEL = OUT / "vgg16.caffemodel"
DEPLOY = OUT / "vgg16_deploy.prototxt"
STAMP = OUT / "vgg16.json"

TARGET_S = 0.3
TARGET_RSS = 1.1   # times the file size
REFERENCE = [("real Caffe (CopyTrainedLayersFrom)", "1.23 s", "1.28 GB"),
             ("protobuf-python + numpy", "1.85 s", "1.6 GB")]


def _xor32(arr, np):
    """XOR of the blob's 32-bit words (order-free, exact: checks every byte read)."""
    words = arr.reshape(-1).view(np.uint32)
    n = words.size // 2 * 2
    x = 0
    if n:  # as 64-bit words (twice as fast); the halves of the result fold together
        x64 = int(np.bitwise_xor.reduce(words[:n].view(np.uint64)))
        x = (x64 & 0xFFFFFFFF) ^ (x64 >> 32)
    if words.size > n:
        x ^= int(words[-1])
    return x


def ensure_files():
    """Write the VGG16 files unless a complete set is already cached."""
    if STAMP.exists() and MODEL.exists() and DEPLOY.exists():
        info = json.loads(STAMP.read_text())
        if info.get("bytes") == MODEL.stat().st_size:
            return info
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import numpy as np
    from vgg16 import PARAMS, vgg16

    from caffe2keras.writer import Lazy

    OUT.mkdir(exist_ok=True)
    print(f"writing {MODEL.relative_to(ROOT)} (once; cached) ...", flush=True)
    net = vgg16()
    state = {"xor": 0, "params": 0}
    for _, _, _, blobs in net.layers:  # fold each blob into the checksum as it is made
        for i, b in enumerate(blobs):
            def make(make=b.make):
                a = make()
                state["xor"] ^= _xor32(a, np)
                state["params"] += a.size
                return a
            blobs[i] = Lazy(b.shape, make)
    t = time.perf_counter()
    net.write_prototxt(DEPLOY)
    net.write_caffemodel(MODEL)
    if state["params"] != PARAMS:
        raise SystemExit(f"wrote {state['params']} params, VGG16 has {PARAMS}")
    info = {"bytes": MODEL.stat().st_size, "params": state["params"], "xor": state["xor"]}
    STAMP.write_text(json.dumps(info))
    print(f"  {info['bytes']:,} bytes, {info['params']:,} params in "
          f"{time.perf_counter() - t:.1f} s")
    return info


def child(path):
    """One measurement, in this fresh process."""
    t0 = time.perf_counter()
    import numpy as np

    from caffe2keras.caffemodel import load_caffemodel
    t1 = time.perf_counter()
    model = load_caffemodel(path)
    t2 = time.perf_counter()
    xor, params, blobs = 0, 0, 0
    for layer in model.layers.values():
        for blob in layer.blobs:
            xor ^= _xor32(blob.data, np)
            params += blob.data.size
            blobs += 1
    t3 = time.perf_counter()
    hwm = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    import resource
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "import_s": t1 - t0, "decode_s": t2 - t1, "touch_s": t3 - t2, "read_s": t3 - t1,
        "vmhwm": hwm, "maxrss": maxrss, "xor": xor, "params": params, "blobs": blobs,
        "layers": len(model.layers), "keras_imported": "keras" in sys.modules,
        "modules": len(sys.modules)}))


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(cold):
    if cold:
        evict(MODEL)
    t = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, __file__, "--child", str(MODEL)], env=env,
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    r["process_s"] = time.perf_counter() - t
    r["cache"] = "cold" if cold else "warm"
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="warm-cache runs (default 5)")
    ap.add_argument("--cold-runs", type=int, default=3, help="cold-cache runs (default 3)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    info = ensure_files()
    size = info["bytes"]
    measure(cold=False)  # one unreported run to warm the cache and the imports
    results = [measure(cold=True) for _ in range(args.cold_runs)]
    results += [measure(cold=False) for _ in range(args.runs)]
    bad = [r for r in results if r["xor"] != info["xor"] or r["params"] != info["params"]]
    if bad:
        raise SystemExit(f"checksum mismatch: read {bad[0]['xor']:#x} over {bad[0]['params']} "
                         f"params, wrote {info['xor']:#x} over {info['params']}")
    if any(r["keras_imported"] for r in results):
        raise SystemExit("the reader imported keras")

    print(f"VGG16 caffemodel: {size / 1e6:.1f} MB, {info['params']:,} params, "
          f"{results[0]['blobs']} blobs; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    print("every weight byte read (XOR of all 32-bit words matches the writer's)")
    head = f"{'run':>3}  {'cache':5}  {'decode':>7}  {'touch':>7}  {'read':>7}  " \
           f"{'peak RSS':>9}  {'RSS/file':>8}  {'import':>7}  {'process':>8}"
    print(head)
    for i, r in enumerate(results, 1):
        print(f"{i:>3}  {r['cache']:5}  {r['decode_s']:7.3f}  {r['touch_s']:7.3f}  "
              f"{r['read_s']:7.3f}  {r['vmhwm'] / 1e6:6.0f} MB  {r['vmhwm'] / size:8.3f}  "
              f"{r['import_s']:7.3f}  {r['process_s']:8.3f}")
    print("(seconds; read = decode + touch: load_caffemodel, then a pass over every blob; "
          "import = numpy + reader; process = whole child incl. interpreter start)")
    summary = {}
    for cache in ("warm", "cold"):
        rs = sorted(r["read_s"] for r in results if r["cache"] == cache)
        if rs:
            rss = max(r["vmhwm"] for r in results if r["cache"] == cache)
            summary[cache] = {"read_s_median": rs[len(rs) // 2], "read_s_max": rs[-1],
                              "peak_rss_bytes": rss, "rss_over_file": rss / size}
            ok = rs[len(rs) // 2] <= TARGET_S and rss <= TARGET_RSS * size
            print(f"{cache}: median {rs[len(rs) // 2]:.3f} s (max {rs[-1]:.3f}), peak RSS "
                  f"{rss / 1e6:.0f} MB = {rss / size:.3f}x file  "
                  f"[target <= {TARGET_S} s, <= {TARGET_RSS}x: {'met' if ok else 'MISSED'}]")
    for name, t, m in REFERENCE:
        print(f"for reference, {name}: {t}, {m}")
    if args.json:
        Path(args.json).write_text(json.dumps({"file_bytes": size, "params": info["params"],
                                               "runs": results, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
