"""Layer types found in the wild (fork BN, Axpy, BVLC's recurrent and rarer layers), each
module holding everything about its types: Caffe shape function, weights function,
fresh-weight rule and converter. Keras-free at import (converters import Keras inside),
so shapes.py loads them with its own shape functions."""
# Caffe type -> fn(LayerContext) -> [(Keras layer name, Keras class name)] of the
# weight-holding layers its converter makes (export.py's fast .weights.h5 layout)
WEIGHTED_CLASSES = {}
# Caffe type -> fn(layer) -> what inspect says about how it converts (or None)
INSPECT_NOTES = {}

from . import bn, bvlc, recurrent  # noqa: F401
