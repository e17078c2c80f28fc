"""verify: our model against OpenCV's Caffe runtime, pycaffe, or dumped blobs."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from caffe2keras.cli import main
from caffe2keras.preprocess import Preprocessor
from caffe2keras.verify import ReferenceUnavailable, blob_errors, format_table, verify, write_report

from .shared import MODELS, conformance_files, model_files, quiet_convert

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip("OpenCV >= 5 has no Caffe importer", allow_module_level=True)


def _convert_all(deploy, weights):
    return quiet_convert(deploy, weights, outputs="all")


@pytest.mark.parametrize("key", ["mtcnn_det4", "open_nsfw", "yufacedetectnet_v1"])
def test_opencv_agrees_with_the_converted_real_models(key):
    """mtcnn_det4: a five-top Slice (OpenCV reuses those tops' memory unless fetched
    alone); open_nsfw: ResNet-50; yufacedetectnet: DetectionOutput rows."""
    deploy, weights, inputs, _ = model_files(key)
    report = verify(deploy, weights, input=str(inputs), reference="opencv")
    assert report.ok, format_table(report)
    assert all(c.status in ("ok", "input") for c in report.checks)
    assert len(report.checks) > 40
    if key == "open_nsfw":
        assert {c.blob for c in report.checks} >= {"conv_1", "eltwise_stage3_block2", "prob"}


def test_a_corrupted_weight_fails_loudly_at_its_layer():
    deploy, weights, inputs, _ = model_files("lenet_mnist_v2")
    model = _convert_all(deploy, weights)
    layer = model.get_layer("conv2")
    kernel, bias = layer.get_weights()
    kernel[1, 2, 3, 4] += 0.05          # one weight of 25,000
    layer.set_weights([kernel, bias])
    report = verify(deploy, weights, input=str(inputs), reference="opencv", model=model)
    assert not report.ok
    status = {c.blob: c.status for c in report.checks}
    assert status["conv1"] == status["pool1"] == "ok"
    assert status["conv2"] == "FAIL"
    text = format_table(report)
    assert "FAIL, first at blob 'conv2' (layer 'conv2', Convolution)" in text


def test_known_opencv_deviations_are_named_not_blamed():
    for case, layer, why in (("lrn_across", "n1", "LRN ignores k"),
                             ("fc_after_conv", "fc2", "ignores transpose: true")):
        deploy, weights, inputs, _ = conformance_files(case)
        report = verify(deploy, weights, input=str(inputs), reference="opencv")
        assert report.ok
        dev = [c for c in report.checks if c.status == "deviation"]
        assert [c.blob for c in dev] == [layer]
        assert why in dev[0].note and layer in report.deviations
        assert "not a conversion error" in format_table(report)


def test_deviation_reaches_downstream_blobs(tmp_path):
    from caffe2keras.writer import CaffeNetWriter

    w = CaffeNetWriter("lrn_then_relu")
    w.input("data", (1, 5, 4, 4))
    w.layer("n", "LRN", "data", "n", lrn_param={"local_size": 3, "alpha": 1.0, "k": 3.0})
    w.layer("r", "ReLU", "n", "r")
    w.layer("other", "ReLU", "data", "other")
    w.write_prototxt(tmp_path / "d.prototxt")
    w.write_caffemodel(tmp_path / "w.caffemodel")
    report = verify(tmp_path / "d.prototxt", tmp_path / "w.caffemodel", reference="opencv")
    status = {c.blob: (c.status, c.note) for c in report.checks}
    assert status["n"][0] == status["r"][0] == "deviation"
    assert "downstream of layer 'n'" in status["r"][1]
    assert status["other"][0] == "ok" and report.ok


def test_nets_opencv_cannot_load_say_why():
    deploy, weights, _, _ = conformance_files("activations")
    with pytest.raises(ReferenceUnavailable, match="no Threshold layer.*pycaffe"):
        verify(deploy, weights, reference="opencv")
    assert main(["verify", str(deploy), str(weights)]) == 2


def test_reference_file_and_cli(tmp_path, capsys):
    deploy, weights, _, outputs = model_files("lenet_mnist_v2")
    # the golden file holds the input blob too, so no --input is needed
    assert main(["verify", str(deploy), str(weights), "--reference", str(outputs),
                 "--report", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "8/8 blobs agree" in out and "ip2" in out
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "ip2" in page
    golden = dict(np.load(outputs))
    golden["ip2"] = golden["ip2"] + 0.01
    np.savez(tmp_path / "bad.npz", **golden)
    assert main(["verify", str(deploy), str(weights), "--reference",
                 str(tmp_path / "bad.npz")]) == 1
    assert "first at blob 'ip2'" in capsys.readouterr().out


def test_image_input_through_the_preprocessing_layers(tmp_path):
    """An image goes to our model as RGB pixels through the Keras preprocessing layers and
    to OpenCV through the numpy pipeline; the input blob checks the one against the
    other."""
    deploy, weights, _, _ = model_files("lenet_mnist_v2")
    pre = Preprocessor.from_net(deploy, input_scale=0.00390625)
    model = pre.wrap(_convert_all(deploy, weights))
    image = MODELS / "imagenet_reference_data" / "cat.jpg"
    report = verify(deploy, weights, input=str(image), preprocessor=pre, model=model)
    assert report.ok, format_table(report)
    assert report.checks[0].blob == "data" and report.checks[0].status == "input"
    assert "preprocessing layers" in report.notes[0]
    write_report(report, tmp_path / "r.png")
    from PIL import Image
    assert Image.open(tmp_path / "r.png").size[0] >= 640


def test_criterion_matches_the_projects():
    ref = np.array([0.0, 1.0, -200.0])
    assert blob_errors(ref, ref) == (0.0, 0.0, True)
    atol = 1e-4 * 200
    assert blob_errors(ref + [atol * 0.99, 0, 0], ref)[2]
    assert not blob_errors(ref + [atol * 1.5, 0, 0], ref)[2]
    assert not blob_errors(np.array([np.nan, 1.0, -200.0]), ref)[2]
    assert blob_errors(np.array([np.nan]), np.array([np.nan]))[2]


def _pycaffe_env():
    caffe = Path("/tmp/caffe-build")
    python = "/usr/bin/python3"
    if not (caffe / "src" / "python" / "caffe").is_dir() or not os.path.exists(python):
        return None
    env = dict(os.environ, PYTHONPATH=str(caffe / "src" / "python"),
               LD_LIBRARY_PATH=str(caffe / "libs"), GLOG_minloglevel="2")
    ok = subprocess.run([python, "-c", "import caffe"], env=env, capture_output=True,
                        check=False).returncode == 0
    return (python, env) if ok else None


def test_pycaffe_reference_when_caffe_is_at_hand(tmp_path, monkeypatch):
    found = _pycaffe_env()
    if found is None:
        pytest.skip("no pycaffe build here (tests never need Caffe)")
    python, env = found
    for k in ("PYTHONPATH", "LD_LIBRARY_PATH", "GLOG_minloglevel"):
        monkeypatch.setenv(k, env[k])
    deploy, weights, _, _ = conformance_files("lrn_across")
    report = verify(deploy, weights, reference="pycaffe", caffe_python=python)
    assert report.ok and not report.deviations      # real Caffe: no LRN k deviation
    assert main(["dump-reference", str(deploy), str(weights), "-o", str(tmp_path / "b.npz"),
                 "--caffe-python", python]) == 0
    assert main(["verify", str(deploy), str(weights), "--reference",
                 str(tmp_path / "b.npz")]) == 0
