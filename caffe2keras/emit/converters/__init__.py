"""Built-in converters; importing the modules registers them.

Converter modules import Keras (and our Keras layers) inside the converter functions,
never at module level: `inspect` loads this registry to list supported types and must
stay free of Keras's import cost.
"""
from . import activations, conv, dense, detect, fork, norm, pooling, ssd, tensor  # noqa: F401
