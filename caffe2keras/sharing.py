"""Caffe's shared parameters: ``param { name: "x" }`` in several layers makes them use
one blob, owned by the first layer that names it (Net::AppendParam); the others' blobs
in a caffemodel are copies. caffe2keras builds such a layer as a second call of its
owner's Keras layer, so one variable serves both, gets both gradients (as Caffe sums
the diffs into the owner's) and stays shared in a saved .keras."""
from __future__ import annotations

import warnings

from .errors import CaffeWarning, UnsupportedLayerError


def param_names(layer):
    """The names of a layer's param specs ('' where unnamed); V1 layers have none."""
    if layer.params._mtype.name != "LayerParameter":
        return []
    return [spec.name for spec in layer.params.param]


def shared_owners(layers, path=None, strict=True) -> dict:
    """{sharing layer name: owner layer name} for layers (in net order) that reuse
    every parameter of one earlier layer, in the same order. Partial sharing (some of a
    layer's blobs, or blobs of several owners) is refused with the reason; with
    ``strict=False`` (inference from a caffemodel, whose sharing layers hold copies of
    the shared blobs) such a layer keeps its own copy, with a warning."""
    owner_of, out = {}, {}
    for lay in layers:
        names = param_names(lay)
        owners = {owner_of[n][0].name: owner_of[n][0] for n in names if n and n in owner_of}
        if not owners:
            for i, n in enumerate(names):
                if n:
                    owner_of[n] = (lay, i)
            continue
        owner = next(iter(owners.values()))
        own = param_names(owner_of[names[0]][0]) if names[0] in owner_of else []
        if (len(owners) > 1 or not all(names) or names != own[:len(names)]
                or len(names) != len(own) or owner.type != lay.type):
            msg = (f"layer '{lay.name}' shares parameters {[n for n in names if n]} in a way "
                   f"caffe2keras does not build: a layer must share all its parameters, in "
                   f"order, with one earlier layer of the same type (here "
                   f"{', '.join(sorted(owners))})")
            if strict:
                raise UnsupportedLayerError(msg, path=path, layer=lay.name)
            warnings.warn(f"{path}: {msg}; it keeps its own copy of the caffemodel's "
                          f"values (right for inference; trained, the copies would part)",
                          CaffeWarning, stacklevel=3)
            continue
        for mine, theirs in zip(lay.params.param, owner.params.param):
            for field in ("lr_mult", "decay_mult"):  # Caffe: CHECK_EQ where both set
                if mine.has(field) and getattr(mine, field) != getattr(theirs, field):
                    raise UnsupportedLayerError(
                        f"layer '{lay.name}' shares parameter '{mine.name}' of "
                        f"'{owner.name}' with {field} {getattr(mine, field)}, not "
                        f"{getattr(theirs, field)}; Caffe requires them equal",
                        path=path, layer=lay.name)
        out[lay.name] = owner.name
    return out
