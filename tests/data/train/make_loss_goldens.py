"""Loss-layer goldens for tests/test_train_layers.py, made with real Caffe (pycaffe):
each case's loss top and the diff of its first bottom (loss_weight 1). Never run in tests.

    PYTHONPATH=/tmp/caffe-build/src/python LD_LIBRARY_PATH=/tmp/caffe-build/libs \
        GLOG_minloglevel=2 /usr/bin/python3 tests/data/train/make_loss_goldens.py
"""
import os
import tempfile

import caffe
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def cases():
    """name -> (layer type, extra layer text, {bottom: NCHW array}); the first bottom is
    the one whose diff is recorded."""
    r = np.random.default_rng(7)
    logits4 = r.normal(0, 2, (2, 4, 3, 3)).astype(np.float32)
    seg = r.integers(0, 4, (2, 1, 3, 3)).astype(np.float32)
    seg_ignored = seg.copy()
    seg_ignored[0, 0, 0, :] = 255
    logits = r.normal(0, 2, (5, 4)).astype(np.float32)
    logits[0, 1] = 80.0  # a probability that underflows: the FLT_MIN clamp
    label = np.array([1, 0, 3, 2, 2], np.float32)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob = (prob / prob.sum(1, keepdims=True)).astype(np.float32)
    out = {}
    for mode in ("FULL", "VALID", "BATCH_SIZE", "NONE"):
        out[f"softmax_{mode}"] = ("SoftmaxWithLoss",
                                  f"loss_param {{ ignore_label: 255 normalization: {mode} }}",
                                  {"x": logits4, "y": seg_ignored})
    out["softmax_plain"] = ("SoftmaxWithLoss", "", {"x": logits, "y": label})
    out["softmax_normalize_false"] = ("SoftmaxWithLoss", "loss_param { normalize: false }",
                                      {"x": logits4, "y": seg})
    out["euclidean"] = ("EuclideanLoss", "", {"x": logits4, "y": logits4[::-1] * 0.5})
    out["sigmoid_ce"] = ("SigmoidCrossEntropyLoss", "",
                         {"x": logits4, "y": (r.random(logits4.shape) > 0.5).astype(np.float32)})
    out["hinge_l1"] = ("HingeLoss", "", {"x": logits, "y": label})
    out["hinge_l2"] = ("HingeLoss", "hinge_loss_param { norm: L2 }", {"x": logits, "y": label})
    prob_small = prob.copy()
    prob_small[1, 0] = 1e-30  # below kLOG_THRESHOLD
    out["multinomial"] = ("MultinomialLogisticLoss", "", {"x": prob_small, "y": label})
    h = r.random((1, 1, 4, 4)).astype(np.float32)
    out["infogain"] = ("InfogainLoss", "H", {"x": prob_small, "y": label, "h": h})
    a = r.normal(0, 1, (6, 3, 1, 1)).astype(np.float32)
    b = (a + r.normal(0, 0.7, a.shape)).astype(np.float32)
    sim = np.array([1, 0, 1, 0, 0, 0], np.float32)
    out["contrastive"] = ("ContrastiveLoss", "contrastive_loss_param { margin: 1.5 }",
                          {"x": a, "y": b, "s": sim})
    out["contrastive_legacy"] = ("ContrastiveLoss",
                                 "contrastive_loss_param { margin: 1.5 legacy_version: true }",
                                 {"x": a, "y": b, "s": sim})
    return out


def main():
    caffe.set_mode_cpu()
    out = {}
    for name, (type_, extra, bottoms) in cases().items():
        lines = ['name: "loss" force_backward: true']
        for blob, v in bottoms.items():
            dims = " ".join(f"dim: {d}" for d in v.shape)
            lines.append(f'layer {{ name: "{blob}" type: "Input" top: "{blob}" '
                         f'input_param {{ shape {{ {dims} }} }} }}')
        for blob, v in bottoms.items():
            out[f"{name}/in/{blob}"] = v
        if extra == "H":  # H from a file: Caffe cannot backpropagate to a bottom H
            source = os.path.join(tempfile.mkdtemp(), "h.binaryproto")
            with open(source, "wb") as f:
                f.write(caffe.io.array_to_blobproto(bottoms.pop("h")).SerializeToString())
            extra = f'infogain_loss_param {{ source: "{source}" }}'
        bots = " ".join(f'bottom: "{b}"' for b in bottoms)
        lines.append(f'layer {{ name: "loss" type: "{type_}" {bots} top: "loss" {extra} }}')
        with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
            f.write("\n".join(lines))
        net = caffe.Net(f.name, caffe.TRAIN)
        os.unlink(f.name)
        for blob, v in bottoms.items():
            net.blobs[blob].data[...] = v
        net.forward()
        net.backward()
        out[f"{name}/loss"] = np.array(net.blobs["loss"].data, np.float64)
        out[f"{name}/diff"] = net.blobs["x"].diff.copy()
        print(name, float(net.blobs["loss"].data))
    np.savez_compressed(os.path.join(HERE, "loss_goldens.npz"), **out)


if __name__ == "__main__":
    main()
