"""Convolution pieces Keras lacks: Caffe's grouped/dilated Deconvolution, and strided
subsampling (for convolutions Keras refuses: stride > 1 together with dilation > 1)."""
from __future__ import annotations

import keras
from keras import ops


def _pair(v, what):
    """An (h, w) pair from one int or two (for the 2-D layers here and in pooling.py)."""
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2:
        raise ValueError(f"{what} needs 1 or 2 values, got {v}")
    return v


@keras.saving.register_keras_serializable(package="caffe2keras")
class Subsample2D(keras.layers.Layer):
    """Keeps every ``strides``-th row and column of an NHWC tensor, starting at the
    first: ``x[:, ::sh, ::sw, :]``."""

    def __init__(self, strides=2, **kwargs):
        super().__init__(**kwargs)
        self.strides = _pair(strides, "strides")

    def call(self, x):
        sh, sw = self.strides
        return x[:, ::sh, ::sw, :]

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        sh, sw = self.strides
        return (n, None if h is None else -(-h // sh), None if w is None else -(-w // sw), c)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


@keras.saving.register_keras_serializable(package="caffe2keras")
class GroupedConv2DTranspose(keras.layers.Layer):
    """Caffe's Deconvolution: a transposed convolution with filter groups and dilation,
    whose full output (``(H-1)*stride + dilation*(k-1) + 1`` rows) loses ``cropping``
    rows/columns on each side (Caffe's ``pad``).

    NHWC. The kernel is ``(kh, kw, filters // groups, in_channels)``, Keras's
    Conv2DTranspose layout with output channels per group; group ``g`` maps input
    channels ``[g*Cin/G, (g+1)*Cin/G)`` to outputs ``[g*F/G, (g+1)*F/G)``.

    One input channel per group (depthwise, e.g. bilinear upsampling) runs as per-phase
    multiply-adds; other groupings as one dense transposed conv with a block-diagonal
    kernel.
    """

    def __init__(self, filters, kernel_size, strides=1, cropping=0, dilation_rate=1,
                 groups=1, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.cropping = _pair(cropping, "cropping")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self.groups = int(groups)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        if self.filters % self.groups:
            raise ValueError(f"groups {self.groups} must divide filters {self.filters}")
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        c = input_shape[-1]
        if c is None or c % self.groups:
            raise ValueError(f"groups {self.groups} must divide the input channels {c}")
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, self.filters // self.groups, c),
            initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                    initializer=self.bias_initializer) \
            if self.use_bias else None

    def _out_len(self, n, i):
        if n is None:
            return None
        k, s, p, d = (self.kernel_size[i], self.strides[i], self.cropping[i],
                      self.dilation_rate[i])
        return s * (n - 1) + d * (k - 1) + 1 - 2 * p

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, self._out_len(h, 0), self._out_len(w, 1), self.filters)

    def call(self, x):
        if self.groups > 1 and self.groups == x.shape[-1]:
            y = self._depthwise(x)
        else:
            y = self._block_diagonal(x)
        if self.use_bias:
            y = y + self.bias
        return y

    def _block_diagonal(self, x):
        """One dense transposed conv whose kernel is zero between groups: a few groups
        cost a few times the FLOPs, but dense kernels are what every backend runs
        fastest (grouped or zero-interleaved convolutions ran 4-80x slower)."""
        c = x.shape[-1]
        g = self.groups
        kh, kw = self.kernel_size
        fg = self.filters // g
        kernel = self.kernel
        if g > 1:  # (kh, kw, F/G, G*Cin/G) -> (kh, kw, G, F/G, G, Cin/G), zero off-diagonal
            kernel = ops.expand_dims(ops.reshape(kernel, (kh, kw, fg, g, c // g)), 2)
            eye = ops.reshape(ops.eye(g, dtype=kernel.dtype), (1, 1, g, 1, g, 1))
            kernel = ops.reshape(kernel * eye, (kh, kw, self.filters, c))
        dh, dw = self.dilation_rate
        if dh > 1 or dw > 1:
            # TensorFlow's CPU transposed conv refuses dilation: spread the taps instead
            kernel = ops.reshape(kernel, (kh, 1, kw, 1, self.filters, c))
            kernel = ops.pad(kernel, [[0, 0], [0, dh - 1], [0, 0], [0, dw - 1], [0, 0], [0, 0]])
            kernel = ops.reshape(kernel, (kh * dh, kw * dw, self.filters, c))
            kernel = kernel[:(kh - 1) * dh + 1, :(kw - 1) * dw + 1]
        y = ops.conv_transpose(x, kernel, self.strides, padding="valid", output_padding=0)
        (ph, pw), full = self.cropping, y.shape
        if ph or pw:
            y = y[:, ph:full[1] - ph, pw:full[2] - pw, :]
        return y

    def _depthwise(self, x):
        """One input channel per group (Caffe's bilinear upsampling idiom). Output row
        ``i*s + a*d - pad`` gets ``x[i] * w[a]``: split the output rows by their phase
        modulo the stride, and each phase is a sum of shifted copies of the input times
        per-channel taps: k*k fused multiply-adds on input-sized tensors, the minimal
        work, then one interleave."""
        _, h, w, c = x.shape
        m = self.filters // self.groups
        if m > 1:  # output channel c*m + j reads input channel c
            x = ops.repeat(x, m, axis=-1)
        kh, kw = self.kernel_size
        taps = ops.reshape(ops.transpose(self.kernel, (0, 1, 3, 2)), (kh, kw, c * m))
        plan = [self._phases(n, i) for i, n in enumerate((h, w))]
        (qh, pads_h, rows), (qw, pads_w, cols) = plan
        x = ops.pad(x, [[0, 0], list(pads_h), list(pads_w), [0, 0]])
        sh, sw = self.strides
        phase_rows = []
        for rh in range(sh):
            phase_cols = []
            for rw in range(sw):
                acc = None
                for a, start_h in rows[rh]:
                    for b, start_w in cols[rw]:
                        term = x[:, start_h:start_h + qh, start_w:start_w + qw, :] * taps[a, b]
                        acc = term if acc is None else acc + term
                if acc is None:  # no tap lands on this phase (kernel smaller than stride)
                    acc = ops.zeros_like(x[:, :qh, :qw, :])
                phase_cols.append(acc)
            phase_rows.append(ops.stack(phase_cols, axis=3) if sw > 1 else phase_cols[0])
        if sh > 1 or sw > 1:
            y = ops.stack(phase_rows, axis=2) if sh > 1 else ops.expand_dims(phase_rows[0], 2)
            if sw == 1:
                y = ops.expand_dims(y, 4)
            y = ops.reshape(y, (-1, qh * sh, qw * sw, c * m))
        else:
            y = phase_rows[0]
        out_h, out_w = self._out_len(h, 0), self._out_len(w, 1)
        if qh * sh != out_h or qw * sw != out_w:
            y = y[:, :out_h, :out_w, :]
        return y

    def _phases(self, n, i):
        """Along spatial axis i: phase length Q, input padding, and per phase r the taps
        (kernel index, start row in the padded input) that write rows q*s + r."""
        k, s, p, d = (self.kernel_size[i], self.strides[i], self.cropping[i],
                      self.dilation_rate[i])
        q = -(-self._out_len(n, i) // s)
        shifts = [(a, (a * d - p) % s, (a * d - p) // s) for a in range(k)]
        # phase row q reads input row q - j
        lo = max(0, max(j for _, _, j in shifts))
        hi = max(0, q - 1 - min(j for _, _, j in shifts) - (n - 1))
        taps = [[(a, lo - j) for a, r, j in shifts if r == phase] for phase in range(s)]
        return q, (lo, hi), taps

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "cropping": self.cropping, "dilation_rate": self.dilation_rate,
                "groups": self.groups, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


@keras.saving.register_keras_serializable(package="caffe2keras")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """Keras's DepthwiseConv2D (same weights, config and training) computed as one
    multiply-add per kernel tap where the backend's own op falls short: on JAX, whose CPU
    depthwise convolution is 15-30x slower than that (MobileNet-SSD: 144 -> 34 ms), and
    wherever strides or dilations differ between height and width (TensorFlow's depthwise
    op refuses them)."""

    _MAX_TAPS = 49

    def call(self, inputs):
        kh, kw = self.kernel_size
        h, w = inputs.shape[1], inputs.shape[2]
        uneven = self.strides[0] != self.strides[1] or \
            self.dilation_rate[0] != self.dilation_rate[1]
        fast = keras.backend.backend() == "jax" and kh * kw <= self._MAX_TAPS
        if not (uneven or fast) or self.data_format != "channels_last" or h is None or w is None:
            return super().call(inputs)
        (sh, sw), (dh, dw) = self.strides, self.dilation_rate
        if self.padding == "same":
            pads = []
            for size, k, s, d in ((h, kh, sh, dh), (w, kw, sw, dw)):
                total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                pads.append((total // 2, total - total // 2))
            inputs = ops.pad(inputs, [(0, 0), *pads, (0, 0)])
            h, w = h + sum(pads[0]), w + sum(pads[1])
        oh = (h - (kh - 1) * dh - 1) // sh + 1
        ow = (w - (kw - 1) * dw - 1) // sw + 1
        m = self.depth_multiplier
        out = None
        for i in range(kh):
            for j in range(kw):
                tap = inputs[:, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                             j * dw:j * dw + (ow - 1) * sw + 1:sw, :]
                k = self.kernel[i, j]  # (C, m)
                term = tap * k[:, 0] if m == 1 else ops.expand_dims(tap, -1) * k
                out = term if out is None else out + term
        if m > 1:
            out = ops.reshape(out, (-1, oh, ow, out.shape[-2] * m))
        if self.use_bias:
            out = out + self.bias
        return self.activation(out) if self.activation is not None else out
