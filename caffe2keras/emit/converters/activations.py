"""Element-wise activations."""
from __future__ import annotations

from ..registry import register_converter


@register_converter("ReLU")
def relu(ctx):
    import keras

    slope = ctx.param("relu_param").negative_slope
    layer = keras.layers.LeakyReLU(negative_slope=slope, name=ctx.name) if slope \
        else keras.layers.ReLU(name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]
