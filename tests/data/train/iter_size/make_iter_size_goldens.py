"""iter_size goldens for tests/test_train.py, made with real Caffe (pycaffe); never run
in tests.

    PYTHONPATH=/tmp/caffe-build/src/python LD_LIBRARY_PATH=/tmp/caffe-build/libs \
        /usr/bin/python3 tests/data/train/iter_size/make_iter_size_goldens.py

For each solver of rows.RUNS: net.prototxt (its HDF5Data reads rows.py's rows, written
through the project's venv, VENV_PYTHON, which has h5py) from init.caffemodel (Caffe's
fillers, seed 1, saved once), STEPS iterations of solver.step(1). Keeps the loss Caffe's
solver reports per iteration, read from its log ("Iteration N ..., loss = X": the mean
over the iter_size forward/backward passes, smoothed over average_loss; printed with 6
significant digits), and the weights after the last step.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rows

VENV_PYTHON = os.environ.get("VENV_PYTHON", os.path.join(HERE, *[".."] * 4, ".venv",
                                                         "bin", "python"))


def run(name):
    """One solver, in this process (cwd: the folder with the rows)."""
    import caffe
    caffe.set_mode_cpu()
    caffe.set_random_seed(1)
    with open("solver.prototxt", "w") as f:
        f.write(f'net: "net.prototxt"\n{rows.RUNS[name]}\nrandom_seed: 1\n')
    solver = caffe.get_solver("solver.prototxt")
    init = os.path.join(HERE, "init.caffemodel")
    if not os.path.exists(init):
        solver.net.save(init)
    solver.net.copy_from(init)
    solver.step(rows.STEPS)
    out = {f"{name}/final/{layer}/{i}": b.data.astype(np.float32)
           for layer, blobs in solver.net.params.items() for i, b in enumerate(blobs)}
    np.savez(f"{name}.npz", **out)


def main():
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(HERE, "net.prototxt"), tmp)
        script = f"import sys; sys.path.insert(0, {HERE!r}); import rows; rows.write_hdf5('.')"
        subprocess.run([VENV_PYTHON, "-c", script], cwd=tmp, check=True)
        env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
        for name in rows.RUNS:
            log = subprocess.run([sys.executable, os.path.abspath(__file__), name], cwd=tmp,
                                 env=env, check=True, capture_output=True, text=True).stderr
            losses = [float(v) for v in
                      re.findall(r"Iteration \d+.*?, loss = (\S+)", log)]
            assert len(losses) == rows.STEPS, log[-2000:]
            out[f"{name}/loss"] = np.array(losses)
            with np.load(os.path.join(tmp, f"{name}.npz")) as part:
                out.update(part)
            print(name, losses)
    np.savez_compressed(os.path.join(HERE, "iter_size_goldens.npz"), **out)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(sys.argv[1])
    else:
        main()
