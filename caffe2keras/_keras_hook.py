"""Register our Keras layers whenever Keras is imported, without importing it ourselves.

`import caffe2keras` must make saved `.keras` files loadable (Keras looks custom layers
up in its registry), yet reading Caffe files must not pay for importing Keras and a
backend (seconds, and hundreds of MB that the weight-reading benchmark would count).
So: register now if Keras is already imported, else as soon as its import finishes.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys


def _register():
    from .emit import layers  # noqa: F401  (decorators register with Keras)
    from .train import layers as _train_layers  # noqa: F401
    from .train import optimizer as _optimizer  # noqa: F401


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            _register()

        spec.loader.exec_module = exec_module
        return spec


def install():
    if "keras" in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterKerasImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
