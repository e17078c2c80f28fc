"""One record per Caffe layer type: everything caffe2keras knows about that type.

A :class:`LayerType` holds the converter, the weights function, the shape function, the
setting checks, the Keras classes the converter makes (for the weight-export fast path),
the fillers (fresh weights), the keras2-h5 layout and how layers of the type fuse with
an element-wise activation after them. One call fills it::

    @caffe2keras.register_converter("MyType", weights=my_weights, shape=my_shape,
                                    keras_classes="MyKerasLayer")
    def my_type(ctx): ...

The built-in types register themselves the same way, each next to its converter in
``emit/converters/``. Read a record with ``layer_type(name)`` (``TYPES`` holds them all).
``CONVERTERS``, ``WEIGHTS`` and ``SHAPE_FUNCTIONS`` here are views of the records (type
name -> one field), kept for code that reads them; README's "Adding a layer type" walks
through a new type.
"""
from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Fillers:
    """How to draw a layer's blobs when no caffemodel gives them (fillers.py).

    param:  the layer's params message holding the filler fields ("convolution_param").
    fields: the filler field of blob 0, 1, ... ("weight_filler", "bias_filler").
    unset:  what each blob starts as when its field is absent from the prototxt: "glorot"
            (Keras's default: Caffe's xavier with variance_norm AVERAGE), "zero", "one" or
            "prelu" (0.25); the last entry repeats for further blobs.
    """
    param: str
    fields: tuple
    unset: tuple = ("glorot", "zero")


@dataclass(frozen=True)
class Keras2H5:
    """The legacy keras2-h5 export of a type (weights saved by Keras 2 layer name).

    transform: ``fn(ctx) -> {keras layer name: [arrays]}`` in Keras 2's layout (often the
               weights function itself).
    names:     ``fn(ctx, n) -> [weight names]`` for a layer holding ``n`` arrays
               (e.g. ["kernel", "bias"][:n]).
    needs_shape: the transform reads ``ctx.in_shapes`` (else it works from the blobs
               alone, also when the input shape is unknown).
    """
    transform: Callable
    names: Callable
    needs_shape: bool = True


@dataclass
class LayerType:
    """What caffe2keras knows about one Caffe layer type (one record per type name).

    name:      the Caffe type ("Convolution"), or an internal step type ("BatchNorm+Scale").
    converter: ``fn(ctx) -> [output tensors]``, one per top. ``ctx`` (a StepContext) holds
               ``ctx.inputs`` (4-D tensors NHWC, other ranks in Caffe's axis order, see
               caffe2keras.layout), ``ctx.layer`` / ``ctx.param("x_param")``,
               ``ctx.in_shapes`` / ``ctx.out_shapes`` (Caffe NCHW), ``ctx.name`` (give the
               weighted Keras layer this name), ``ctx.sub_name(suffix)`` for helper layers,
               ``ctx.add(layer, x)`` to call a Keras layer, ``ctx.fail(message)`` to refuse
               (the error names file, line:column and layer). None: the type's shapes are
               known but it does not convert (it is listed as unsupported).
    weights:   ``fn(ctx) -> {keras layer name: [arrays in that layer's weight order]}``
               from ``ctx.blobs`` (Caffe layout), Keras-free (weight export calls it too).
               None for types without blobs.
    shape:     ``fn(layer, bottom_shapes) -> (top_shapes, param_blob_shapes)`` in Caffe
               NCHW, as Caffe's Reshape(); for `inspect`, weight checks and fillers. None:
               output shapes are read off the Keras tensors after conversion.
    check:     ``fn(layer) -> str | None``: why this layer's settings are unsupported
               (None: they are fine). Runs up front on every layer, so a conversion or
               `inspect` lists unsupported settings together with unsupported types.
    keras_classes: the Keras layers holding weights that the converter makes, for the
               weight-export fast path (no model built). None: not known (exports build
               the model without weights instead: always right, slower). ``()``: none.
               A class name "Dense": one layer named ``ctx.name``. Or ``fn(ctx) ->
               [(keras layer name, Keras class name)]`` in data-flow order, or None when
               this layer's classes depend on more than the record knows.
    fillers:   a :class:`Fillers`, or ``fn(layer, param_shapes, rng) -> [blobs]``; None:
               fresh models keep the Keras initializers.
    keras2_h5: a :class:`Keras2H5`; None: keras2-h5 uses ``weights`` with numbered names.
    note:      ``fn(layer) -> str | None``: what `inspect` says about how this layer
               converts where a user needs to know (a fork's family, static shapes for
               a data-dependent top...); None: nothing to say.
    activation: for element-wise types: ``fn(layer) -> str | None``, the name of the
               Keras activation that computes this layer exactly ("relu"), so that the
               layer before it may apply it (emit/plan.py); None: never fused.
    takes_activation: ``fn(layer) -> bool``: the converter of this layer gives
               ``ctx.activation`` (a Keras activation name, or None) to its weighted Keras
               layer, whose output is then the step's output, as ``Conv2D(...,
               activation="relu")`` in keras.applications. None: it does not.
    """
    name: str
    converter: Callable | None = None
    weights: Callable | None = None
    shape: Callable | None = None
    check: Callable | None = None
    keras_classes: object = None
    fillers: Fillers | Callable | None = None
    keras2_h5: Keras2H5 | None = None
    note: Callable | None = None
    activation: Callable | None = None
    takes_activation: Callable | None = None

    def weighted_classes(self, ctx):
        """[(keras layer name, Keras class name)] of the weight-holding layers the
        converter makes for ``ctx``'s step, in data-flow order; None when not known."""
        kc = self.keras_classes
        if kc is None:
            return None
        if isinstance(kc, str):
            return [(ctx.name, kc)]
        if isinstance(kc, (tuple, list)):
            if kc:
                raise TypeError(f"{self.name}: keras_classes takes (), a class name or a "
                                f"function, not {kc!r}")
            return []
        return kc(ctx)


