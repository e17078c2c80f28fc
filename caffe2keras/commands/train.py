"""caffe2keras train SOLVER [--weights INIT.caffemodel] [--iters N]"""
from __future__ import annotations

import os
import sys
import time

from ..errors import CaffeFormatError
from .common import add_input_shape, input_shapes


def add_parser(sub):
    p = sub.add_parser(
        "train", help="train a Caffe net in Keras as its solver.prototxt says",
        description="Train the solver's net on its own data (Data layers' LMDBs, ImageData "
                    "lists) with Caffe's optimizer, lr policy, weight decay and loss layers, "
                    "like `caffe train`: progress on the terminal, a .keras snapshot every "
                    "`snapshot` iterations (and a .caffemodel beside it), the test net run "
                    "every `test_interval` iterations for `test_iter` batches.")
    p.add_argument("solver", help="the solver.prototxt")
    p.add_argument("--weights", help="initial weights (.caffemodel), as caffe train --weights")
    p.add_argument("--iters", type=int, help="iterations to run (default: max_iter)")
    p.add_argument("--snapshot-prefix", help="where snapshots go (default: the solver's "
                                             "snapshot_prefix)")
    p.add_argument("--seed", type=int, help="seed of the random crops and mirrors")
    add_input_shape(p)
    return p


def _shapes_of(batch):
    """Caffe (NCHW) shapes of a batch's blobs."""
    out = {}
    for k, v in batch.items():
        s = tuple(v.shape)
        out[k] = (s[0], s[3], s[1], s[2]) if len(s) == 4 else s
    return out


def _copy_weights(src, dst):
    names = {layer.name for layer in src.layers}
    for layer in dst.layers:
        if layer.weights and layer.name in names:
            layer.set_weights(src.get_layer(layer.name).get_weights())


def run(args) -> int:
    import keras
    import numpy as np

    from ..data import caffe_dataset
    from ..train import convert_for_testing, convert_for_training, load_solver
    from ..train.writeback import save_caffemodel

    solver = load_solver(args.solver)
    p = solver.params
    iters = args.iters if args.iters is not None else p.max_iter
    if iters <= 0:
        raise CaffeFormatError("no iterations to run: give --iters or max_iter",
                               path=args.solver)
    if solver.net_path is None:
        raise CaffeFormatError("train needs the net in a file (net: or train_net:), not "
                               "inline", path=args.solver)
    given = input_shapes(args) or {}
    train_ds = caffe_dataset(solver.net_path, "TRAIN", seed=args.seed,
                             stages=tuple(p.train_state.stage))
    batches = iter(train_ds)
    first = next(batches)
    shapes = {**_shapes_of(first), **given}
    model = convert_for_training(solver, args.weights, input_shapes=shapes, seed=args.seed)

    test_every = p.test_interval if p.test_iter else 0
    tester = test_batches = None
    if test_every:
        test_path = solver.test_net_path
        if test_path is None:
            raise CaffeFormatError("train reads test nets from files only", path=args.solver)
        test_ds = caffe_dataset(test_path, "TEST", stages=tuple(
            p.test_state[0].stage) if p.test_state else ())
        test_batches = iter(test_ds)
        tb = next(test_batches)
        tester = convert_for_testing(solver, args.weights,
                                     input_shapes={**_shapes_of(tb), **given})
        test_batches = _chain(tb, test_batches)

    prefix = args.snapshot_prefix or p.snapshot_prefix or os.path.splitext(args.solver)[0]
    batches = _chain(first, batches)

    def test(it):
        _copy_weights(model, tester)
        sums = {}
        for _ in range(p.test_iter[0]):
            out = tester(next(test_batches), training=False)
            for k in list(tester.loss_weights) + tester.accuracies:
                sums[k] = sums.get(k, 0.0) + float(keras.ops.convert_to_numpy(out[k]))
        parts = [f"{k} = {v / p.test_iter[0]:.6g}" for k, v in sums.items()]
        print(f"Iteration {it}, Testing net: " + ", ".join(parts), file=sys.stderr)

    def snapshot(it):
        path = f"{prefix}_iter_{it}.keras"
        model.save(path)
        save_caffemodel(model, solver.net_path, f"{prefix}_iter_{it}.caffemodel",
                        input_shapes=shapes)
        print(f"Snapshotting to {path}", file=sys.stderr)

    bar = keras.utils.Progbar(iters, stateful_metrics=["loss", "lr"]) \
        if sys.stderr.isatty() else None
    recent = []
    t0 = time.perf_counter()
    for it in range(iters):
        if test_every and it % test_every == 0 and (it or p.test_initialization):
            test(it)
        for _ in range(p.iter_size):  # the last call returns the iteration's mean loss
            result = model.train_on_batch(next(batches))
        loss = float(np.asarray(result[0] if isinstance(result, list) else result))
        # Solver::UpdateSmoothedLoss: the mean of the last average_loss iterations
        recent = (recent + [loss])[-max(1, p.average_loss):]
        smoothed = sum(recent) / len(recent)
        if bar is not None:
            bar.update(it + 1, [("loss", smoothed)])
        if p.display and (it % p.display == 0 or it == iters - 1):
            print(f"Iteration {it}, loss = {smoothed:.6g}", file=sys.stderr if bar else
                  sys.stdout)
        if p.snapshot and (it + 1) % p.snapshot == 0:
            snapshot(it + 1)
    if p.snapshot_after_train and not (p.snapshot and iters % p.snapshot == 0):
        snapshot(iters)
    if test_every and iters % test_every == 0:
        test(iters)
    print(f"trained {iters} iterations in {time.perf_counter() - t0:.1f} s; final loss "
          f"{smoothed:.6g}")
    return 0


def _chain(first, rest):
    yield first
    yield from rest
