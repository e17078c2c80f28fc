"""Layer types found in the wild (fork BN, Axpy, BVLC's recurrent and rarer layers), each
module holding everything about its types: Caffe shape function, weights function,
fresh-weight rule and converter. Keras-free at import (converters import Keras inside),
so shapes.py loads them with its own shape functions."""
from . import bn, bvlc, recurrent  # noqa: F401
