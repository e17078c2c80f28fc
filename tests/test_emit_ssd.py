"""SSD layers (Normalize, PriorBox, DetectionOutput) against real Caffe: the yufacedetectnet
model golden in full and small cases made with the SSD fork (tests/fixtures/fork_goldens,
tests/fixtures/fork_goldens/make_goldens.py)."""
from pathlib import Path

import keras
import numpy as np
import pytest

from caffe2keras.emit.layers import ssd as ssd_layers
from caffe2keras.graph import load_graph
from caffe2keras.inspect import describe

from .shared import (
    PROTOTXT_ONLY,
    assert_blob_close,
    model_files,
    quiet_convert,
    to_caffe_layout,
    to_keras_layout,
)

GOLDENS = Path(__file__).resolve().parent / "fixtures" / "fork_goldens"
F32 = np.float32
DETECTION_HEADS = ["det_center", "det_cut", "det_corner", "det_corner_size", "det_encoded",
                   "det_eta", "det_per_class", "det_none"]



def _numpy(x):
    return keras.ops.convert_to_numpy(x)


# Heads whose keep_top_k cut sorts equal scores with std::sort, which leaves their order
# unspecified (libstdc++ happens to reorder them here); there we accept any order within a
# run of equal (label, score). Elsewhere equal scores keep prior order (stable_sort).
STD_SORT_TIES = {"det_encoded", "det_eta"}


def _tie_canonical(rows):
    """Rows re-sorted within runs of equal (label, score) only (Caffe's order is by label,
    then score, best first, so a full lexsort permutes nothing else)."""
    return rows[np.lexsort((rows[:, 6], rows[:, 5], rows[:, 4], rows[:, 3], -rows[:, 2],
                            rows[:, 1]))]


def assert_detections(got, caffe_rows, name, any_tie_order=False):
    """Our (batch, rows, 7) block against Caffe's (1, 1, n, 7): per image, the valid rows
    (label >= 0) equal Caffe's rows for that image, in order; the rest are all -1."""
    got = np.asarray(got)
    caffe_rows = np.asarray(caffe_rows).reshape(-1, 7)
    caffe_rows = caffe_rows[caffe_rows[:, 1] >= 0]  # drop Caffe's "no detections" rows
    assert got.ndim == 3 and got.shape[2] == 7, (name, got.shape)
    for i in range(got.shape[0]):
        ref = caffe_rows[caffe_rows[:, 0] == i]
        valid = got[i][got[i, :, 1] >= 0]
        assert len(valid) == len(ref), f"{name} image {i}: {len(valid)} rows, Caffe {len(ref)}"
        assert np.all(got[i, :len(ref), 1] >= 0), f"{name} image {i}: valid rows come first"
        if any_tie_order:
            order = np.lexsort((-valid[:, 2], valid[:, 1]))
            assert np.array_equal(order, np.arange(len(valid))), f"{name}: label, score order"
            valid, ref = _tie_canonical(valid), _tie_canonical(ref)
        assert_blob_close(valid, ref, f"{name} image {i}")
        assert np.all(got[i, len(ref):] == -1), f"{name} image {i}: padding is -1"


def _golden(case):
    d = GOLDENS / case
    weights = d / "weights.caffemodel"
    return (d / "deploy.prototxt", weights if weights.exists() else None,
            np.load(d / "inputs.npz"), np.load(d / "outputs.npz"))


def _feed(inputs):
    return {k: to_keras_layout(inputs[k]) for k in inputs.files}


# ----------------------------------------------------------------- yufacedetectnet

def test_yufacedetectnet_every_blob_matches_caffe():
    deploy, weights, inputs, outputs = model_files("yufacedetectnet_v1")
    model = quiet_convert(deploy, weights, outputs="all")
    got = model(_feed(np.load(inputs)))
    golden = np.load(outputs)
    for blob in golden.files:
        out = _numpy(got[blob])
        if blob == "detection_out":
            assert out.shape == (1, 50, 7)  # keep_top_k rows; Caffe found 22
            assert_detections(out, golden[blob], blob)
        else:
            assert_blob_close(to_caffe_layout(out), golden[blob], blob)


