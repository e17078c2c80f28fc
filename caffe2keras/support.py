"""Which Caffe layer types convert, known without importing Keras (for `inspect`).

tests/test_support.py checks that this list and the registered converters agree.
"""
from __future__ import annotations

BUILTIN_TYPES = frozenset({
    # issue: whole-net conversion
    "Convolution", "Deconvolution", "Pooling", "LRN", "InnerProduct", "BatchNorm", "Scale",
    "Bias", "Eltwise", "Concat", "Slice", "Split", "Crop", "Flatten", "Reshape", "Permute",
    "Softmax", "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp",
    "Log", "Threshold", "Dropout", "ArgMax", "Reduction", "MVN",
})


def supported_types() -> set:
    """Built-in types plus any registered at run time with register_converter."""
    from .emit.registry import CONVERTERS
    return set(BUILTIN_TYPES) | set(CONVERTERS)
