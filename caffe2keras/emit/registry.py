"""Converters, one per Caffe layer type, registered by type name.

A converter is ``fn(ctx) -> list of output tensors`` (one per top). It builds Keras
layers on ``ctx.inputs`` (4-D blobs are NHWC, any other rank keeps Caffe's axis order)
and names them from ``ctx.name``. A layer type with weights also registers a weights
function ``fn(ctx) -> {keras layer name: [arrays in that layer's weight order]}`` that
needs no Keras: the converter applies it, and weight export (export.py) reuses it.
"""
from __future__ import annotations

CONVERTERS: dict = {}
WEIGHTS: dict = {}


def register_converter(*types, weights=None, shape=None, module=None, layer=None):
    """Decorator: ``@register_converter("MyType")`` makes ``fn(ctx)`` the converter for
    Caffe layers of that type (replacing any built-in one).

    module, layer: for ``"Python"`` layers, the ``python_param`` they are written with:
             ``@register_converter("Python", module="rpn.proposal_layer",
             layer="ProposalLayer")`` converts exactly those (their type reads
             ``Python:rpn.proposal_layer.ProposalLayer``; that string works as a type too).

    weights: the matching weights function (see the module docstring), if the layer has
             blobs and the converter does not call ``ctx.set_weights`` itself.
    shape:   ``fn(layer, bottom_shapes) -> (top_shapes, param_shapes)`` in Caffe NCHW, for
             `inspect` and weight checks. Without it, output shapes are read off the Keras
             tensors the converter returns.
    """
    if not types or not all(isinstance(t, str) and t for t in types):
        raise TypeError("register_converter needs one or more Caffe layer type names")
    if module is not None or layer is not None:
        if types != ("Python",) or not module or not layer:
            raise TypeError('module= and layer= go with the type "Python", both given: '
                            'register_converter("Python", module="pkg.mod", layer="Class")')
        from ..net import python_layer_type
        types = (python_layer_type(module=module, layer=layer),)

    def register(fn):
        for t in types:
            CONVERTERS[t] = fn
            if weights is not None:
                WEIGHTS[t] = weights
            if shape is not None:
                from ..shapes import SHAPE_FUNCTIONS
                SHAPE_FUNCTIONS[t] = shape
        return fn
    return register


def register_weights(*types):
    """Decorator: the weights function for Caffe layer ``types``."""
    def register(fn):
        for t in types:
            WEIGHTS[t] = fn
        return fn
    return register


def load_builtin():
    """Import the built-in converters (they register themselves)."""
    from . import converters  # noqa: F401
