"""The command line: exit statuses (0 ok, 1 bad input, 2 usage, 70 bug, 130 Ctrl-C),
one-line errors, warnings, and the console script itself."""
import subprocess
import sys

import pytest

from caffe2keras import __version__
from caffe2keras.cli import main
from caffe2keras.errors import CaffeFormatError, InternalError, NameNotFoundError, UserInputError

from .shared import MODELS, ROOT

DET1 = MODELS / "mtcnn" / "det1.prototxt"


@pytest.mark.parametrize("argv,needle", [
    ([], "usage: caffe2keras"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["inspect"], "the following arguments are required: deploy"),
    (["inspect", str(DET1), "--input-shape", "data"], "expected NAME=DIM,DIM,..."),
    (["inspect", str(DET1), "--input-shape", "data=1,0,2"], "positive dims"),
    (["inspect", str(DET1), "--bogus"], "unrecognized arguments: --bogus"),
    (["mean", "x.binaryproto"], "the following arguments are required: -o/--output"),
])
def test_usage_errors_exit_2(argv, needle, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    captured = capsys.readouterr()
    assert needle in captured.err + captured.out


def test_help_and_version_exit_0(capsys):
    for argv in (["--help"], ["inspect", "--help"], ["mean", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "show a Caffe net's layers" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"caffe2keras {__version__}"


def test_success_exits_0_and_input_shape_overrides(capsys):
    assert main(["inspect", str(DET1), "--input-shape", "data=2,3,48,64"]) == 0
    out = capsys.readouterr().out
    assert "Inputs: data (2, 3, 48, 64)" in out
    assert "Outputs: conv4-2 (2, 4, 19, 27), prob1 (2, 2, 19, 27)" in out


def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    p = tmp_path / "broken.prototxt"
    p.write_text('name: "x"\nlayer {\n  name: "a" type: "ReLU"\n  bottom: [\n}\n')
    assert main(["inspect", str(p)]) == 1
    err = capsys.readouterr().err
    assert err == (f"caffe2keras: error: {p}:5:1: expected a quoted string for 'bottom' "
                   f"(LayerParameter), found '}}'\n")


def test_warnings_are_single_lines_prefixed(tmp_path, capsys):
    p = tmp_path / "w.prototxt"
    p.write_text('input: "data"\ninput_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2\n'
                 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" shiny: true }\n')
    assert main(["inspect", str(p)]) == 0
    err = capsys.readouterr().err
    assert err == (f"warning: {p}:3:56: layer 'r': unknown field 'shiny' in LayerParameter "
                   f"ignored\n")


def test_newlines_in_names_cannot_split_the_error_line(tmp_path, capsys):
    p = tmp_path / "n.prototxt"
    p.write_text('input: "data"\ninput_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2\n'
                 'layer { name: "evil\\nname" type: "ReLU" bottom: "nope" top: "r" }\n')
    assert main(["inspect", str(p)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer 'evil\\nname'" in err


def _command_raising(monkeypatch, exc):
    import caffe2keras.commands.inspect as cmd

    def run(args):
        raise exc
    monkeypatch.setattr(cmd, "run", run)


def test_ctrl_c_exits_130(monkeypatch, capsys):
    _command_raising(monkeypatch, KeyboardInterrupt())
    assert main(["inspect", str(DET1)]) == 130
    assert capsys.readouterr().err == "caffe2keras: interrupted\n"


@pytest.mark.parametrize("exc,line", [
    (PermissionError(13, "Permission denied", "/out/model.keras"),
     "caffe2keras: error: /out/model.keras: Permission denied\n"),
    (OSError(28, "No space left on device"), "caffe2keras: error: No space left on device\n"),
    (MemoryError(), "caffe2keras: error: out of memory\n"),
    (CaffeFormatError("bad", path="f.prototxt", position="1:2"),
     "caffe2keras: error: f.prototxt:1:2: bad\n"),
    (UserInputError("channel order must be BGR or RGB, got 'XYZ'"),
     "caffe2keras: error: channel order must be BGR or RGB, got 'XYZ'\n"),
    (NameNotFoundError("no blob 'x' in this net; blobs: data, conv1"),
     "caffe2keras: error: no blob 'x' in this net; blobs: data, conv1\n"),
])
def test_environment_errors_are_one_line_exit_1(monkeypatch, capsys, exc, line):
    _command_raising(monkeypatch, exc)
    assert main(["inspect", str(DET1)]) == 1
    assert capsys.readouterr().err == line


@pytest.mark.parametrize("exc", [
    InternalError("the plan lost step 'conv1'"), KeyError("conv1"), TypeError("oops")])
def test_bugs_are_reported_as_bugs_with_a_traceback(monkeypatch, capsys, exc):
    """A broken invariant or any unexpected exception (a KeyError included) is not the
    user's fault: a traceback, a request to report it, exit 70; never a one-line error."""
    _command_raising(monkeypatch, exc)
    assert main(["inspect", str(DET1)]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and type(exc).__name__ in err
    assert "internal error (a bug in caffe2keras" in err and "caffe2keras: error:" not in err


def test_unknown_output_blob_is_a_user_error(tmp_path, capsys):
    out = tmp_path / "m.keras"
    assert main(["convert", str(DET1), "-o", str(out), "--outputs", "nosuchblob"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("caffe2keras: error: no blob named 'nosuchblob'")
    assert err.count("\n") == 1 and not out.exists()


def test_console_script_runs():
    exe = ROOT / ".venv" / "bin" / "caffe2keras"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "caffe2keras.cli"]
    r = subprocess.run(cmd + ["inspect", str(DET1)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0 and 'Net "PNet"' in r.stdout
    r = subprocess.run(cmd + ["inspect", str(MODELS / "mtcnn" / "det1.caffemodel")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("caffe2keras: error: ") and r.stderr.count("\n") == 1
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 2
