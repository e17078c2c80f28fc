"""caffe2keras convert: plain, and with preprocessing layers in the saved model."""
import warnings

import numpy as np

import caffe2keras
from caffe2keras.cli import main
from caffe2keras.preprocess import Preprocessor

from .shared import MODELS, assert_blob_close, model_files, to_keras_layout


def _np(x):
    import keras
    return keras.ops.convert_to_numpy(x)


def _load(path):
    import keras
    return keras.saving.load_model(path)


def test_convert_writes_a_keras_file_equal_to_convert(tmp_path, capsys):
    deploy, weights, inputs, outputs = model_files("lenet_mnist_v2")
    out = tmp_path / "lenet.keras"
    assert main(["convert", str(deploy), str(weights), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    got = _load(out)({"data": to_keras_layout(np.load(inputs)["data"])})
    assert_blob_close(_np(got["prob"]), np.load(outputs)["prob"], "prob")


def test_convert_preprocess_takes_rgb_images(tmp_path, capsys):
    """open_nsfw saved with its preprocessing takes uint8 RGB at 224x224 and gives Caffe's
    probabilities for the golden cat image."""
    deploy, weights, _, outputs = model_files("open_nsfw")
    out = tmp_path / "nsfw.keras"
    assert main(["convert", str(deploy), str(weights), "-o", str(out),
                 "--mean-value", "104,117,123"]) == 0
    printed = capsys.readouterr().out
    assert "RGB -> BGR; x 1 (raw_scale 255); minus mean [104, 117, 123]" in printed
    model = _load(out)
    assert [type(layer).__name__ for layer in model.layers[1:3]] == \
        ["ChannelReorder", "MeanSubtraction"]
    pre = Preprocessor.from_net(deploy, mean=[104, 117, 123])
    pixels = pre.load_batch([MODELS / "imagenet_reference_data" / "cat.jpg"])  # RGB, 224
    prob = np.asarray(model.predict({"data": pixels}, verbose=0)["prob"])
    assert_blob_close(prob, np.load(outputs)["prob"], "prob")


def test_convert_preprocess_with_a_mean_image(tmp_path):
    deploy = MODELS / "lenet_mnist_v2" / "lenet.prototxt"
    weights = MODELS / "lenet_mnist_v2" / "lenet_iter_10000.caffemodel"
    mean = np.random.default_rng(0).uniform(0, 50, (1, 30, 30)).astype("f4")
    np.save(tmp_path / "mean.npy", mean)
    out = tmp_path / "m.keras"
    assert main(["convert", str(deploy), str(weights), "-o", str(out), "--mean",
                 str(tmp_path / "mean.npy"), "--scale", "0.00390625"]) == 0
    model = _load(out)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1)).astype("uint8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = caffe2keras.convert(deploy, weights)
    want = (pixels.astype("f4") - mean[0, 1:29, 1:29, None]) * 0.00390625
    assert_blob_close(np.asarray(model.predict({"data": pixels}, verbose=0)["prob"]),
                      _np(plain({"data": want})["prob"]), "prob")


def test_convert_errors_are_one_line(tmp_path, capsys):
    deploy, weights, _, _ = model_files("lenet_mnist_v2")
    assert main(["convert", str(deploy), str(weights), "-o", str(tmp_path / "x.h5")]) == 1
    assert "end it in .keras, .onnx or .tflite" in capsys.readouterr().err
    assert main(["convert", str(deploy), str(weights), "-o", str(tmp_path / "x.keras"),
                 "--mean-value", "1,2,3"]) == 1
    assert "mean has 3 channels" in capsys.readouterr().err
    assert not (tmp_path / "x.keras").exists()
