"""Saving converted models: atomically, and without Keras's in-memory weights copy."""
from __future__ import annotations

import contextlib

from .files import atomic_output


@contextlib.contextmanager
def _weights_via_temp_file():
    """Keras builds model.weights.h5 in a BytesIO (a second full copy of the weights)
    whenever it thinks memory suffices, and streams it through a temp file otherwise.
    For 500 MB+ models we always want the temp file. If a Keras version lacks the hook,
    saving still works, just with its default buffering."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        yield
        return
    original = getattr(saving_lib, "is_memory_sufficient", None)
    if original is None:
        yield
        return
    saving_lib.is_memory_sufficient = lambda model: False
    try:
        yield
    finally:
        saving_lib.is_memory_sufficient = original


def save_model(model, path):
    """Write ``model`` to a .keras file; an error or Ctrl-C leaves no partial file."""
    with atomic_output(path, suffix=".keras") as tmp:
        with _weights_via_temp_file():
            model.save(tmp)
    return str(path)
