"""Fine-tune a zoo model with a new head, as Caffe would, in Keras.

Caffe's LeNet (trained on MNIST) learns to read digits drawn in OpenCV's Hershey fonts:
the trunk from the zoo caffemodel (conv layers frozen with lr_mult 0), a new 10-way head
(a new layer name, so it starts from its xavier filler), Caffe's SGD with momentum,
weight decay and a step lr policy, a few hundred steps. Then the weights go back into a
.caffemodel that Caffe (or OpenCV's dnn) can serve.

    python demo/finetune_lenet.py LENET_DIR [OUT_DIR] [STEPS]

LENET_DIR holds lenet.prototxt and lenet_iter_10000.caffemodel (BVLC's examples/mnist).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

FONTS = 8  # cv2.FONT_HERSHEY_SIMPLEX .. FONT_HERSHEY_SCRIPT_COMPLEX


def digits(n, seed):
    """n white-on-black 28x28 digits in OpenCV's fonts, random size, stroke and place:
    (N, 1, 28, 28) float32 in 0..1 (LeNet's scale 1/256 input), labels (N,)."""
    import cv2

    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, 28, 28), np.float32)
    labels = rng.integers(0, 10, n)
    for i, d in enumerate(labels):
        img = np.zeros((28, 28), np.uint8)
        font = int(rng.integers(FONTS))
        scale = rng.uniform(0.6, 0.9)
        thick = int(rng.integers(1, 3))
        (w, h), _ = cv2.getTextSize(str(d), font, scale, thick)
        x = int(rng.integers(max(1, 28 - w - 2)) + 1) if w < 26 else 0
        y = int(min(27, h + rng.integers(max(1, 28 - h - 2)) + 1))
        cv2.putText(img, str(d), (x, y), font, scale, 255, thick, cv2.LINE_AA)
        images[i, 0] = img / 256.0
    return images, labels.astype(np.float32)


def train_net(deploy_text):
    """The deploy net as a train net: a label input, the conv trunk frozen, a new head
    `ip2_fonts` in place of ip2, SoftmaxWithLoss and Accuracy instead of the Softmax."""
    text = deploy_text.replace("dim: 64", "dim: 32")
    for conv in ("conv1", "conv2"):  # freeze: lr_mult 0 on both blobs
        pattern = (f'(name: "{conv}".*?)' +
                   r"param \{\s*lr_mult: 1\s*\}\s*param \{\s*lr_mult: 2\s*\}")
        text = re.sub(pattern, r"\1param { lr_mult: 0 } param { lr_mult: 0 }", text,
                      count=1, flags=re.DOTALL)
    text = text.replace('name: "ip2"', 'name: "ip2_fonts"')
    text = text[:text.index('layer {\n  name: "prob"')]
    return text + """
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 32 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" }
"""


SOLVER = """net: "train.prototxt"
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005
lr_policy: "step" gamma: 0.1 stepsize: 200
"""


def main(lenet_dir, out_dir, steps=300, log=print):
    import keras  # torch outputs need grad detached: keras.ops.convert_to_numpy does it

    import caffe2keras

    lenet_dir, out = Path(lenet_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.prototxt").write_text(train_net((lenet_dir / "lenet.prototxt").read_text()))
    (out / "solver.prototxt").write_text(SOLVER)
    zoo = caffe2keras.convert(lenet_dir / "lenet.prototxt",
                              lenet_dir / "lenet_iter_10000.caffemodel")
    test_x, test_y = digits(500, seed=1)
    probs = zoo({"data": test_x.transpose(0, 2, 3, 1)})["prob"]
    before = (np.argmax(keras.ops.convert_to_numpy(probs), 1)
              == test_y).mean()
    model = caffe2keras.convert_for_training(out / "solver.prototxt",
                                             lenet_dir / "lenet_iter_10000.caffemodel",
                                             seed=0)
    x, y = digits(32 * steps, seed=0)
    for step in range(steps):
        batch = slice(32 * step, 32 * (step + 1))
        loss, acc = model.train_on_batch({"data": x[batch].transpose(0, 2, 3, 1),
                                          "label": y[batch]})
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step}: loss {float(loss):.4f}, batch accuracy {float(acc):.2f}")
    scores = model({"data": test_x.transpose(0, 2, 3, 1), "label": test_y},
                   training=False)["ip2"]
    after = (np.argmax(keras.ops.convert_to_numpy(scores), 1) == test_y).mean()
    log(f"accuracy on 500 new font digits: zoo LeNet {before:.3f}, fine-tuned {after:.3f}")
    caffe2keras.save_caffemodel(model, out / "train.prototxt", out / "lenet_fonts.caffemodel")
    model.save(out / "lenet_fonts.keras")
    log(f"wrote {out / 'lenet_fonts.caffemodel'} and {out / 'lenet_fonts.keras'}")
    return before, after


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "out/finetune",
         int(sys.argv[3]) if len(sys.argv) > 3 else 300)