def test_detection_output_alone_on_caffes_heads():
    """Caffe's own mbox_loc / mbox_conf_flatten / mbox_priorbox in, Caffe's rows out."""
    golden = np.load(model_files("yufacedetectnet_v1")[3])
    layer = ssd_layers.DetectionOutput(
        num_classes=2, num_priors=4420, code_type="CENTER_SIZE", keep_top_k=50,
        confidence_threshold=0.01, nms_threshold=0.15, top_k=100)
    out = _numpy(layer([golden["mbox_loc"], golden["mbox_conf_flatten"],
                        golden["mbox_priorbox"]]))
    assert_detections(out, golden["detection_out"], "detection_out")


def test_prior_boxes_are_caffes_bit_for_bit():
    golden = np.load(model_files("yufacedetectnet_v1")[3])
    for name, sizes, step in [("conv3_3_norm", [10, 16, 24], 8), ("conv4_3_norm", [32, 48], 16),
                              ("conv5_3_norm", [64, 96], 32),
                              ("conv6_3_norm", [128, 192, 256], 64)]:
        priors = ssd_layers.prior_boxes(golden[name].shape[2:], (240, 320), sizes,
                                        variance=[0.1, 0.1, 0.2, 0.2], step_hw=(step, step))
        np.testing.assert_array_equal(priors, golden[f"{name}_mbox_priorbox"])


def test_compiled_model_matches_caffe():
    """predict() runs the traced path (jax.jit / tf.function: NMS as a while_loop)."""
    deploy, weights, inputs, outputs = model_files("yufacedetectnet_v1")
    model = quiet_convert(deploy, weights)
    out = model.predict(_feed(np.load(inputs)), verbose=0)["detection_out"]
    assert_detections(out, np.load(outputs)["detection_out"], "detection_out")


# ---------------------------------------------------------- SSD fork golden cases

@pytest.fixture(scope="module")
def detection_case():
    deploy, weights, inputs, outputs = _golden("ssd_detection")
    model = quiet_convert(deploy, weights, outputs="all")
    return model, inputs, outputs


def test_prior_box_options_match_caffe(detection_case):
    """max_size, duplicate and flipped ratios, clip, 1 or 4 variances, step / step_h+step_w,
    offset, img_size and img_h+img_w, non-integer sizes (truncated as Caffe does)."""
    model, inputs, outputs = detection_case
    got = model(_feed(inputs))
    for blob in ("pb_a", "pb_b", "pb_img", "pb_hw", "priors"):
        np.testing.assert_array_equal(_numpy(got[blob]), outputs[blob], blob)


@pytest.mark.parametrize("head", DETECTION_HEADS)
def test_detection_output_options_match_caffe(detection_case, head):
    """Code types, variance in target, per-class locations, keep_top_k cutting across
    classes, adaptive NMS (eta), a background id other than 0, no detections at all, and
    equal scores (ordered by prior index, as Caffe's stable sort does); batch of 2."""
    model, inputs, outputs = detection_case
    got = _numpy(model(_feed(inputs))[head])
    assert_detections(got, outputs[head], head, any_tie_order=head in STD_SORT_TIES)


def test_detection_output_traced_and_stepwise_nms_agree(monkeypatch):
    """predict() traces (jax.jit / tf.function: NMS as a while_loop); nets that leave
    top_k unset get NMS one candidate at a time. Both give Caffe's rows."""
    deploy, _, inputs, outputs = _golden("ssd_detection")
    heads = ["det_center", "det_cut", "det_eta", "det_per_class"]
    model = quiet_convert(deploy, outputs=heads)
    feed = _feed(inputs)
    traced = model.predict(feed, verbose=0)
    for h in heads:
        assert_detections(traced[h], outputs[h], f"{h} (traced)", h in STD_SORT_TIES)
    monkeypatch.setattr(ssd_layers, "_MATRIX_NMS_LIMIT", 0)
    stepwise = model(feed)
    for h in heads:
        assert_detections(_numpy(stepwise[h]), outputs[h], f"{h} (stepwise)",
                          h in STD_SORT_TIES)


def test_normalize_matches_caffe():
    """across_spatial x channel_shared, eps, learned scales, a 2-D input."""
    deploy, weights, inputs, outputs = _golden("normalize")
    model = quiet_convert(deploy, weights, outputs="all")
    got = model(_feed(inputs))
    for blob in ("n_ss", "n_sc", "n_cs", "n_cc", "n_flat"):
        assert_blob_close(to_caffe_layout(_numpy(got[blob])), outputs[blob], blob)


def test_normalize_fresh_weights_take_the_scale_filler():
    deploy, _, _, _ = _golden("normalize")
    model = quiet_convert(deploy)
    assert np.all(_numpy(model.get_layer("n_cc").scale) == 20)   # scale_filler value 20
    assert np.all(_numpy(model.get_layer("n_ss").scale) == 1)    # Caffe's default


