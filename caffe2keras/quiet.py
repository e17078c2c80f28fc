"""Keep TensorFlow's and LiteRT's C++ start-up lines off a command's stderr.

TensorFlow writes its oneDNN and absl notices from C++ straight to file descriptor 2 while it
is imported (TF_CPP_MIN_LOG_LEVEL does not reach them: they come before absl's logging is
set up), and LiteRT announces its XNNPACK delegate on a model's first run. Keras imports
TensorFlow for file I/O whenever it is installed, even on JAX or torch, so these lines
landed in the middle of the command line's and the demo's output. Only the command line,
the demo and the artifact runtime use this; importing caffe2keras changes nothing.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys


@contextlib.contextmanager
def muted_stderr():
    """Point file descriptor 2 at /dev/null for the block (what C++ code writes below
    Python's sys.stderr); restored however the block ends."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing to mute
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds `name` the usual way, once, and runs its module code with stderr muted."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one import; the lookup below must not find us again
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _MutedLoader(spec.loader)
        return spec


class _MutedLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with muted_stderr():
            self.loader.exec_module(module)


def quiet_import(name):
    """Mute what module `name` writes to stderr if and when it is first imported (no
    import now: a command that never needs it pays nothing)."""
    if name in sys.modules:
        return
    if not any(isinstance(f, _QuietImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport(name))


def quiet_tensorflow_import():
    """Also TensorFlow's later C++ info and warning lines (the TFLite converter's dozen,
    say): errors still show. An explicit TF_CPP_MIN_LOG_LEVEL is kept."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_import("tensorflow")
