"""Preprocessing: pycaffe's Transformer order, skimage-exact resizing, means, Keras layers."""
import warnings

import numpy as np
import pytest

import caffe2keras
from caffe2keras.errors import CaffeFormatError
from caffe2keras.mean import read_mean
from caffe2keras.preprocess import (
    Preprocessor,
    center_crop,
    load_image,
    read_transform_param,
    resize_image,
)

from .shared import MODELS, assert_blob_close, conformance_files

IMAGENET = MODELS / "imagenet_reference_data"
NSFW = MODELS / "open_nsfw"


def transformer_preprocess(image01, swap, raw_scale, mean, input_scale):
    """pycaffe's Transformer.preprocess after the resize, step by step as io.py does it:
    astype float32, transpose (2, 0, 1), channel_swap, raw_scale, mean, input_scale."""
    x = image01.astype(np.float32).transpose(2, 0, 1)
    if swap is not None:
        x = x[list(swap), :, :]
    if raw_scale is not None:
        x *= raw_scale
    if mean is not None:
        x -= mean if mean.ndim == 3 else mean[:, None, None]
    if input_scale is not None:
        x *= input_scale
    return x


def test_open_nsfw_golden_input_is_cat_jpg_through_the_transformer():
    """The golden input Caffe was fed: cat.jpg resized to 224x224 (skimage's linear
    resize with anti-aliasing, reflected borders), RGB -> BGR, x255, minus [104,117,123]."""
    golden = np.load(NSFW / "golden" / "inputs.npz")["data"]
    pre = Preprocessor.from_net(NSFW / "deploy.prototxt", mean=[104, 117, 123])
    got = pre.caffe(IMAGENET / "cat.jpg")
    assert got.shape == golden.shape == (1, 3, 224, 224)
    assert_blob_close(got, golden, "data")
    assert np.abs(got - golden).max() < 1e-3
    # resize details matter: zero borders (today's caffe.io.resize_image) or no
    # anti-aliasing do not give Caffe's input
    zero = Preprocessor.from_net(NSFW / "deploy.prototxt", mean=[104, 117, 123],
                                 resize_method="pycaffe").caffe(IMAGENET / "cat.jpg")
    assert np.abs(zero - golden).max() > 1.0
    assert np.abs(zero - golden)[..., 2:-2, 2:-2].max() < 1e-3   # only the border differs


def test_ilsvrc_mean_binaryproto_reads_equal_to_the_npy():
    proto = read_mean(IMAGENET / "ilsvrc_2012_mean.binaryproto")
    npy = read_mean(IMAGENET / "ilsvrc_2012_mean.npy")
    assert proto.shape == npy.shape == (3, 256, 256)
    assert proto.dtype == np.float32
    np.testing.assert_array_equal(proto, npy)
    np.testing.assert_allclose(proto.reshape(3, -1).mean(1),
                               [104.00699, 116.66877, 122.67892], rtol=1e-6)


@pytest.mark.parametrize("order,raw,input_scale,mean_kind", [
    ("BGR", 255.0, None, "values"),
    ("RGB", 1.0, 0.017, "values"),
    ("BGR", 255.0, 0.5, "image"),
    ("BGR", 128.0, None, None),
])
def test_steps_follow_the_transformer_order(order, raw, input_scale, mean_kind):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    mean = {"values": np.array([10.0, 20.0, 30.0], np.float32),
            "image": rng.uniform(0, 200, (3, 6, 7)).astype(np.float32), None: None}[mean_kind]
    pre = Preprocessor((6, 7), mean=mean, channel_order=order, raw_scale=raw,
                       input_scale=input_scale)
    want = transformer_preprocess(pixels / 255.0, (2, 1, 0) if order == "BGR" else None, raw,
                                  mean, input_scale)
    got = pre.preprocess(pixels)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)
    assert pre(pixels).shape == (1, 6, 7, 3)      # NHWC for the Keras model
    np.testing.assert_array_equal(pre(pixels)[0], got.transpose(1, 2, 0))


