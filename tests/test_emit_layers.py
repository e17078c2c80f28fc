"""Our custom Keras layers for Caffe's compute layers: against direct numpy loops of
Caffe's definitions, config round trips, and .keras save/load in safe mode."""
import math

import keras
import numpy as np
import pytest

import caffe2keras  # noqa: F401  (registers the layers)
from caffe2keras import layout
from caffe2keras.emit.layers.conv import GroupedConv2DTranspose, Subsample2D
from caffe2keras.emit.layers.lrn import MVN, LRNAcrossChannels, LRNWithinChannel
from caffe2keras.emit.layers.pooling import CaffePooling2D
from caffe2keras.emit.layers.scale import Bias, Scale

RNG = np.random.default_rng(7)


def rand(*shape, scale=2.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def run(layer, x):
    return keras.ops.convert_to_numpy(layer(x))


def close(got, ref, tol=1e-5):
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


# ---------------------------------------------------------------- numpy references (NCHW)

def caffe_deconv(x, w, b, stride, pad, dil, group):
    """Caffe Deconvolution: scatter each input pixel through its group's kernel,
    then crop ``pad`` from each side. w: (Cin, Cout/G, kh, kw)."""
    n, c, h, wd = x.shape
    cin_g, cout_g = c // group, w.shape[1]
    kh, kw = w.shape[2:]
    full = (stride[0] * (h - 1) + dil[0] * (kh - 1) + 1, stride[1] * (wd - 1) + dil[1] * (kw - 1) + 1)
    y = np.zeros((n, cout_g * group, *full), np.float64)
    for ci in range(c):
        g = ci // cin_g
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for bb in range(kw):
                        y[:, g * cout_g:(g + 1) * cout_g, i * stride[0] + a * dil[0],
                          j * stride[1] + bb * dil[1]] += x[:, ci, i, j, None] * w[ci, :, a, bb]
    y = y[:, :, pad[0]:full[0] - pad[0], pad[1]:full[1] - pad[1]]
    if b is not None:
        y += b[None, :, None, None]
    return y


def caffe_pool(x, method, k, s, pad, ceil=True):
    n, c, h, w = x.shape

    def size(length, kk, ss, pp):
        span = length + 2 * pp - kk
        o = (math.ceil(span / ss) if ceil else span // ss) + 1
        if pp and (o - 1) * ss >= length + pp:
            o -= 1
        return o

    oh, ow = size(h, k[0], s[0], pad[0]), size(w, k[1], s[1], pad[1])
    y = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            if method == "stochastic":
                h0, w0 = i * s[0], j * s[1]
                win = x[:, :, h0:min(h0 + k[0], h), w0:min(w0 + k[1], w)].astype(np.float64)
                total = win.sum(axis=(2, 3)) + np.finfo(np.float32).tiny
                y[:, :, i, j] = (win * win).sum(axis=(2, 3)) / total
                continue
            h0, w0 = i * s[0] - pad[0], j * s[1] - pad[1]
            if method == "max":
                h1, w1 = min(h0 + k[0], h), min(w0 + k[1], w)
                h0, w0 = max(h0, 0), max(w0, 0)
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].max(axis=(2, 3))
            else:
                h1, w1 = min(h0 + k[0], h + pad[0]), min(w0 + k[1], w + pad[1])
                area = (h1 - h0) * (w1 - w0)
                h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / area
    return y


def caffe_lrn_across(x, n, alpha, beta, k):
    c = x.shape[1]
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), (n // 2, n // 2), (0, 0), (0, 0)])
    total = sum(sq[:, i:i + c] for i in range(n))
    return x * (k + alpha / n * total) ** -beta


def caffe_lrn_within(x, n, alpha, beta):
    return x * (1 + alpha * caffe_pool(x.astype(np.float64) ** 2, "ave", (n, n), (1, 1),
                                       (n // 2, n // 2))) ** -beta


def nhwc(a):
    return np.ascontiguousarray(layout.to_keras(a))


def nchw(a):
    return layout.to_caffe(a)


# ---------------------------------------------------------------- conv

@pytest.mark.parametrize("stride,pad,dil,group,cin,cout", [
    ((2, 2), (1, 1), (1, 1), 3, 3, 3),     # depthwise bilinear-style
    ((3, 2), (2, 0), (2, 1), 2, 4, 6),     # rect stride, dilation, crop > ext-1-(s-1)
    ((1, 1), (0, 0), (1, 3), 1, 2, 3),     # dilation only
    ((2, 3), (0, 1), (1, 1), 2, 2, 4),     # depthwise x2, kernel smaller than stride
    ((2, 1), (3, 0), (2, 3), 3, 3, 6),     # depthwise x2, dilation, crop past the taps
    ((1, 2), (0, 1), (1, 1), 2, 4, 6),     # block-diagonal, 2 inputs per group
])
def test_grouped_conv2d_transpose_matches_caffe_deconv(stride, pad, dil, group, cin, cout):
    kh, kw = (2, 2) if stride == (2, 3) else (3, 2)
    x = rand(2, cin, 4, 5)
    w = rand(cin, cout // group, kh, kw, scale=0.5)
    b = rand(cout, scale=0.5)
    layer = GroupedConv2DTranspose(cout, (kh, kw), strides=stride, cropping=pad,
                                   dilation_rate=dil, groups=group)
    layer.build((None, 4, 5, cin))
    layer.set_weights([w.transpose(2, 3, 1, 0), b])
    got = run(layer, nhwc(x))
    ref = caffe_deconv(x, w, b, stride, pad, dil, group)
    assert layer.compute_output_shape((None, 4, 5, cin)) == (None, *nhwc(ref).shape[1:])
    close(nchw(got), ref)


def test_depthwise_bilinear_upsampling_kernel_16_stride_8():
    # Caffe's bilinear-upsampling idiom: group = channels, kernel 2f, stride f, pad f/2
    x = rand(1, 2, 3, 4)
    f = np.ogrid[:16, :16]
    bil = (1 - np.abs(f[0] / 8 - 7.5 / 8)) * (1 - np.abs(f[1] / 8 - 7.5 / 8))
    w = np.stack([bil, 2 * bil])[:, None].astype(np.float32)
    layer = GroupedConv2DTranspose(2, 16, strides=8, cropping=4, groups=2, use_bias=False)
    layer.build((None, 3, 4, 2))
    layer.set_weights([w.transpose(2, 3, 1, 0)])
    close(nchw(run(layer, nhwc(x))), caffe_deconv(x, w, None, (8, 8), (4, 4), (1, 1), 2))


def test_subsample2d():
    x = rand(1, 7, 6, 2)
    layer = Subsample2D((3, 2))
    close(run(layer, x), x[:, ::3, ::2])
    assert layer.compute_output_shape((None, 7, 6, 2)) == (None, 3, 3, 2)


# ---------------------------------------------------------------- pooling

@pytest.mark.parametrize("method,k,s,pad,ceil", [
    ("max", (3, 3), (2, 2), (1, 1), True),
    ("max", (3, 2), (2, 3), (2, 1), True),
    ("max", (2, 2), (2, 2), (1, 1), True),      # last window starts in the padding
    ("ave", (3, 3), (2, 2), (1, 1), True),
    ("ave", (4, 3), (3, 2), (2, 0), True),      # overhang past H + pad
    ("ave", (3, 3), (2, 2), (0, 0), True),
    ("ave", (2, 3), (1, 2), (0, 1), False),
    ("stochastic", (3, 3), (2, 2), (0, 0), True),
    ("stochastic", (2, 2), (2, 2), (0, 0), False),
])
def test_caffe_pooling2d_matches_caffe_loops(method, k, s, pad, ceil):
    x = rand(2, 3, 7, 8)
    if method == "max":
        x = -np.abs(x) - 1  # all negative: zero padding would win
    if method == "stochastic":
        x = np.abs(x)  # as after a ReLU
    layer = CaffePooling2D(method, k, s, pad=pad, ceil_mode=ceil)
    ref = caffe_pool(x, method, k, s, pad, ceil)
    got = run(layer, nhwc(x))
    assert layer.compute_output_shape((None, 7, 8, 3)) == (None, *nhwc(ref).shape[1:])
    close(nchw(got), ref)


def test_caffe_pooling2d_rejects_bad_settings():
    with pytest.raises(ValueError, match="method"):
        CaffePooling2D("min", 2)
    with pytest.raises(ValueError, match="pad"):
        CaffePooling2D("max", 2, pad=2)


# ---------------------------------------------------------------- LRN, MVN

@pytest.mark.parametrize("n,alpha,beta,k", [(5, 1e-4 * 50, 0.75, 2.0), (1, 0.3, 0.5, 0.5),
                                             (7, 2.0, 1.5, 4.0)])
def test_lrn_across_channels(n, alpha, beta, k):
    x = rand(2, 9, 4, 5)
    got = run(LRNAcrossChannels(n, alpha, beta, k), nhwc(x))
    close(nchw(got), caffe_lrn_across(x, n, alpha, beta, k))


def test_lrn_across_channels_on_caffe_layout_axis():
    x = rand(2, 9, 4, 5)
    got = run(LRNAcrossChannels(3, 0.5, 0.75, 1.0, axis=1), x)
    close(got, caffe_lrn_across(x, 3, 0.5, 0.75, 1.0))


@pytest.mark.parametrize("n,alpha,beta", [(3, 0.5, 0.75), (5, 1.0, 0.5), (1, 3.0, 0.5)])
def test_lrn_within_channel(n, alpha, beta):
    x = rand(2, 3, 6, 7)
    got = run(LRNWithinChannel(n, alpha, beta), nhwc(x))
    close(nchw(got), caffe_lrn_within(x, n, alpha, beta))


@pytest.mark.parametrize("axes,var,eps", [((1, 2), True, 1e-9), ((1, 2, 3), True, 0.5),
                                          ((1, 2), False, 1e-9), ((), True, 1e-9)])
def test_mvn(axes, var, eps):
    x = rand(2, 4, 5, 3) + 3
    got = run(MVN(axes, normalize_variance=var, epsilon=eps), x)
    x64 = x.astype(np.float64)
    if not axes:
        ref = np.zeros_like(x64)
    else:
        ref = x64 - x64.mean(axis=axes, keepdims=True)
        if var:  # Caffe: eps added to the standard deviation
            ref = ref / (np.sqrt((ref ** 2).mean(axis=axes, keepdims=True)) + eps)
    close(got, ref)


# ---------------------------------------------------------------- Scale, Bias

def test_scale_learned_and_second_input():
    x = rand(2, 4, 5, 3)
    layer = Scale(axes=[1, 3], use_bias=True)
    layer.build(x.shape)
    s, b = rand(4, 3), rand(4, 3)
    layer.set_weights([s, b])
    close(run(layer, x), x * s[None, :, None, :] + b[None, :, None, :])
    assert [w.name for w in layer.weights] == ["scale", "bias"]

    # second input in another axis order: factor axis 0 runs along input axis 3
    f = rand(2, 3, 4)           # (batch, C, H) in Caffe order against NHWC x
    two = Scale(axes=[0, 3, 1], use_bias=True)
    two.build([x.shape, f.shape])
    bias = rand(2, 4, 3)        # learned bias: input axis order (0, 1, 3)
    two.set_weights([bias])
    got = keras.ops.convert_to_numpy(two([x, f]))
    ref = x * f.transpose(0, 2, 1)[:, :, None, :] + bias[:, :, None, :]
    close(got, ref)
    assert [w.name for w in two.weights] == ["bias"]


def test_scale_scalar_and_trailing():
    x = rand(2, 3, 4)
    scalar = Scale(axes=[])
    scalar.build(x.shape)
    scalar.set_weights([np.array(1.5, np.float32)])
    close(run(scalar, x), x * 1.5)
    last = Scale(axes=[2])
    last.build(x.shape)
    w = rand(4)
    last.set_weights([w])
    close(run(last, x), x * w)


def test_bias_learned_and_second_input():
    x = rand(2, 4, 5, 3)
    layer = Bias(axes=[1, 2])
    layer.build(x.shape)
    b = rand(4, 5)
    layer.set_weights([b])
    close(run(layer, x), x + b[None, :, :, None])
    other = rand(2, 3)
    got = keras.ops.convert_to_numpy(Bias(axes=[0, 3])([x, other]))
    close(got, x + other[:, None, None, :])


def test_learned_factor_over_free_batch_axis_is_refused():
    inp = keras.Input((3, 4))
    with pytest.raises(ValueError, match="needs their sizes"):
        Scale(axes=[0, 1])(inp)


# ---------------------------------------------------------------- config and saving

@pytest.fixture(scope="module")
def all_layers_model():
    inp = keras.Input((8, 9, 4), name="x")
    vec = keras.Input((4,), name="v")
    y = GroupedConv2DTranspose(6, 3, strides=2, cropping=1, dilation_rate=(1, 2),
                               groups=2, name="deconv")(inp)
    y = CaffePooling2D("ave", 3, 2, pad=1, name="pool_ave")(y)
    y = CaffePooling2D("max", 3, 2, pad=1, name="pool_max")(y)
    y = LRNAcrossChannels(3, 0.5, 0.75, 2.0, name="lrn")(y)
    y = LRNWithinChannel(3, 0.5, 0.75, name="lrn_within")(y)
    y = Scale(axes=[1, 3], use_bias=True, name="scale")(y)
    y = Bias(axes=[3], name="bias")(y)
    y = MVN((1, 2), epsilon=1e-3, name="mvn")(y)
    y = Subsample2D(2, name="sub")(y)
    z = Scale(axes=[0, 3], name="scale2")([inp, vec])
    z = CaffePooling2D("stochastic", 2, 2, name="pool_sto")(keras.layers.ReLU()(z))
    return keras.Model({"x": inp, "v": vec}, {"y": y, "z": z})


def test_config_round_trip_gives_the_same_layers(all_layers_model):
    model = all_layers_model
    for layer in model.layers:
        if not type(layer).__module__.startswith("caffe2keras"):
            continue
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_keras_save_load_in_safe_mode(all_layers_model, tmp_path):
    model = all_layers_model
    for w in model.weights:  # non-trivial weights, so a lost weight shows
        w.assign(RNG.uniform(0.5, 1.5, tuple(w.shape)).astype(np.float32))
    feed = {"x": rand(2, 8, 9, 4), "v": rand(2, 4)}
    before = {k: keras.ops.convert_to_numpy(v) for k, v in model(feed).items()}
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    after = {k: keras.ops.convert_to_numpy(v) for k, v in loaded(feed).items()}
    for k, value in before.items():
        close(after[k], value, 1e-6)


def _depthwise_reference(x, kernel, bias, strides, dilation, padding):
    """Depthwise convolution by its definition, in numpy (NHWC, kernel (kh, kw, C, m))."""
    kh, kw, c, m = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    n, h, w, _ = x.shape
    if padding == "same":
        pads = []
        for size, k, s, d in ((h, kh, sh, dh), (w, kw, sw, dw)):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0), *pads, (0, 0)])
        h, w = x.shape[1:3]
    oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, oh, ow, c, m), np.float64)
    for i in range(kh):
        for j in range(kw):
            tap = x[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
            out += tap[..., None] * kernel[i, j]
    return out.reshape(n, oh, ow, c * m) + bias


@pytest.mark.parametrize("kernel,strides,dilation,padding,multiplier", [
    (3, 1, 1, "same", 1), (3, 2, 1, "valid", 1), (3, 1, 2, "same", 1), (5, 2, 1, "same", 1),
    ((3, 1), (2, 1), 1, "valid", 2), (7, 1, 1, "valid", 3), (3, 1, (2, 1), "valid", 1),
])
def test_depthwise_conv2d_equals_its_definition(kernel, strides, dilation, padding, multiplier):
    """Our DepthwiseConv2D (taps as multiply-adds on JAX and for uneven strides, which
    TensorFlow's own op refuses) against the definition."""
    from caffe2keras.emit.layers.conv import DepthwiseConv2D

    x = np.random.default_rng(1).standard_normal((2, 11, 12, 4)).astype("float32")
    layer = DepthwiseConv2D(kernel, strides=strides, dilation_rate=dilation, padding=padding,
                            depth_multiplier=multiplier, use_bias=True)
    layer.build(x.shape)
    layer.bias.assign(np.arange(4 * multiplier, dtype="float32"))
    kernel_np = keras.ops.convert_to_numpy(layer.kernel.value)
    want = _depthwise_reference(x, kernel_np, np.arange(4 * multiplier), layer.strides,
                                layer.dilation_rate, padding)
    got = keras.ops.convert_to_numpy(layer(x))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert type(DepthwiseConv2D.from_config(layer.get_config())) is DepthwiseConv2D
