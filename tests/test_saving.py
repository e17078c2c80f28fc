"""Writing .keras files: the streamed writer gives the same model as convert() + save."""
import warnings
import zipfile

import numpy as np
import pytest

import caffe2keras
from caffe2keras.graph import load_graph
from caffe2keras.saving import convert_to_file, save_model

from .shared import (
    CONFORMANCE_CASES,
    SHARED_PRESENT,
    assert_blob_close,
    conformance_files,
    model_files,
    to_caffe_layout,
    to_keras_layout,
    to_numpy,
)

CASES = [("conformance", c) for c in ("conv_group", "batchnorm_scale", "fc_after_conv",
                                      "deconv_group_bilinear", "activations", "scale_bias",
                                      "legacy_v1")] + \
        [("model", m) for m in ("lenet_mnist_v1", "mtcnn_det4", "open_nsfw",
                                "yufacedetectnet_v1")]


def _files(kind, name):
    return conformance_files(name) if kind == "conformance" else model_files(name)


def _load(path):
    import keras
    return keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize("kind,name", CASES)
def test_streamed_keras_file_matches_the_golden_blobs(kind, name, tmp_path):
    deploy, weights, inputs, outputs = _files(kind, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = load_graph(deploy, weights)
        convert_to_file(graph, tmp_path / "m.keras", outputs="all")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        assert z.testzip() is None  # every CRC right
        assert sorted(z.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
    model = _load(tmp_path / "m.keras")
    feed = np.load(inputs)
    got = model({k: to_keras_layout(feed[k]) for k in feed.files})
    golden = np.load(outputs)
    for blob in golden.files:
        if blob == "detection_out":  # fixed-size rows: compared in test_emit_ssd.py
            continue
        assert_blob_close(to_caffe_layout(got[blob]), golden[blob], blob)


def test_streamed_file_equals_the_keras_saver(tmp_path):
    deploy, weights, _inputs, _ = model_files("mtcnn_det3")
    graph = load_graph(deploy, weights)
    convert_to_file(graph, tmp_path / "a.keras")
    save_model(caffe2keras.convert(deploy, weights), tmp_path / "b.keras")
    a, b = _load(tmp_path / "a.keras"), _load(tmp_path / "b.keras")
    assert [w.path for w in a.weights] == [w.path for w in b.weights]
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(to_numpy(wa.value), to_numpy(wb.value), wa.path)


def test_preprocessing_wrapper_and_fresh_weights_are_saved_too(tmp_path):
    from caffe2keras.preprocess import Preprocessor

    deploy, weights, _, _ = conformance_files("conv_basic")
    pre = Preprocessor.from_net(deploy, mean=[1.0, 2.0, 3.0])
    graph = load_graph(deploy, weights)
    convert_to_file(graph, tmp_path / "pre.keras", wrap=pre.wrap)
    ref = pre.wrap(caffe2keras.convert(deploy, weights))
    x = np.random.default_rng(0).uniform(0, 255, (1, 11, 13, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(_load(tmp_path / "pre.keras")({"data": x})["conv"]),
                               to_numpy(ref({"data": x})["conv"]), rtol=1e-5, atol=1e-5)
    fresh = convert_to_file(load_graph(deploy), tmp_path / "fresh.keras")
    assert _load(tmp_path / "fresh.keras").count_params() == fresh.count_params()


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    from caffe2keras.export import keras_zip

    deploy, weights, _, _ = conformance_files("conv_basic")
    out = tmp_path / "m.keras"
    out.write_bytes(b"previous")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_zip, "_finish_zip", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_to_file(load_graph(deploy, weights), out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


assert "conv_group" in CONFORMANCE_CASES or not SHARED_PRESENT
