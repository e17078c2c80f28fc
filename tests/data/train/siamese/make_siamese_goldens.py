"""Shared-parameter goldens for tests/test_train_shared.py, made with real Caffe
(pycaffe); never run in tests.

    PYTHONPATH=/tmp/caffe-build/src/python LD_LIBRARY_PATH=/tmp/caffe-build/libs \
        GLOG_minloglevel=2 /usr/bin/python3 tests/data/train/siamese/make_siamese_goldens.py

net.prototxt from init.caffemodel (Caffe's fillers, seed 1, saved once: the sharing
layers' blobs in it are copies of the owners'): the forward features of batch(0), then
STEPS solver.step(1) calls on batches(), each step's loss, and the weights after the
last step.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import caffe
from batches import SOLVER, STEPS, batch


def main():
    caffe.set_mode_cpu()
    caffe.set_random_seed(1)
    solver_path = os.path.join(HERE, "solver.prototxt.tmp")
    with open(solver_path, "w") as f:
        f.write(f'net: "{os.path.join(HERE, "net.prototxt")}"\n{SOLVER}\nrandom_seed: 1\n')
    solver = caffe.get_solver(solver_path)
    os.remove(solver_path)
    init = os.path.join(HERE, "init.caffemodel")
    if not os.path.exists(init):
        solver.net.save(init)
    solver.net.copy_from(init)
    out = {}
    net = solver.net
    for blob, value in batch(0).items():
        net.blobs[blob].data[...] = value
    net.forward()
    for top in ("feat", "feat_p", "loss"):
        out[f"forward/{top}"] = net.blobs[top].data.astype(np.float32).copy()
    losses = []
    for step in range(STEPS):
        for blob, value in batch(step).items():
            net.blobs[blob].data[...] = value
        solver.step(1)
        losses.append(float(net.blobs["loss"].data))
    out["loss"] = np.array(losses)
    for layer, blobs in net.params.items():
        for i, b in enumerate(blobs):
            out[f"final/{layer}/{i}"] = b.data.astype(np.float32)
    assert np.array_equal(out["final/conv1/0"], out["final/conv1_p/0"])
    print(losses)
    np.savez_compressed(os.path.join(HERE, "siamese_goldens.npz"), **out)


if __name__ == "__main__":
    main()
