"""predict: top-k classes per image, with labels, through pycaffe-style preprocessing."""
import re

import numpy as np

from caffe2keras.cli import main
from caffe2keras.commands.predict import read_labels

from .shared import MODELS, model_files

IMAGENET = MODELS / "imagenet_reference_data"


def test_open_nsfw_on_cat_jpg_gives_caffes_probabilities(tmp_path, capsys):
    """The golden open_nsfw run is cat.jpg preprocessed as predict does by default (with
    the net's mean), so the printed probabilities are Caffe's."""
    deploy, weights, _, outputs = model_files("open_nsfw")
    (tmp_path / "labels.txt").write_text("SFW\nNSFW\n")
    argv = ["predict", str(deploy), str(weights), str(IMAGENET / "cat.jpg"),
            str(IMAGENET / "fish-bike.jpg"), "--mean-value", "104,117,123",
            "--labels", str(tmp_path / "labels.txt"), "--top", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    caffe = np.load(outputs)["prob"][0]
    block = out.split("cat.jpg\n")[1].split("fish-bike.jpg")[0]
    rows = re.findall(r"^\s+([0-9.]+)\s+(\S+)\s+\[(\d)\]$", block, re.MULTILINE)
    assert [r[1] for r in rows] == ["SFW", "NSFW"][::1 if caffe[0] > caffe[1] else -1]
    for prob, _, index in rows:
        assert abs(float(prob) - caffe[int(index)]) < 1e-4
    assert "minus mean [104, 117, 123]" in out


def test_synset_labels_and_defaults(tmp_path, capsys):
    labels = read_labels(IMAGENET / "synset_words.txt")
    assert len(labels) == 1000
    assert labels[281] == "tabby, tabby cat (n02123045)"
    deploy, weights, _, _ = model_files("lenet_mnist_v2")
    assert main(["predict", str(deploy), str(weights), str(IMAGENET / "cat.jpg"),
                 "--scale", "0.00390625", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "gray images" in out
    assert len(re.findall(r"^\s+[0-9.]+\s+class \d$", out, re.MULTILINE)) == 3


def test_nets_with_several_outputs_need_output_blob(capsys):
    deploy, weights, _, _ = model_files("mtcnn_det3")
    image = str(MODELS / "mtcnn" / "test1.jpg")
    assert main(["predict", str(deploy), str(weights), image]) == 1
    assert "--output-blob" in capsys.readouterr().err
    assert main(["predict", str(deploy), str(weights), image, "--output-blob", "prob1",
                 "--mean-value", "127.5", "--scale", "0.0078125", "--top", "1"]) == 0
    assert main(["predict", str(deploy), str(weights), image, "--output-blob", "nope"]) == 1


def test_resize_smaller_than_the_input_is_a_one_line_user_error(capsys):
    """A bad option value is the user's mistake: one line, exit 1, no traceback."""
    deploy, weights, _, _ = model_files("lenet_mnist_v2")
    assert main(["predict", str(deploy), str(weights), str(IMAGENET / "cat.jpg"),
                 "--resize", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("caffe2keras: error: resize_to (8, 8) is smaller than the input size")
    assert err.count("\n") == 1 and "Traceback" not in err
