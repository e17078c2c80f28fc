"""caffe2keras: Caffe models (prototxt + caffemodel) to exact Keras 3 models, no Caffe needed.

    import caffe2keras
    model = caffe2keras.convert("deploy.prototxt", "weights.caffemodel")
    out = model({"data": x_nhwc})          # {caffe blob name: tensor}

Importing this package does not import Keras; the Keras parts load on first use.
"""
from __future__ import annotations

from ._keras_hook import install as _install_keras_hook
from .errors import CaffeFormatError, CaffeWarning, UnsupportedLayerError, UserInputError

__version__ = "0.1.0"

_install_keras_hook()

_LAZY = {
    "convert": ("api", "convert"),
    "load_graph": ("graph", "load_graph"),
    "load_net": ("net", "load_net"),
    "load_model": ("depth", "load_model"),
    "load_caffemodel": ("caffemodel", "load_caffemodel"),
    "read_mean": ("mean", "read_mean"),
    "register_converter": ("emit.registry", "register_converter"),
    "register_weights": ("emit.registry", "register_weights"),
    "export_weights": ("export", "export_weights"),
    "export_model": ("deploy", "export_model"),
    "Preprocessor": ("preprocess", "Preprocessor"),
    "convert_for_training": ("train", "convert_for_training"),
    "save_caffemodel": ("train.writeback", "save_caffemodel"),
}

__all__ = ["CaffeFormatError", "CaffeWarning", "Preprocessor", "UnsupportedLayerError",
           "UserInputError", "convert", "convert_for_training", "export_model", "export_weights",
           "load_caffemodel", "load_graph", "load_model", "load_net", "read_mean",
           "register_converter", "register_weights", "save_caffemodel"]
assert set(__all__) >= set(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'caffe2keras' has no attribute '{name}'")