def test_ssd_layers_save_and_load(tmp_path):
    deploy, _, inputs, _ = _golden("ssd_detection")
    blobs = ["pb_b", "det_eta", "det_per_class"]
    model = quiet_convert(deploy, outputs=blobs)
    path = tmp_path / "ssd.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)   # safe mode: registered layers only
    feed = _feed(inputs)
    a, b = model(feed), loaded(feed)
    for blob in blobs:
        np.testing.assert_array_equal(_numpy(a[blob]), _numpy(b[blob]), blob)


def test_keep_top_k_unset_gives_every_candidate_a_row():
    layer = ssd_layers.DetectionOutput(num_classes=3, num_priors=7, top_k=5, keep_top_k=-1)
    assert layer.compute_output_shape([(None, 28), (None, 21), (1, 2, 28)]) == (None, 10, 7)
    g = load_graph(GOLDENS / "ssd_detection" / "deploy.prototxt")
    assert g.shape("det_corner") == (2, 348, 7)   # 3 labels x 116 priors (no top_k)


# -------------------------------------------------------------------- MobileNet-SSD

MOBILENET_SSD = PROTOTXT_ONLY / "MobileNetSSD_deploy.prototxt"


def test_mobilenet_ssd_inspects_with_every_layer_supported():
    info = describe(load_graph(MOBILENET_SSD))
    assert info["unsupported"] == []


def test_mobilenet_ssd_converts_fresh_and_runs():
    model = quiet_convert(MOBILENET_SSD)
    # fresh weights score every class near 1/21, below the 0.25 threshold; bias the conf
    # heads towards class 7 so that boxes reach NMS
    for layer in model.layers:
        if layer.name.endswith("mbox_conf") and layer.get_weights():
            kernel, bias = layer.get_weights()
            bias = bias.reshape(-1, 21)
            bias[:, 7] = 4.0
            layer.set_weights([kernel * 0.1, bias.reshape(-1)])
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 300, 300, 3)).astype(np.float32)
    out = _numpy(model({"data": image})["detection_out"])
    assert out.shape == (2, 100, 7)
    for i in range(2):
        rows = out[i]
        valid = rows[rows[:, 1] >= 0]
        assert 0 < len(valid) < 100
        assert np.all(rows[len(valid):] == -1)
        assert np.all(valid[:, 0] == i)
        assert np.all(valid[:, 1] == 7)
        assert np.all(valid[:, 2] > 0.25)                 # confidence_threshold
        assert np.all(np.diff(valid[:, 2]) <= 0)          # best first
        assert np.all(valid[:, 5] > valid[:, 3]) and np.all(valid[:, 6] > valid[:, 4])


# ------------------------------------------- a sequential reference of Caffe's algorithm

