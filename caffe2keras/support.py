"""Which Caffe layer types convert, known without importing Keras (for `inspect`)."""
from __future__ import annotations


def supported_types() -> set:
    """Types with a registered converter: built-in ones plus any added at run time with
    register_converter. Loading the registry does not import Keras."""
    from .emit.registry import CONVERTERS, load_builtin
    load_builtin()
    return set(CONVERTERS)
