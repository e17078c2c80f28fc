"""BVLC Caffe's recurrent layers, LSTM and RNN, as single Keras layers that run the
recurrence with ``keras.ops.scan``.

Caffe's layout is kept: the sequence ``x`` is (T, N, ...) with time on axis 0 (the Keras
batch axis) and N independent streams on axis 1; ``cont`` (T, N) is 0 where a stream
starts a new sequence, which zeroes the state carried into that step. Each call starts
from zero state (Caffe's first forward pass), or from ``h0``/``c0`` when the layer was
converted with ``expose_hidden``.
"""
from __future__ import annotations

import math

import keras
from keras import ops


def _flat(x, start, nhwc):
    """``x`` flattened from Caffe axis ``start`` on, in Caffe's memory order. ``nhwc``: x
    is a 4-D Caffe blob held as NHWC."""
    if nhwc:
        x = ops.transpose(x, (0, 3, 1, 2))
    shape = x.shape
    return ops.reshape(x, (-1, *shape[1:start], math.prod(shape[start:])))


def _flat_size(shape, start, nhwc):
    if nhwc:
        shape = (shape[0], shape[3], shape[1], shape[2])
    size = math.prod(shape[start:]) if all(d is not None for d in shape[start:]) else None
    if size is None:
        raise ValueError(f"the recurrent input needs known sizes after axis {start - 1}, "
                         f"got {tuple(shape)}")
    return size, shape[1]


class _Recurrent(keras.layers.Layer):
    """Shared input handling. Inputs: [x, cont, (x_static), (h0[, c0])]."""

    GATES = 1          # gate blocks in the input transform (LSTM: 4)
    STATES = 1         # recurrent states (LSTM: h and c)

    def __init__(self, units, static_input=False, expose_hidden=False, x_nhwc=False,
                 static_nhwc=False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.static_input = bool(static_input)
        self.expose_hidden = bool(expose_hidden)
        self.x_nhwc = bool(x_nhwc)
        self.static_nhwc = bool(static_nhwc)

    def _split(self, inputs):
        inputs = list(inputs)
        want = 2 + self.static_input + self.expose_hidden * self.STATES
        if len(inputs) != want:
            raise ValueError(f"{type(self).__name__} '{self.name}' takes {want} inputs "
                             f"(x, cont{', x_static' if self.static_input else ''}"
                             f"{', initial states' if self.expose_hidden else ''}), "
                             f"got {len(inputs)}")
        x, cont = inputs[0], inputs[1]
        static = inputs[2] if self.static_input else None
        states = inputs[2 + self.static_input:]
        return x, cont, static, states

    def _add_kernels(self, input_shape):
        x_shape = input_shape[0]
        size, streams = _flat_size(x_shape, 2, self.x_nhwc)
        width = self.GATES * self.units
        self.streams = streams
        self.kernel = self.add_weight(name="kernel", shape=(size, width))
        self.bias = self.add_weight(name="bias", shape=(width,), initializer="zeros")
        if self.static_input:
            s_size, _ = _flat_size(input_shape[2], 1, self.static_nhwc)
            self.static_kernel = self.add_weight(name="static_kernel", shape=(s_size, width))
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel",
                                                shape=(self.units, width))

    def _gate_inputs(self, x, static):
        """W x_t + b (+ W_static x_static) for every step: (T, N, GATES * units)."""
        xw = ops.matmul(_flat(x, 2, self.x_nhwc), self.kernel) + self.bias
        if self.static_input:
            xw = xw + ops.matmul(_flat(static, 1, self.static_nhwc), self.static_kernel)[None]
        return xw

    def _initial(self, x, states, k):
        if self.expose_hidden:
            return ops.cast(states[k][0], x.dtype)
        return ops.zeros((self.streams, self.units), dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "static_input": self.static_input, "expose_hidden": self.expose_hidden,
                "x_nhwc": self.x_nhwc, "static_nhwc": self.static_nhwc}


@keras.saving.register_keras_serializable(package="caffe2keras")
class CaffeLSTM(_Recurrent):
    """Caffe's LSTM (lstm_layer.cpp + lstm_unit_layer.cpp). Gates in Caffe's order
    i, f, o, g along the 4*units axis:

        a_t = W x_t + b [+ W_static x_static] + U (cont_t * h_{t-1})
        c_t = cont_t * sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    Outputs h (T, N, units); with ``expose_hidden`` also h_T and c_T, each (1, N, units).
    Weights (Keras layout, (in, out)): kernel, bias, [static_kernel], recurrent_kernel.
    """

    GATES = 4
    STATES = 2

    def build(self, input_shape):
        self._add_kernels(input_shape)

    def call(self, inputs):
        x, cont, static, states = self._split(inputs)
        xw = self._gate_inputs(x, static)
        cont = ops.cast(cont, xw.dtype)
        u = self.units

        def step(carry, inp):
            h, c = carry
            a, keep = inp
            keep = keep[:, None]
            a = a + ops.matmul(keep * h, self.recurrent_kernel)
            i = ops.sigmoid(a[:, :u])
            f = ops.sigmoid(a[:, u:2 * u]) * keep
            o = ops.sigmoid(a[:, 2 * u:3 * u])
            g = ops.tanh(a[:, 3 * u:])
            c = f * c + i * g
            h = o * ops.tanh(c)
            return (h, c), (h, c)   # ys shaped like the carry: TensorFlow's scan wants it

        (h, c), (hs, _) = ops.scan(step, (self._initial(xw, states, 0),
                                     self._initial(xw, states, 1)), (xw, cont))
        if self.expose_hidden:
            return [hs, h[None], c[None]]
        return hs

    def compute_output_shape(self, input_shape):
        t, n = input_shape[0][0], input_shape[1][1]
        seq = (t, n, self.units)
        return [seq, (1, n, self.units), (1, n, self.units)] if self.expose_hidden else seq


@keras.saving.register_keras_serializable(package="caffe2keras")
class CaffeRNN(_Recurrent):
    """Caffe's RNN (rnn_layer.cpp):

        h_t = tanh(W x_t + b [+ W_static x_static] + U (cont_t * h_{t-1}))
        o_t = tanh(V h_t + b_o)

    Outputs o (T, N, units); with ``expose_hidden`` also h_T (1, N, units). Weights
    (Keras layout): kernel, bias, [static_kernel], recurrent_kernel, output_kernel,
    output_bias.
    """

    def build(self, input_shape):
        self._add_kernels(input_shape)
        self.output_kernel = self.add_weight(name="output_kernel",
                                             shape=(self.units, self.units))
        self.output_bias = self.add_weight(name="output_bias", shape=(self.units,),
                                           initializer="zeros")

    def call(self, inputs):
        x, cont, static, states = self._split(inputs)
        xw = self._gate_inputs(x, static)
        cont = ops.cast(cont, xw.dtype)

        def step(h, inp):
            a, keep = inp
            h = ops.tanh(ops.matmul(keep[:, None] * h, self.recurrent_kernel) + a)
            return h, h

        h, hs = ops.scan(step, self._initial(xw, states, 0), (xw, cont))
        out = ops.tanh(ops.matmul(hs, self.output_kernel) + self.output_bias)
        if self.expose_hidden:
            return [out, h[None]]
        return out

    def compute_output_shape(self, input_shape):
        t, n = input_shape[0][0], input_shape[1][1]
        seq = (t, n, self.units)
        return [seq, (1, n, self.units)] if self.expose_hidden else seq
