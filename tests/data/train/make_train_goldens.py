"""Goldens for tests/test_train.py, made with real Caffe (pycaffe); never run in tests.

    PYTHONPATH=/tmp/caffe-build/src/python LD_LIBRARY_PATH=/tmp/caffe-build/libs \
        GLOG_minloglevel=2 /usr/bin/python3 tests/data/train/make_train_goldens.py

For each solver in runs.json: train_net.prototxt from init.caffemodel (drawn once by
Caffe's fillers, seed 1), STEPS solver.step(1) calls on fixed batches (batches(), the same
function the test uses), recording each step's loss as Caffe reports it (sum of
loss_weight x loss top) and the weights after the last step.
"""
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import caffe
from train_batches import STEPS, batch

LOSS_WEIGHTS = {"loss_cls": 1.0, "loss_reg": 0.5}


def main():
    caffe.set_mode_cpu()
    caffe.set_random_seed(1)
    net_path = os.path.join(HERE, "train_net.prototxt")
    init = os.path.join(HERE, "init.caffemodel")
    with open(os.path.join(HERE, "runs.json")) as f:
        runs = json.load(f)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in runs.items():
            solver_path = os.path.join(tmp, name + ".prototxt")
            with open(solver_path, "w") as f:
                f.write(f'net: "{net_path}"\n{text}\nrandom_seed: 1\n')
            solver = caffe.get_solver(solver_path)
            if not os.path.exists(init):
                solver.net.save(init)
            solver.net.copy_from(init)
            iter_size = int(text.split("iter_size:")[1].split()[0]) if "iter_size" in text \
                else 1
            losses, accs = [], []
            for step in range(STEPS):
                for blob, value in batch(step).items():
                    solver.net.blobs[blob].data[...] = value
                solver.step(1)
                losses.append(sum(w * float(solver.net.blobs[k].data)
                                  for k, w in LOSS_WEIGHTS.items()))
                accs.append(float(solver.net.blobs["acc"].data))
            out[f"{name}/loss"] = np.array(losses, np.float64)
            out[f"{name}/acc"] = np.array(accs, np.float64)
            out[f"{name}/iter_size"] = np.array(iter_size)
            for layer, blobs in solver.net.params.items():
                for i, b in enumerate(blobs):
                    out[f"{name}/final/{layer}/{i}"] = b.data.astype(np.float32)
            print(name, losses[0], losses[-1])
    np.savez_compressed(os.path.join(HERE, "train_goldens.npz"), **out)


if __name__ == "__main__":
    main()
