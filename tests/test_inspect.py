"""`caffe2keras inspect`: the table, --json, and every reported shape against real Caffe."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from caffe2keras.cli import main

from .shared import CONFORMANCE_CASES, MODELS, MODELS_INDEX, ROOT, conformance_files, model_files

ODD = '''name: "odd"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "f" type: "FancyOp" bottom: "c" top: "f" }
layer { name: "g" type: "GlitterOp" bottom: "f" top: "g" }
layer { name: "r" type: "ReLU" bottom: "g" top: "r" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "r" bottom: "r" top: "loss" }
'''


def run_json(capsys, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["inspect", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_table_lists_unsupported_types_first_then_every_layer(tmp_path, capsys):
    p = tmp_path / "odd.prototxt"
    p.write_text(ODD)
    assert main(["inspect", str(p)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f'Net "odd", V2 format: {p} (no weights)'
    assert lines[1] == ("UNSUPPORTED: 2 layer(s) of type FancyOp, GlitterOp: f (FancyOp), "
                        "g (GlitterOp)")
    assert lines[2] == "Inputs: data (1, 3, 8, 8)"
    assert lines[3] == "Left out: loss (SoftmaxWithLoss, training-only layer)"
    header = lines[5].split()
    assert header == ["#", "layer", "type", "bottoms", "->", "tops", "output", "shape",
                      "params", "count"]
    rows = [r.split() for r in lines[6:10]]
    assert rows[0] == ["1", "c", "Convolution", "data", "->", "c", "(1,", "4,", "6,", "6)",
                       "(4,", "3,", "3,", "3)", "(4,)", "112"]
    assert rows[1][:6] == ["2", "f", "FancyOp", "!", "c", "->"]
    assert rows[3][:3] == ["4", "r", "ReLU"] and "?" in rows[3]
    text = "\n".join(lines)
    assert "Total: 112 parameters (448 B as float32) in 1 of 4 layers" in text
    assert "Outputs: r ?" in text
    assert "(? = unknown: the shape follows an unsupported layer)" in text


def test_table_with_weights_and_notes(capsys):
    deploy, weights, _, _ = model_files("mtcnn_det2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["inspect", str(deploy), str(weights)]) == 0
    out = capsys.readouterr().out
    assert f"{deploy} + {weights} (407.9 kB)" in out
    assert "Unsupported layers: none (every layer converts)" in out
    assert "Total: 100,178 parameters (400.7 kB as float32) in 10 of 13 layers" in out
    assert "conv4    InnerProduct  conv3 -> conv4    (1, 128)" in out
    assert "Note: the weights hold layer 'conv5-3', which the prototxt lacks (ignored)" in out


def test_json_has_everything_the_table_shows(tmp_path, capsys):
    p = tmp_path / "odd.prototxt"
    p.write_text(ODD)
    info = run_json(capsys, p)
    assert info["unsupported"] == [{"layer": "f", "type": "FancyOp"},
                                   {"layer": "g", "type": "GlitterOp"}]
    assert info["inputs"] == {"data": [1, 3, 8, 8]}
    c = info["layers"][0]
    assert c == {"name": "c", "type": "Convolution", "bottoms": ["data"], "tops": ["c"],
                 "top_shapes": [[1, 4, 6, 6]], "param_shapes": [[4, 3, 3, 3], [4]],
                 "param_count": 112, "supported": True}
    assert info["totals"] == {"layers": 4, "layers_with_params": 1, "params": 112,
                              "param_bytes_float32": 448}
    assert info["dropped"] == [{"layer": "loss", "type": "SoftmaxWithLoss",
                                "why": "training-only layer"}]


def _reported_shapes(info):
    """Blob -> shape as inspect reports it: inputs, then each layer's tops in order (an
    in-place blob ends with its last writer's shape, as Caffe keeps it)."""
    shapes = {b: s for b, s in info["inputs"].items()}
    producer = {}
    for lay in info["layers"]:
        for top, s in zip(lay["tops"], lay["top_shapes"]):
            shapes[top] = s
            producer[top] = lay["type"]
    return shapes, producer


def _check_against_golden(info, golden):
    shapes, producer = _reported_shapes(info)
    assert set(golden.files) <= set(shapes)
    for blob in golden.files:
        ref = list(golden[blob].shape)
        ours = shapes[blob]
        if producer.get(blob) == "DetectionOutput":
            # Caffe's (1, 1, n, 7): n is decided by the data
            assert ours == [1, 1, None, 7] and ref[:2] == [1, 1] and ref[3] == 7, blob
            continue
        assert ours == ref, (blob, ours, ref)
    return len(golden.files)


@pytest.mark.parametrize("case", CONFORMANCE_CASES)
def test_every_conformance_blob_shape_matches_caffe(case, capsys):
    deploy, weights, _, outputs = conformance_files(case)
    info = run_json(capsys, deploy, weights)
    assert _check_against_golden(info, np.load(outputs)) >= 2


@pytest.mark.parametrize("key", sorted(MODELS_INDEX))
def test_every_model_golden_blob_shape_matches_caffe(key, capsys):
    deploy, weights, _, outputs = model_files(key)
    info = run_json(capsys, deploy, weights)
    assert info["weights"] == str(weights)
    n = _check_against_golden(info, np.load(outputs))
    assert n >= 2
    # param shapes are the weights' real shapes; their counts add up
    assert info["totals"]["params"] == sum(x["param_count"] for x in info["layers"])
    assert all(x["param_count"] == sum(int(np.prod(s)) for s in x["param_shapes"])
               for x in info["layers"])


def test_inspect_never_imports_keras():
    code = ("import sys\nfrom caffe2keras.cli import main\n"
            f"main(['inspect', {str(MODELS / 'mtcnn' / 'det1.prototxt')!r}, "
            f"{str(MODELS / 'mtcnn' / 'det1.caffemodel')!r}])\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('keras', 'jax', 'tensorflow', 'torch')]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "PReLU" in r.stdout
