"""Goldens for tests/test_data_goldens.py, made with real Caffe (pycaffe); never run in
tests.

    PYTHONPATH=/tmp/caffe-build/src/python LD_LIBRARY_PATH=/tmp/caffe-build/libs \
        GLOG_minloglevel=2 /usr/bin/python3 tests/data/caffe_data/make_data_goldens.py

Writes the sources of data_records.py in a temporary folder (LevelDB and HDF5 through the
project's venv, VENV_PYTHON, which has plyvel and h5py), runs each net of NETS with
Caffe's own Data / HDF5Data layer and keeps: for the exact cases the first BATCHES
batches of every top (NCHW, as Caffe gives them); for the stats cases the crop offsets
and mirror flags of STATS_BATCHES batches (Caffe's RNG, caffe.set_random_seed(1)).
This Caffe build has no OpenCV, so encoded Datum and ImageData have no golden here.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import caffe
import data_records as dr

VENV_PYTHON = os.environ.get("VENV_PYTHON",
                             os.path.join(HERE, "..", "..", "..", ".venv", "bin", "python"))


def run_case(case):
    """One net in its own process: this Caffe's DataReader refuses a second reader of a
    source while the first net lives."""
    caffe.set_mode_cpu()
    caffe.set_random_seed(1)
    phase, text = dr.NETS[case]
    with open(f"{case}.prototxt", "w") as f:
        f.write(text)
    net = caffe.Net(f"{case}.prototxt", getattr(caffe, phase))
    out = {}
    if case.startswith("stats"):
        choices = []
        for _ in range(dr.STATS_BATCHES):
            net.forward()
            choices.append(dr.crop_choices(net.blobs["data"].data))
        out[f"{case}/choices"] = np.concatenate(choices)
    else:
        for b in range(dr.BATCHES):
            net.forward()
            for top in net.outputs:
                out[f"{case}/{b}/{top}"] = net.blobs[top].data.astype(np.float32).copy()
    np.savez(f"{case}.npz", **out)


def main():
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        dr.write_all(tmp, leveldb=False, hdf5=False)
        script = (f"import sys; sys.path.insert(0, {HERE!r}); import data_records as dr; "
                  f"dr.write_leveldb('raw_leveldb', 'raw'); dr.write_hdf5('.')")
        subprocess.run([VENV_PYTHON, "-c", script], cwd=tmp, check=True)
        for case in dr.NETS:  # Caffe opens sources relative to the working directory
            subprocess.run([sys.executable, os.path.abspath(__file__), case], cwd=tmp,
                           check=True)
            with np.load(os.path.join(tmp, f"{case}.npz")) as part:
                out.update(part)
            print(case, sorted(k for k in out if k.startswith(case + "/"))[:3])
    np.savez_compressed(os.path.join(HERE, "data_goldens.npz"), **out)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run_case(sys.argv[1])
    else:
        main()