def test_raw_scale_comes_before_the_mean_and_input_scale_after():
    pre = Preprocessor((1, 1), channels=1, mean=[100.0], raw_scale=255.0, input_scale=0.5)
    got = pre.preprocess(np.full((1, 1, 1), 255, np.uint8))
    assert got.item() == pytest.approx((255 - 100) * 0.5)


def test_resize_modes_by_hand():
    """Two pixels to four, linear, pixel centres aligned (scipy grid_mode): the outer
    samples fall a quarter pixel outside the input."""
    img = np.array([[[1.0], [3.0]]])                              # (1, 2, 1)
    reflect = resize_image(img, (1, 4), "skimage")[0, :, 0]
    zeros = resize_image(img, (1, 4), "pycaffe")[0, :, 0]
    np.testing.assert_allclose(reflect, [0.75 * 1 + 0.25 * 3, 1.5, 2.5, 0.75 * 3 + 0.25 * 1])
    np.testing.assert_allclose(zeros, [0.75, 1.5, 2.5, 2.25])


@pytest.mark.parametrize("shape,size", [((37, 50, 3), (20, 31)), ((20, 31, 1), (37, 50)),
                                        ((64, 48, 3), (9, 60)), ((5, 5, 3), (5, 5))])
def test_resize_equals_scikit_image(shape, size):
    transform = pytest.importorskip("skimage.transform")
    img = np.random.default_rng(0).random(shape)
    for method, mode in (("skimage", "reflect"), ("pycaffe", "constant")):
        want = transform.resize(img, size, order=1, mode=mode, anti_aliasing=None)
        np.testing.assert_allclose(resize_image(img, size, method), want, atol=1e-6)


def test_mean_image_larger_than_the_input_is_center_cropped():
    big = np.arange(3 * 256 * 256, dtype=np.float32).reshape(3, 256, 256)
    pre = Preprocessor((227, 227), mean=big)
    np.testing.assert_array_equal(pre.mean, big[:, 14:241, 14:241])   # (256 - 227) // 2
    odd = Preprocessor((4, 5), mean=big[:, :7, :8])
    np.testing.assert_array_equal(odd.mean, big[:, 1:5, 1:6])
    assert center_crop(np.zeros((7, 8)), (4, 5)).shape == (4, 5)
    per_channel = Preprocessor((227, 227), mean=big, mean_per_channel=True)
    np.testing.assert_allclose(per_channel.mean, big.reshape(3, -1).mean(1), rtol=1e-6)


def test_bad_means_are_named():
    with pytest.raises(CaffeFormatError, match="smaller than the input"):
        Preprocessor((224, 224), mean=np.zeros((3, 100, 100), np.float32))
    with pytest.raises(CaffeFormatError, match="3 channels.*has 1"):
        Preprocessor((8, 8), channels=1, mean=[1, 2, 3])
    one = Preprocessor((8, 8), mean=[7.0])          # Caffe: one mean_value for all channels
    np.testing.assert_array_equal(one.mean, [7, 7, 7])


def test_binaryproto_mean_file_through_from_net():
    pre = Preprocessor.from_net(IMAGENET / "bvlc_reference_caffenet_deploy.prototxt",
                                mean=IMAGENET / "ilsvrc_2012_mean.binaryproto")
    assert pre.size == (227, 227) and pre.mean.shape == (3, 227, 227)
    assert "ilsvrc_2012_mean.binaryproto" in " ".join(pre.describe())


