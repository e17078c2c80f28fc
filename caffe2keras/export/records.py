"""What weight export needs from each type's record (emit/registry.py), read in one place.

Export knows nothing about particular Caffe types: the Keras classes a converter makes
(the fast path's .weights.h5 paths), the keras2-h5 layout and the weights function all
come from the record that ``register_converter`` fills.
"""
from __future__ import annotations


def record(type_name):
    from ..emit.registry import layer_type

    return layer_type(type_name)


def weights_function(type_name):
    rec = record(type_name)
    return None if rec is None else rec.weights


def keras2_export(type_name, known_shapes):
    """(transform, names function or None, why not) for keras2-h5 / npz keras layout:
    the record's keras2_h5 layout, else its weights function with numbered names."""
    rec = record(type_name)
    k2 = None if rec is None else rec.keras2_h5
    weights = None if rec is None else rec.weights
    if k2 is not None and (known_shapes or not k2.needs_shape):
        return k2.transform, k2.names, ""
    if weights is not None and known_shapes:
        return weights, None, ""
    if k2 is not None or weights is not None:
        return None, None, "input shape unknown"
    return None, None, "no weights function"


def known_layout(type_name):
    """Whether the type has a known Keras layout (keras2-h5 or weights function)."""
    rec = record(type_name)
    return rec is not None and (rec.keras2_h5 is not None or rec.weights is not None)


def weighted_classes(step, ctx):
    """[(keras layer name, Keras class name)] of the weight-holding layers the converter
    makes for ``step``, in data-flow order; None when not known (a converter without
    keras_classes, e.g. one a user registered, or a layer the record cannot tell)."""
    rec = record(step.type)
    if rec is None or rec.converter is None:
        return None
    return rec.weighted_classes(ctx)