def detection_reference(loc, conf, prior, num_classes, share_location=True,
                        background_label_id=0, code_type="CORNER",
                        variance_encoded_in_target=False, keep_top_k=-1,
                        confidence_threshold=None, nms_threshold=0.3, top_k=-1, eta=1.0):
    """weiliu89/caffe detection_output_layer.cpp Forward_cpu with bbox_util.cpp's
    DecodeBBox, ApplyNMSFast and JaccardOverlap, loop for loop in float32; returns Caffe's
    rows (n, 7). Equal scores must not meet at the keep_top_k cut (std::sort)."""
    f = F32
    n = loc.shape[0]
    p = prior.shape[-1] // 4
    num_loc = 1 if share_location else num_classes
    priors, variances = prior.reshape(-1, 2, p, 4)[0]
    thr = f(-np.finfo(np.float32).max) if confidence_threshold is None \
        else f(confidence_threshold)

    def size(b):
        return f(0) if b[2] < b[0] or b[3] < b[1] else f((b[2] - b[0]) * (b[3] - b[1]))

    def decode(pb, v, lb):
        if code_type == "CORNER":
            return pb + (lb if variance_encoded_in_target else v * lb)
        pw, ph = f(pb[2] - pb[0]), f(pb[3] - pb[1])
        if code_type == "CORNER_SIZE":
            s = np.array([pw, ph, pw, ph], f)
            return pb + (lb if variance_encoded_in_target else v * lb) * s
        cx, cy = f((pb[0] + pb[2]) / f(2)), f((pb[1] + pb[3]) / f(2))
        if variance_encoded_in_target:
            dcx, dcy = f(lb[0] * pw + cx), f(lb[1] * ph + cy)
            w, h = f(np.exp(lb[2]) * pw), f(np.exp(lb[3]) * ph)
        else:
            dcx, dcy = f(v[0] * lb[0] * pw + cx), f(v[1] * lb[1] * ph + cy)
            w, h = f(np.exp(f(v[2] * lb[2])) * pw), f(np.exp(f(v[3] * lb[3])) * ph)
        return np.array([dcx - w / f(2), dcy - h / f(2), dcx + w / f(2), dcy + h / f(2)], f)

    def iou(a, b):
        iw = f(min(a[2], b[2]) - max(a[0], b[0]))
        ih = f(min(a[3], b[3]) - max(a[1], b[1]))
        if not (iw > 0 and ih > 0):
            return f(0)
        inter = f(iw * ih)
        return f(inter / f(f(size(a) + size(b)) - inter))

    rows = []
    for i in range(n):
        locs = loc[i].reshape(p, num_loc, 4)
        scores = conf[i].reshape(p, num_classes)
        indices = {}
        for c in range(num_classes):
            if c == background_label_id:
                continue
            boxes = [decode(priors[j], variances[j], locs[j, 0 if share_location else c])
                     for j in range(p)]
            cand = sorted((j for j in range(p) if scores[j, c] > thr),
                          key=lambda j: -scores[j, c])       # stable, as std::stable_sort
            if top_k > -1:
                cand = cand[:top_k]
            kept, adaptive = [], f(nms_threshold)
            for j in cand:
                if all(iou(boxes[j], boxes[k]) <= adaptive for k in kept):
                    kept.append(j)
                    if eta < 1 and adaptive > 0.5:
                        adaptive = f(adaptive * f(eta))
            indices[c] = (kept, boxes)
        total = sum(len(k) for k, _ in indices.values())
        if -1 < keep_top_k < total:
            pairs = sorted(((scores[j, c], c, j) for c, (k, _) in indices.items() for j in k),
                           key=lambda t: -t[0])[:keep_top_k]
            chosen = {c: [j for s, cc, j in pairs if cc == c] for c in indices}
        else:
            chosen = {c: k for c, (k, _) in indices.items()}
        for c in sorted(chosen):
            for j in chosen[c]:
                rows.append([i, c, scores[j, c], *indices[c][1][j]])
    return np.array(rows, F32).reshape(-1, 7)


@pytest.mark.parametrize("seed,cfg", [
    (1, {"code_type": "CENTER_SIZE", "keep_top_k": 15, "confidence_threshold": 0.1,
         "nms_threshold": 0.4, "top_k": 20}),
    (2, {"code_type": "CORNER", "nms_threshold": 0.2}),                 # inverted boxes too
    (3, {"code_type": "CORNER_SIZE", "share_location": False, "keep_top_k": 30, "top_k": 200,
         "background_label_id": 3, "confidence_threshold": 0.05, "nms_threshold": 0.5}),
    (4, {"code_type": "CENTER_SIZE", "variance_encoded_in_target": True, "eta": 0.7,
         "nms_threshold": 0.95, "keep_top_k": 40, "confidence_threshold": 0.02}),
    (5, {"code_type": "CENTER_SIZE", "background_label_id": -1, "share_location": False,
         "nms_threshold": 0.0, "top_k": 10}),                           # any overlap kills
])
def test_detection_output_matches_a_sequential_reference(seed, cfg):
    rng = np.random.default_rng(seed)
    n, p, c = 2, 60, 5
    centers = rng.uniform(0, 1, (p, 2))
    sizes = rng.uniform(0.05, 0.4, (p, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], 1).astype(F32)
    var = np.tile(np.array([0.1, 0.1, 0.2, 0.2], F32), (p, 1))
    prior = np.stack([boxes.reshape(-1), var.reshape(-1)])[None]
    num_loc = 1 if cfg.get("share_location", True) else c
    loc = rng.normal(0, 0.8, (n, p * num_loc * 4)).astype(F32)
    logits = rng.normal(0, 2, (n, p, c))
    conf = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(F32)
    conf = conf.reshape(n, -1)
    layer = ssd_layers.DetectionOutput(num_classes=c, num_priors=p, **cfg)
    got = _numpy(layer([loc, conf, prior]))
    ref = detection_reference(loc, conf, prior, c, **cfg)
    assert len(ref) > 0
    assert_detections(got, ref, f"seed {seed}")
