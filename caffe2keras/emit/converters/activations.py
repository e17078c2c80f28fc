"""Element-wise activations (Caffe's neuron layers) and Dropout.

Keras's own layers where they compute exactly what Caffe does, small layers from
emit/layers/activations.py otherwise. All keep the input's shape and layout.
"""
from __future__ import annotations

import math

import numpy as np

from ...shapes import (
    check_bottoms,
    same_shape,
    shape_fail,
)
from ..registry import Fillers, Keras2H5, register_converter

# ---------------------------------------------------------------- shapes (Caffe NCHW)

def prelu_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    shared = layer.param("prelu_param").channel_shared
    if len(bottoms[0]) < 2:
        shape_fail(layer, "PReLU needs an input with a channel axis")
    return [tuple(bottoms[0])], [() if shared else (bottoms[0][1],)]


def _one(ctx, layer):
    return [ctx.add(layer, ctx.inputs[0])]


def _relu_activation(layer):
    """Plain ReLU is Keras's "relu" activation (which the layer before may apply)."""
    return None if layer.param("relu_param").negative_slope else "relu"


@register_converter("ReLU", shape=same_shape, keras_classes=(), activation=_relu_activation)
def relu(ctx):
    import keras

    from ..layers.activations import SlopedReLU

    slope = ctx.param("relu_param").negative_slope
    if slope < 0:
        layer = SlopedReLU(slope, name=ctx.name)
    elif slope:
        layer = keras.layers.LeakyReLU(negative_slope=slope, name=ctx.name)
    else:
        layer = keras.layers.ReLU(name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


def _prelu_axes(shape, shared):
    """Keras PReLU's shared_axes and alpha shape for a Caffe input ``shape``: one alpha
    per channel (Caffe axis 1: last in NHWC, else axis 1) or one for all."""
    rank = len(shape)
    channel = 3 if rank == 4 else 1
    keras_dims = (shape[2], shape[3], shape[1]) if rank == 4 else tuple(shape[1:])
    shared_axes = [a for a in range(1, rank) if shared or a != channel]
    alpha_shape = tuple(1 if a in shared_axes else keras_dims[a - 1] for a in range(1, rank))
    return shared_axes, alpha_shape


def prelu_weights(ctx):
    shared = ctx.param("prelu_param").channel_shared
    _, alpha_shape = _prelu_axes(ctx.in_shapes[0], shared)
    return {ctx.name: [np.asarray(ctx.blobs[0]).reshape(alpha_shape)]}


@register_converter(
    "PReLU", weights=prelu_weights, shape=prelu_shape, keras_classes="PReLU",
    fillers=Fillers("prelu_param", ("filler",), unset=("prelu",)),
    keras2_h5=Keras2H5(prelu_weights, lambda ctx, n: ["alpha"]))
def prelu(ctx):
    import keras

    p = ctx.param("prelu_param")
    shared_axes, _ = _prelu_axes(ctx.in_shapes[0], p.channel_shared)
    # fresh values come from the prototxt's filler (fillers.py); 0.25 is Caffe's default
    return _one(ctx, keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25),
                                        shared_axes=shared_axes or None, name=ctx.name))


@register_converter("ELU", shape=same_shape, keras_classes=())
def elu(ctx):
    import keras

    return _one(ctx, keras.layers.ELU(alpha=ctx.param("elu_param").alpha, name=ctx.name))


@register_converter("Sigmoid", shape=same_shape, keras_classes=(),
                    activation=lambda layer: "sigmoid")
def sigmoid(ctx):
    import keras

    return _one(ctx, keras.layers.Activation("sigmoid", name=ctx.name))


@register_converter("TanH", shape=same_shape, keras_classes=(),
                    activation=lambda layer: "tanh")
def tanh(ctx):
    import keras

    return _one(ctx, keras.layers.Activation("tanh", name=ctx.name))


@register_converter("BNLL", shape=same_shape, keras_classes=())
def bnll(ctx):
    import keras

    # log(1 + exp(x)); Keras's softplus is the overflow-safe form Caffe also uses
    return _one(ctx, keras.layers.Activation("softplus", name=ctx.name))


@register_converter("AbsVal", shape=same_shape, keras_classes=())
def absval(ctx):
    from ..layers.activations import AbsVal

    return _one(ctx, AbsVal(name=ctx.name))


@register_converter("Power", shape=same_shape, keras_classes=())
def power(ctx):
    from ..layers.activations import Power

    p = ctx.param("power_param")
    return _one(ctx, Power(p.power, p.scale, p.shift, name=ctx.name))


@register_converter("Exp", shape=same_shape, keras_classes=())
def exp(ctx):
    from ..layers.activations import Exp

    p = ctx.param("exp_param")
    if p.base != -1 and not p.base > 0:
        ctx.fail(f"exp_param base must be positive, or -1 for e; found {p.base}")
    return _one(ctx, Exp(p.base, p.scale, p.shift, name=ctx.name))


@register_converter("Log", shape=same_shape, keras_classes=())
def log(ctx):
    from ..layers.activations import Log

    p = ctx.param("log_param")
    if p.base != -1 and not (p.base > 0 and p.base != 1):
        ctx.fail(f"log_param base must be positive and not 1, or -1 for e; found {p.base}")
    return _one(ctx, Log(p.base, p.scale, p.shift, name=ctx.name))


@register_converter("Threshold", shape=same_shape, keras_classes=())
def threshold(ctx):
    from ..layers.activations import Threshold

    return _one(ctx, Threshold(ctx.param("threshold_param").threshold, name=ctx.name))


@register_converter("Clip", shape=same_shape, keras_classes=())
def clip(ctx):
    from ..layers.activations import Clip

    p = ctx.param("clip_param")
    if not (p.has("min") and p.has("max")):
        ctx.fail("clip_param needs both min and max")
    if p.min > p.max:
        ctx.fail(f"clip_param min {p.min} exceeds max {p.max}")
    return _one(ctx, Clip(p.min, p.max, name=ctx.name))


@register_converter("Swish", shape=same_shape, keras_classes=())
def swish(ctx):
    import keras

    from ..layers.activations import Swish

    beta = ctx.param("swish_param").beta
    layer = keras.layers.Activation("silu", name=ctx.name) if beta == 1 else \
        Swish(beta, name=ctx.name)
    return _one(ctx, layer)


@register_converter("Dropout", shape=same_shape, keras_classes=())
def dropout(ctx):
    """Identity at inference, as in Caffe's TEST phase; Keras still drops when training.

    scale_train false (a fork option) scales by 1 - ratio at inference instead of by
    1 / (1 - ratio) while training; a Power layer after the Dropout does both."""
    import keras

    from ..layers.activations import Power

    p = ctx.param("dropout_param")
    rate = float(p.dropout_ratio)
    if not 0 <= rate < 1 or math.isnan(rate):
        ctx.fail(f"dropout_ratio must be in [0, 1), found {rate}")
    x = ctx.inputs[0]
    if p.scale_train:
        return [ctx.add(keras.layers.Dropout(rate, name=ctx.name), x)]
    x = ctx.add(keras.layers.Dropout(rate, name=ctx.sub_name("drop")), x)
    return [ctx.add(Power(1.0, 1.0 - rate, 0.0, name=ctx.name), x)]
