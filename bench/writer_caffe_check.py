"""Check the writer against REAL Caffe: every conformance case is rewritten by
caffe2keras.writer (V2, V2 with double_data, V2 with legacy dims, V1, V1 with
double_data, V0 where the types allow), then pycaffe loads each prototxt + caffemodel and
runs the case's inputs; every blob must match the case's goldens.

    python bench/writer_caffe_check.py [OUTDIR]

Needs the pycaffe build at /tmp/caffe-build (see tests/shared.py and the project notes);
the tests never do. Last run: 136 variants of the 26 cases, all loaded, every blob equal
to the goldens (max abs diff 0.0).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAFFE_ENV = {"PYTHONPATH": "/tmp/caffe-build/src/python",
             "LD_LIBRARY_PATH": "/tmp/caffe-build/libs", "GLOG_minloglevel": "2"}

CAFFE_SIDE = r'''
import json, sys, numpy as np, caffe
caffe.set_mode_cpu()
plan = json.load(open(sys.argv[1]))
bad = 0
for p in plan:
    print("LOAD", p["case"], p["variant"], flush=True)
    net = caffe.Net(p["dir"] + "/deploy.prototxt", caffe.TEST,
                    weights=p["dir"] + "/weights.caffemodel")
    feed, gold = np.load(p["inputs"]), np.load(p["outputs"])
    for k in feed.files:
        net.blobs[k].data[...] = feed[k]
    net.forward()
    worst = 0.0
    for k in gold.files:
        got, ref = net.blobs[k].data, gold[k]
        atol = 1e-4 * max(1.0, float(np.abs(ref).max()))
        if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-4, atol=atol):
            print("MISMATCH", p["case"], p["variant"], k); bad += 1
        else:
            worst = max(worst, float(np.abs(got - ref).max()))
    print("OK", p["case"], p["variant"], len(gold.files), "blobs, max abs diff", worst)
print("BAD", bad, "of", len(plan))
sys.exit(1 if bad else 0)
'''


def write_variants(out: Path):
    sys.path.insert(0, str(ROOT))
    from caffe2keras.graph import load_graph
    from caffe2keras.writer import _V0_TYPES, _V1_TYPES, CaffeNetWriter
    from tests.shared import CONFORMANCE_CASES, conformance_files

    plan = []
    for case in CONFORMANCE_CASES:
        deploy, weights, inputs, outputs = conformance_files(case)
        net = load_graph(deploy, weights).net
        variants = [("V2", {}), ("V2", {"double": True}), ("V2", {"legacy_dims": True})]
        if all(lay.type in _V1_TYPES for lay in net.layers):
            variants += [("V1", {}), ("V1", {"double": True})]
            if all(lay.type in _V0_TYPES for lay in net.layers if lay.blobs):
                variants.append(("V0", {}))
        for fmt, kw in variants:
            tag = fmt + "".join(f"_{k}" for k in kw)
            d = out / case / tag
            d.mkdir(parents=True)
            w = CaffeNetWriter.from_net(net)
            w.write_prototxt(d / "deploy.prototxt", "V1" if fmt == "V0" else fmt)
            w.write_caffemodel(d / "weights.caffemodel", fmt, **kw)
            plan.append({"case": case, "variant": tag, "dir": str(d), "inputs": str(inputs),
                         "outputs": str(outputs)})
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    return plan


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="c2k-wc-"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    plan = write_variants(out)
    print(f"{len(plan)} variants written under {out}; running real Caffe ...", flush=True)
    script = out / "caffe_side.py"
    script.write_text(CAFFE_SIDE)
    env = dict(os.environ, **CAFFE_ENV)
    r = subprocess.run(["/usr/bin/python3", str(script), str(out / "plan.json")], env=env,
                       capture_output=True, text=True, check=False)
    lines = [x for x in r.stdout.splitlines() if not x.startswith("LOAD")]
    print("\n".join(lines[-40:]))
    if r.returncode:
        print(r.stderr[-2000:], file=sys.stderr)
        last = [x for x in r.stdout.splitlines() if x.startswith("LOAD")][-1:]
        print(f"failed at {last}", file=sys.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
