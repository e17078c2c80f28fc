"""Deep nets (ResNet-1001, DenseNet-264, generated chains of 5,000+ layers) through
Keras, whose functional-graph walk recurses once per layer along the longest path.

Keras builds a functional model (``keras.Model(inputs, outputs)``, also when loading a
.keras file or cloning) by a recursive depth-first walk, ``_build_map`` in
keras/src/ops/function.py: about a thousand layers deep it hits Python's recursion
limit; and its check that layer names are unique is quadratic. ``deep_graphs()`` swaps
in an iterative walk and a linear ``map_graph`` that return the very same results, for
as long as the ``with`` block runs; where a Keras version lacks those functions (or
their signatures changed), it raises the recursion limit for the block instead.
Everything of ours that builds or loads a Keras model runs inside it
(``caffe2keras.load_model`` wraps ``keras.saving.load_model``). The swap itself lives
with the other Keras internals, in keras_compat.py.
"""
from __future__ import annotations

import contextlib
import gc

from .keras_compat import build_map_iterative, deep_graphs, map_graph_linear  # noqa: F401


@contextlib.contextmanager
def paused_gc():
    """The cyclic garbage collector off for the block (back on after, if it was on).
    Building a graph of N layers makes O(N) objects that all stay alive, and each full
    collection walks every one of them: with collections every so many allocations,
    that is quadratic in N (load_graph at 20,000 layers: 2.8 s with it, 1.6 s without;
    convert at 3,000: 1.6-1.9x faster). Whatever cycles the block leaves are collected
    after it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_model(path, custom_objects=None, compile=True, safe_mode=True):
    """``keras.saving.load_model`` for models of any depth (and with caffe2keras's
    layers registered): a converted 5,000-layer net loads as any other."""
    import keras

    with deep_graphs(), paused_gc():
        return keras.saving.load_model(path, custom_objects=custom_objects,
                                       compile=compile, safe_mode=safe_mode)
