"""`caffe2keras weights`: the command line over caffe2keras.export_weights()."""
import h5py
import numpy as np
import pytest

from caffe2keras.cli import main

from .shared import conformance_files, model_files
from .test_export import _unknown_net, load_trusted_pickle


@pytest.fixture
def lenet():
    deploy, weights, _, _ = model_files("lenet_mnist_v2")
    return str(deploy), str(weights)


@pytest.mark.parametrize("name,check", [
    ("w.weights.h5", lambda p: sorted(h5py.File(p, "r")["layers"]) ==
     ["conv2d", "conv2d_1", "dense", "dense_1"]),
    ("w.h5", lambda p: [n.decode() for n in h5py.File(p, "r").attrs["layer_names"]] ==
     ["conv1", "conv2", "ip1", "ip2"]),
    ("w.npz", lambda p: sorted(np.load(p).files) ==
     ["conv1/0", "conv1/1", "conv2/0", "conv2/1", "ip1/0", "ip1/1", "ip2/0", "ip2/1"]),
    ("w.pkl", lambda p: [d["name"] for d in load_trusted_pickle(p)] ==
     ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]),
])
def test_format_from_the_output_name(name, check, lenet, tmp_path, capsys):
    out = tmp_path / name
    assert main(["weights", *lenet, "-o", str(out)]) == 0
    assert check(out)
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (") and " MB) in " in printed


def test_explicit_format_and_layout(lenet, tmp_path):
    out = tmp_path / "weights.bin"
    assert main(["weights", *lenet, "-o", str(out), "--format", "npz", "--layout", "keras"]) == 0
    with np.load(out) as z:
        assert z["ip1/0"].shape == (800, 500)  # Dense (in, out)
        assert z["conv1/0"].shape == (5, 5, 1, 20)  # HWIO


def test_verbose_lists_layers(lenet, tmp_path, capsys):
    assert main(["weights", *lenet, "-o", str(tmp_path / "w.h5"), "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        "conv1 (Convolution): [(20,1,5,5), (20)] -> conv1: [(5,5,1,20), (20)]",
        "conv2 (Convolution): [(50,20,5,5), (50)] -> conv2: [(5,5,20,50), (50)]",
        "ip1 (InnerProduct): [(500,800), (500)] -> ip1: [(800,500), (500)]",
        "ip2 (InnerProduct): [(10,500), (10)] -> ip2: [(500,10), (10)]",
    ]


def test_outputs_for_the_keras_format(lenet, tmp_path):
    out = tmp_path / "w.weights.h5"
    assert main(["weights", *lenet, "-o", str(out), "--outputs", "conv2"]) == 0
    assert sorted(h5py.File(out, "r")["layers"]) == ["conv2d", "conv2d_1"]


def test_unknown_layers_warn_or_are_skipped(tmp_path, capsys):
    deploy, weights = map(str, _unknown_net(tmp_path))
    out = tmp_path / "w.h5"
    assert main(["weights", deploy, weights, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "fancy (FancyLayer, no weights function)" in err
    assert main(["weights", deploy, weights, "-o", str(out), "--skip-unknown"]) == 0
    assert "left out 2 layer(s) with no known Keras layout" in capsys.readouterr().err
    assert [n.decode() for n in h5py.File(out, "r").attrs["layer_names"]] == ["c1", "c2"]
    # the keras format is for convert()'s model, which cannot hold the unknown layer
    assert main(["weights", deploy, weights, "-o", str(tmp_path / "w.weights.h5")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unsupported type FancyLayer" in err
    assert not (tmp_path / "w.weights.h5").exists()


@pytest.mark.parametrize("args,code,message", [
    (["-o", "{tmp}/w.bin"], 1, "cannot tell the format from the file name"),
    (["-o", "{tmp}/w.h5", "--format", "keras"], 1, "must end in .weights.h5"),
    (["-o", "{tmp}/w.h5", "--layout", "keras"], 2, "layout='keras' is for the npz format"),
    (["-o", "{tmp}/w.npz", "--outputs", "conv1"], 2, "only applies to the keras format"),
    (["-o", "{tmp}/w.weights.h5", "--outputs", "nope"], 1, "no blob named 'nope'"),
    (["-o", "{tmp}/missing/w.npz"], 1, "output folder does not exist"),
])
def test_errors_are_one_line(args, code, message, lenet, tmp_path, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["weights", *lenet, *args]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.rglob("w.*"))


def test_bad_weights_file_is_one_line(tmp_path, capsys):
    deploy, _, _, _ = conformance_files("conv_basic")
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    assert main(["weights", str(deploy), str(bad), "-o", str(tmp_path / "w.npz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("caffe2keras: error: ") and str(bad) in err and err.count("\n") == 1


def test_help_warns_about_pickles(capsys):
    with pytest.raises(SystemExit):
        main(["weights", "--help"])
    out = capsys.readouterr().out
    assert "only ever load a pickle that comes from a source you trust" in " ".join(out.split())
    assert "model.load_weights(\"NAME.h5\", by_name=True)" in out
    assert "model.load_weights(\"NAME.weights.h5\")" in out