TYPES: dict = {}   # type name -> LayerType

_RECORD_FIELDS = {f.name for f in fields(LayerType)} - {"name"}
_builtin = {"loading": False, "loaded": False}


def layer_type(name: str) -> LayerType | None:
    """The record of Caffe type ``name`` (built-in types loaded first), or None."""
    load_builtin()
    return TYPES.get(name)


def _update(name: str, **values) -> LayerType:
    rec = TYPES.get(name)
    rec = LayerType(name, **values) if rec is None else replace(rec, **values)
    TYPES[name] = rec
    return rec


def register_converter(*types, weights=None, shape=None, check=None, keras_classes=None,
                       fillers=None, keras2_h5=None, note=None, activation=None,
                       takes_activation=None, module=None, layer=None):
    """Decorator: ``@register_converter("MyType", weights=..., shape=...)`` makes
    ``fn(ctx)`` the converter of Caffe layers of ``types`` and fills their records; see
    :class:`LayerType` for what each keyword takes.

    Replacing a built-in type keeps its weights, shape, check, fillers, keras2_h5 and note
    unless given here (so a new converter still gets the built-in weights), but forgets
    its ``keras_classes``: only you know which Keras layers your converter makes, so
    weight export takes the always-right slow path unless you pass them. It forgets
    ``activation`` and ``takes_activation`` too: a fused step never calls your converter
    for the activation, and yours need not apply one.

    module, layer: for ``"Python"`` layers, the ``python_param`` they are written with:
    ``@register_converter("Python", module="rpn.proposal_layer", layer="ProposalLayer")``
    converts exactly those (their type reads ``Python:rpn.proposal_layer.ProposalLayer``;
    that string works as a type name too).
    """
    if not types or not all(isinstance(t, str) and t for t in types):
        raise TypeError("register_converter needs one or more Caffe layer type names")
    if module is not None or layer is not None:
        if types != ("Python",) or not module or not layer:
            raise TypeError('module= and layer= go with the type "Python", both given: '
                            'register_converter("Python", module="pkg.mod", layer="Class")')
        from ..net import python_layer_type
        types = (python_layer_type(module=module, layer=layer),)
    if not _builtin["loading"]:
        load_builtin()  # a user's type must replace the built-in one, not be replaced by it
    given = {"weights": weights, "shape": shape, "check": check, "fillers": fillers,
             "keras2_h5": keras2_h5, "note": note}
    given = {k: v for k, v in given.items() if v is not None}

    def register(fn):
        for t in types:
            _update(t, converter=fn, keras_classes=keras_classes, activation=activation,
                    takes_activation=takes_activation, **given)
        return fn
    return register


def register_weights(*types):
    """Decorator: ``fn(ctx)`` becomes the weights function of ``types`` (see
    :class:`LayerType`); forgets their ``keras_classes`` as register_converter does."""
    if not _builtin["loading"]:
        load_builtin()

    def register(fn):
        for t in types:
            _update(t, weights=fn, keras_classes=None)
        return fn
    return register


def register_shape(*types):
    """Decorator for records of types whose shapes are known but which do not convert
    (`inspect` shows their shapes, conversion lists them as unsupported); a convertible
    type passes ``shape=`` to register_converter instead."""
    def register(fn):
        for t in types:
            _update(t, shape=fn)
        return fn
    return register


def unregister(*types):
    """Forget the records of ``types`` (tests; built-in types come back only on restart)."""
    for t in types:
        TYPES.pop(t, None)


def load_builtin():
    """Import the built-in converters (they register themselves). Keras-free."""
    if _builtin["loaded"] or _builtin["loading"]:
        return
    _builtin["loading"] = True
    try:
        from . import converters  # noqa: F401
        _builtin["loaded"] = True
    finally:
        _builtin["loading"] = False


class FieldView(MutableMapping):
    """A dict-like view of one field of the records: type name -> that field (records
    whose field is None are absent). Setting an item updates the record (setting a
    converter or weights forgets ``keras_classes``, as register_converter does);
    deleting one clears the field."""

    def __init__(self, field_name: str):
        assert field_name in _RECORD_FIELDS
        self.field = field_name

    def _records(self):
        load_builtin()
        return {t: r for t, r in TYPES.items() if getattr(r, self.field) is not None}

    def __getitem__(self, t):
        # one lookup, not a scan of every record: the builder asks per layer
        load_builtin()
        rec = TYPES.get(t)
        value = None if rec is None else getattr(rec, self.field)
        if value is None:
            raise KeyError(t)
        return value

    def __contains__(self, t):
        try:
            self[t]
        except KeyError:
            return False
        return True

    def __setitem__(self, t, value):
        load_builtin()
        extra = {"keras_classes": None} if self.field in ("converter", "weights") else {}
        if self.field == "converter":
            extra.update(activation=None, takes_activation=None)
        _update(t, **{self.field: value}, **extra)

    def __delitem__(self, t):
        if t not in self._records():
            raise KeyError(t)
        rec = _update(t, **{self.field: None})
        if all(getattr(rec, f) is None for f in _RECORD_FIELDS):
            del TYPES[t]

    def __iter__(self):
        return iter(self._records())

    def __len__(self):
        return len(self._records())

    def __repr__(self):
        return f"<{self.field} of {sorted(self)}>"


CONVERTERS = FieldView("converter")
WEIGHTS = FieldView("weights")
SHAPE_FUNCTIONS = FieldView("shape")
