"""quiet.py: C++ start-up lines kept off stderr, and nothing else lost."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from .shared import MODELS, ROOT

SRC = str(ROOT)


def run_python(code, tmp_path, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=False, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, str(tmp_path)]),
                                   **env))


def test_muted_stderr_hides_descriptor_2_only_inside_the_block(tmp_path):
    r = run_python("""
        import os
        from caffe2keras.quiet import muted_stderr
        os.write(2, b"before ")
        with muted_stderr():
            os.write(2, b"hidden ")
            os.write(1, b"stdout-kept ")
        try:
            with muted_stderr():
                raise ValueError
        except ValueError:
            pass
        os.write(2, b"after")
        """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "before after"
    assert r.stdout == "stdout-kept "


def test_quiet_import_mutes_the_first_import_and_keeps_the_module(tmp_path):
    (tmp_path / "noisy.py").write_text("import os\nos.write(2, b'start-up noise')\nVALUE = 42\n")
    r = run_python("""
        import sys
        from caffe2keras.quiet import quiet_import, _QuietImport
        quiet_import("noisy")
        import json                      # other imports are not touched
        import noisy
        assert noisy.VALUE == 42 and noisy.__spec__.name == "noisy"
        assert not any(isinstance(f, _QuietImport) for f in sys.meta_path)
        sys.stderr.write("later writes show")
        """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "later writes show"


def test_an_import_that_fails_still_raises_and_stderr_comes_back(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('broken module')\n")
    r = run_python("""
        import os
        from caffe2keras.quiet import quiet_import
        quiet_import("broken")
        try:
            import broken
        except RuntimeError as e:
            os.write(2, str(e).encode())
        """, tmp_path)
    assert r.returncode == 0
    assert r.stderr == "broken module"


def user_env(**extra):
    """A user's environment: no TF_CPP_MIN_LOG_LEVEL (tf2onnx, imported by other tests in
    this worker, sets it to 1 in os.environ, which lets the converter's W lines through)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return dict(env, **extra)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="TensorFlow not installed: nothing to mute")
@pytest.mark.parametrize("suffix", [".keras", ".tflite"])
def test_cli_output_has_no_tensorflow_log_lines(suffix, tmp_path):
    if suffix == ".tflite" and importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip("the [tflite] extra is not installed")
    det1 = MODELS / "mtcnn" / "det1"
    r = subprocess.run([sys.executable, "-m", "caffe2keras.cli", "convert",
                        f"{det1}.prototxt", f"{det1}.caffemodel", "-o", str(tmp_path / f"m{suffix}")],
                       capture_output=True, text=True, check=False, cwd=ROOT,
                       env=user_env(KERAS_BACKEND="tensorflow"))
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr   # no oneDNN/absl start-up lines, no converter chatter
    assert r.stdout.startswith("wrote ")