def test_transform_param_from_a_train_val_prototxt(tmp_path):
    mean = np.random.default_rng(0).uniform(90, 130, (3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "mean.npy", mean)
    (tmp_path / "train_val.prototxt").write_text(f"""
name: "tv"
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ mirror: true crop_size: 6 mean_value: 1 }} }}
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ crop_size: 6 scale: 0.017 mean_file: "{tmp_path / 'mean.npy'}" }} }}
layer {{ name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param {{ num_output: 2 kernel_size: 3 }} }}
""")
    (tmp_path / "deploy.prototxt").write_text("""
name: "d" input: "data" input_shape { dim: 1 dim: 3 dim: 6 dim: 6 }
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 2 kernel_size: 3 } }
""")
    tp = read_transform_param(tmp_path / "train_val.prototxt")
    assert tp["input_scale"] == pytest.approx(0.017) and tp["crop"] == (6, 6)
    pre = Preprocessor.from_net(tmp_path / "deploy.prototxt",
                                transform_from=tmp_path / "train_val.prototxt")
    # Caffe's test-time data: 8x8 database images (the mean's size), centre crop 6x6
    assert pre.resize_to == (8, 8) and pre.input_scale == pytest.approx(0.017)
    np.testing.assert_array_equal(pre.mean, mean[:, 1:7, 1:7])
    pixels = np.random.default_rng(2).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    want = (pixels[1:7, 1:7, ::-1].transpose(2, 0, 1) - mean[:, 1:7, 1:7]) * 0.017
    np.testing.assert_allclose(pre.preprocess(pixels), want, rtol=1e-5, atol=1e-5)


def test_load_image_channels(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").shape == (4, 5, 3)
    gray = load_image(tmp_path / "a.png", channels=1)
    assert gray.shape == (4, 5, 1) and gray[0, 0, 0] == round(0.299 * 200)
    assert load_image(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    with pytest.raises(CaffeFormatError, match="no such image"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(CaffeFormatError, match="cannot read as an image"):
        load_image(tmp_path / "bad.jpg")


def test_wrapped_model_takes_rgb_pixels_and_saves(tmp_path):
    import keras

    from caffe2keras.saving import save_model

    deploy, weights, _, _ = conformance_files("conv_basic")
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 100, (3, 15, 17)).astype(np.float32)   # larger: centre-cropped
    pre = Preprocessor.from_net(deploy, mean=mean, input_scale=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = caffe2keras.convert(deploy, weights)
    wrapped = pre.wrap(model)
    kinds = [type(layer).__name__ for layer in wrapped.layers]
    assert kinds[:4] == ["InputLayer", "ChannelReorder", "MeanSubtraction", "Rescaling"]
    assert "Functional" not in kinds                            # one flat graph
    images = rng.integers(0, 256, (2, 11, 13, 3)).astype(np.uint8)
    want = keras.ops.convert_to_numpy(model({"data": pre(list(images))})["conv"])
    got = np.asarray(wrapped.predict({"data": images}, verbose=0)["conv"])
    assert_blob_close(got, want, "conv")
    save_model(wrapped, tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")      # safe mode
    assert_blob_close(np.asarray(loaded.predict({"data": images}, verbose=0)["conv"]), want)


def test_wrap_checks_the_input_size():
    deploy, weights, _, _ = conformance_files("conv_basic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = caffe2keras.convert(deploy, weights)
    with pytest.raises(ValueError, match="preprocessing makes"):
        Preprocessor((10, 10)).wrap(model)


def test_preprocessor_is_exposed_lazily():
    assert caffe2keras.Preprocessor is Preprocessor


def test_transform_param_from_real_v1_train_test_prototxts():
    lenet = MODELS / "lenet_mnist_v1"
    pre = Preprocessor.from_net(lenet / "lenet.prototxt",
                                transform_from=lenet / "lenet_train_test.prototxt")
    assert (pre.channels, pre.size, pre.mean) == (1, (28, 28), None)
    assert pre.input_scale == pytest.approx(0.00390625)
    cifar = MODELS / "cifar10_full_v1"
    with pytest.raises(CaffeFormatError, match="mean_file 'examples/cifar10/mean.binaryproto'"
                                               ".*--mean"):
        Preprocessor.from_net(cifar / "cifar10_full.prototxt",
                              transform_from=cifar / "cifar10_full_train_test.prototxt")
