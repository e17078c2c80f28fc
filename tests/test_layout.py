"""caffe2keras.layout: the NCHW<->NHWC convention and the weight-kernel transforms."""
import numpy as np

from caffe2keras import layout


def test_axes_and_shapes_round_trip():
    for ax in range(4):
        assert layout.caffe_axis(layout.keras_axis(ax, 4), 4) == ax
    assert layout.keras_axis(1, 4) == 3 and layout.keras_axis(1, 2) == 1
    assert layout.keras_shape((2, 3, 5, 7)) == (2, 5, 7, 3)
    assert layout.caffe_shape((2, 5, 7, 3)) == (2, 3, 5, 7)
    assert layout.keras_shape((2, 3)) == (2, 3)
    x = np.arange(2 * 3 * 5 * 7).reshape(2, 3, 5, 7)
    assert layout.to_keras(x)[1, 4, 6, 2] == x[1, 2, 4, 6]
    np.testing.assert_array_equal(layout.to_caffe(layout.to_keras(x)), x)
    assert layout.same_memory_order((1, 1, 5, 5)) and not layout.same_memory_order((1, 2, 5, 5))


def test_conv_kernel_matches_the_caffe_cross_correlation():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 2, 2))        # OIHW
    x = rng.standard_normal((3, 5, 5))           # CHW
    caffe = np.einsum("oihw,ihw->o", w, x[:, 1:3, 2:4])
    k = layout.conv_kernel(w)                    # HWIO
    keras = np.einsum("hwio,hwi->o", k, layout.to_keras(x[None])[0, 1:3, 2:4])
    np.testing.assert_allclose(keras, caffe)


def test_depthwise_and_grouped_deconv_kernels():
    w = np.arange(6 * 1 * 2 * 2, dtype=float).reshape(6, 1, 2, 2)  # C=3, m=2
    k = layout.depthwise_kernel(w, 3)
    assert k.shape == (2, 2, 3, 2)
    np.testing.assert_array_equal(k[:, :, 1, 0], w[2, 0])          # output 1*2+0 reads c=1
    d = np.arange(4 * 3 * 2 * 2, dtype=float).reshape(4, 3, 2, 2)  # C_in 4, g 2, C_out 6
    full = layout.deconv_kernel_ungrouped(d, 2)
    assert full.shape == (2, 2, 6, 4)
    np.testing.assert_array_equal(full[:, :, 3:, 2:], layout.deconv_kernel(d[2:]))
    assert not full[:, :, 3:, :2].any() and not full[:, :, :3, 2:].any()


def test_dense_kernel_after_conv_permutes_rows_to_hwc():
    rng = np.random.default_rng(1)
    c, h, wd, n = 3, 2, 4, 5
    w = rng.standard_normal((n, c * h * wd))
    x = rng.standard_normal((1, c, h, wd))
    caffe = x.reshape(1, -1) @ w.T
    keras = layout.to_keras(x).reshape(1, -1) @ layout.dense_kernel_after_conv(w, (c, h, wd))
    np.testing.assert_allclose(keras, caffe)


def test_tiled_kernel_transforms_equal_the_plain_transposes(monkeypatch):
    monkeypatch.setattr(layout, "TILE_VALUES", 64)  # many tiles, ragged last ones
    rng = np.random.default_rng(2)
    for shape in [(300, 37, 3, 3), (130, 20, 7, 7), (5, 7, 1, 1), (1, 1, 1, 1)]:
        w = rng.standard_normal(shape).astype(np.float32)
        k = layout.conv_kernel(w)
        np.testing.assert_array_equal(k, w.transpose(layout.OIHW_TO_HWIO))
        assert layout.is_aligned(k)
        flat = w.reshape(shape[0], -1)
        np.testing.assert_array_equal(layout.dense_kernel_after_conv(flat, shape[1:]),
                                      w.transpose(2, 3, 1, 0).reshape(-1, shape[0]))
        np.testing.assert_array_equal(layout.dense_kernel(flat), flat.T)
    strided = rng.standard_normal((40, 300))[:, ::2]   # a non-contiguous view (e.g. .T)
    np.testing.assert_array_equal(layout.dense_kernel(strided), strided.T)
