"""Detection heads of Caffe forks (emit/layers/detect.py, detect_nms.py) against loop-for-loop numpy ports
of each fork's C++ (cited per reference), and, where the Caffe build of ../shared/tools has
the layer (Proposal), against real Caffe goldens (tests/fixtures/fork_goldens/proposal)."""
import importlib.util
import math
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras.emit.layers import detect, detect_nms
from caffe2keras.graph import load_graph
from caffe2keras.inspect import describe

from .shared import assert_blob_close, to_caffe_layout, to_keras_layout

F32 = np.float32
GOLDENS = Path(__file__).resolve().parent / "fixtures" / "fork_goldens"


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _convert(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return caffe2keras.convert(*args, **kw)


def c_round(x):
    """C's round(): halves away from zero."""
    x = F32(x)
    return float(np.sign(x) * np.floor(np.abs(x) + np.float64(0.5)))


# ------------------------------------------------------------------ numpy references

def roi_pooling_reference(data, rois, pooled_h, pooled_w, spatial_scale):
    """rbgirshick/caffe-fast-rcnn src/caffe/layers/roi_pooling_layer.cpp (commit 4c85442)
    Forward_cpu, loop for loop in float32. data NCHW, rois (R, 5); returns (R, C, ph, pw)."""
    n_img, c, h, w = data.shape
    ss = F32(spatial_scale)
    out = np.full((len(rois), c, pooled_h, pooled_w), -np.finfo(F32).max, F32)
    for n, roi in enumerate(rois.astype(F32)):
        b = int(roi[0])
        sw, sh, ew, eh = (int(c_round(F32(v) * ss)) for v in roi[1:5])
        assert 0 <= b < n_img
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bh, bw = F32(rh) / F32(pooled_h), F32(rw) / F32(pooled_w)
        for ch in range(c):
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    hs = int(np.floor(F32(ph) * bh))
                    ws = int(np.floor(F32(pw) * bw))
                    he = int(np.ceil(F32(ph + 1) * bh))
                    we = int(np.ceil(F32(pw + 1) * bw))
                    hs, he = min(max(hs + sh, 0), h), min(max(he + sh, 0), h)
                    ws, we = min(max(ws + sw, 0), w), min(max(we + sw, 0), w)
                    if he <= hs or we <= ws:
                        out[n, ch, ph, pw] = 0
                    for y in range(hs, he):
                        for x in range(ws, we):
                            out[n, ch, ph, pw] = max(out[n, ch, ph, pw], data[b, ch, y, x])
    return out


def psroi_pooling_reference(data, rois, output_dim, group_size, spatial_scale):
    """daijifeng001/caffe-rfcn src/caffe/layers/psroi_pooling_layer.cu (commit 4bcfcd1)
    PSROIPoolingForward, one output at a time, float32 (no fused multiply-add)."""
    _, c, h, w = data.shape
    g = group_size
    assert c == output_dim * g * g
    ss = F32(spatial_scale)
    out = np.zeros((len(rois), output_dim, g, g), F32)
    for n, roi in enumerate(rois.astype(F32)):
        b = int(roi[0])
        sw = F32(c_round(roi[1])) * ss
        sh = F32(c_round(roi[2])) * ss
        ew = F32(F32(c_round(roi[3]) + 1.0) * ss)
        eh = F32(F32(c_round(roi[4]) + 1.0) * ss)
        rw, rh = F32(max(ew - sw, 0.1)), F32(max(eh - sh, 0.1))
        bh, bw = F32(rh / F32(g)), F32(rw / F32(g))
        for ct in range(output_dim):
            for ph in range(g):
                for pw in range(g):
                    hs = int(np.floor(F32(F32(ph) * bh) + sh))
                    ws = int(np.floor(F32(F32(pw) * bw) + sw))
                    he = int(np.ceil(F32(F32(ph + 1) * bh) + sh))
                    we = int(np.ceil(F32(F32(pw + 1) * bw) + sw))
                    hs, he = min(max(hs, 0), h), min(max(he, 0), h)
                    ws, we = min(max(ws, 0), w), min(max(we, 0), w)
                    ch = (ct * g + ph) * g + pw
                    total = F32(0)
                    for y in range(hs, he):
                        for x in range(ws, we):
                            total = F32(total + data[b, ch, y, x])
                    area = F32((he - hs) * (we - ws))
                    out[n, ct, ph, pw] = 0 if he <= hs or we <= ws else total / area
    return out


# ----------------------------------------------------------------------- ROIPooling

def _rois_with_edge_cases(rng, n_img, height, width, scale, count=12):
    """Random ROIs plus: whole image, beyond every border, inverted (x2 < x1), a single
    pixel, a corner exactly at .5 after scaling, one on the last image."""
    img_h, img_w = height / scale, width / scale
    x1 = rng.uniform(-10, img_w, count)
    y1 = rng.uniform(-10, img_h, count)
    x2 = x1 + rng.uniform(0, img_w, count)
    y2 = y1 + rng.uniform(0, img_h, count)
    rows = [np.stack([rng.integers(0, n_img, count), x1, y1, x2, y2], 1)]
    rows.append(np.array([
        [0, 0, 0, img_w - 1, img_h - 1],
        [n_img - 1, -50, -40, img_w + 60, img_h + 30],
        [0, img_w + 5, img_h + 5, img_w + 40, img_h + 90],     # outside: every bin empty
        [0, 30, 20, 10, 5],                                   # inverted
        [n_img - 1, 7, 9, 7, 9],                               # one pixel
        [0, 0.5 / scale, 1.5 / scale, 2.5 / scale, 3.5 / scale],  # exact halves
    ]))
    return np.concatenate(rows).astype(F32)


@pytest.mark.parametrize("pooled,scale", [((3, 3), 1 / 16), ((2, 4), 0.25), ((6, 5), 1.0),
                                          ((1, 1), 1 / 8)])
def test_roi_pooling_matches_the_fast_rcnn_reference(pooled, scale):
    rng = np.random.default_rng(sum(pooled))
    data = rng.normal(size=(2, 3, 9, 13)).astype(F32)
    data[1, :, 4, 6] = 5.0       # ties inside a bin
    rois = _rois_with_edge_cases(rng, 2, 9, 13, scale)
    ref = roi_pooling_reference(data, rois, *pooled, scale)
    layer = detect.ROIPooling(*pooled, spatial_scale=scale)
    got = _numpy(layer([to_keras_layout(data), rois]))
    assert got.shape == (len(rois), pooled[0], pooled[1], 3)
    np.testing.assert_array_equal(to_caffe_layout(got), ref)   # max: exact


def test_roi_pooling_padding_rows_pool_to_zero():
    data = np.ones((1, 5, 5, 2), F32)
    rois = np.array([[0, 0, 0, 4, 4], [-1, 0, 0, 0, 0], [3, 0, 0, 4, 4]], F32)
    got = _numpy(detect.ROIPooling(2, 2)([data, rois]))
    assert np.all(got[0] == 1) and np.all(got[1:] == 0)


# --------------------------------------------------------------------- PSROIPooling

@pytest.mark.parametrize("group,dim,scale", [(3, 2, 1 / 16), (2, 3, 0.5), (1, 4, 1.0),
                                             (4, 1, 0.25)])
def test_psroi_pooling_matches_the_rfcn_reference(group, dim, scale):
    rng = np.random.default_rng(group * 10 + dim)
    data = rng.normal(size=(2, dim * group * group, 8, 11)).astype(F32)
    rois = _rois_with_edge_cases(rng, 2, 8, 11, scale)
    ref = psroi_pooling_reference(data, rois, dim, group, scale)
    layer = detect.PSROIPooling(dim, group, spatial_scale=scale)
    got = _numpy(layer([to_keras_layout(data), rois]))
    assert got.shape == (len(rois), group, group, dim)
    assert_blob_close(to_caffe_layout(got), ref, "psroi")


# ---------------------------------------------------------------------- Reorg, Region

def reorg_reference(data, stride, reverse):
    """gklz1982/caffe-yolov2 reorg_layer.cpp (commit a4e1075): darknet's reorg_cpu(bottom,
    W, H, C, N, stride, forward=reverse, top) on the flat NCHW buffers."""
    n, c, h, w = data.shape
    x = data.reshape(-1)
    out = np.zeros_like(x)
    out_c = c // (stride * stride)
    for b in range(n):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if reverse:
                        out[out_index] = x[in_index]
                    else:
                        out[in_index] = x[out_index]
    s2 = stride * stride
    top = (n, c // s2, h * stride, w * stride) if reverse else (n, c * s2, h // stride,
                                                                 w // stride)
    return out.reshape(top)


def region_reference(data, classes, coords, num):
    """openvinotoolkit/training_toolbox_caffe region_layer.cpp (commit 2137b63)."""
    n, c, h, w = data.shape
    out = data.astype(np.float64).copy().reshape(n, num, coords + 1 + classes, h, w)
    logistic = lambda v: 1.0 / (1.0 + np.exp(-v))
    out[:, :, :2] = logistic(out[:, :, :2])
    out[:, :, coords] = logistic(out[:, :, coords])
    cls = out[:, :, coords + 1:]
    e = np.exp(cls - cls.max(axis=2, keepdims=True))
    out[:, :, coords + 1:] = e / e.sum(axis=2, keepdims=True)
    return out.reshape(n, c, h, w).astype(F32)


@pytest.mark.parametrize("stride,reverse,shape", [(2, False, (2, 8, 6, 4)),
                                                  (3, False, (1, 9, 6, 9)),
                                                  (2, True, (2, 8, 3, 5))])
def test_reorg_is_darknets_permutation(stride, reverse, shape):
    data = np.arange(math.prod(shape), dtype=F32).reshape(shape)
    ref = reorg_reference(data, stride, reverse)
    got = _numpy(detect.Reorg(stride, reverse)(to_keras_layout(data)))
    np.testing.assert_array_equal(to_caffe_layout(got), ref)


@pytest.mark.parametrize("classes,coords,num", [(3, 4, 2), (1, 4, 5), (2, 5, 1)])
def test_region_matches_the_reference(classes, coords, num):
    rng = np.random.default_rng(classes)
    data = rng.normal(0, 3, size=(2, num * (coords + 1 + classes), 4, 3)).astype(F32)
    got = _numpy(detect.Region(classes, coords, num)(to_keras_layout(data)))
    assert_blob_close(to_caffe_layout(got), region_reference(data, classes, coords, num),
                      "region")


# -------------------------------------------------------- whole nets from a prototxt

DETECT_NET = """
name: "detect_heads"
input: "data"  input_shape { dim: 2 dim: 8 dim: 12 dim: 16 }
input: "rois"  input_shape { dim: 5 dim: 5 }
layer { name: "roi" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi"
        roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.0625 } }
layer { name: "psroi" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "psroi"
        psroi_pooling_param { spatial_scale: 0.0625 output_dim: 2 group_size: 2 } }
layer { name: "reorg" type: "Reorg" bottom: "data" top: "reorg" reorg_param { stride: 2 } }
layer { name: "region" type: "Region" bottom: "data" top: "region"
        region_param { classes: 1 coords: 2 num: 2 } }
"""


@pytest.fixture
def detect_net(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text(DETECT_NET)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 8, 12, 16)).astype(F32)
    rois = _rois_with_edge_cases(rng, 2, 12, 16, 1 / 16, count=0)[:5]
    return path, data, rois


def test_detect_heads_convert_and_match_the_references(detect_net):
    path, data, rois = detect_net
    g = load_graph(path)
    assert g.shape("roi") == (5, 8, 3, 2)
    assert g.shape("psroi") == (5, 2, 2, 2)
    assert g.shape("reorg") == (2, 32, 6, 8)
    assert g.shape("region") == (2, 8, 12, 16)
    assert describe(g)["unsupported"] == []
    model = _convert(path, outputs="all")
    got = model({"data": to_keras_layout(data), "rois": rois})
    np.testing.assert_array_equal(to_caffe_layout(got["roi"]),
                                  roi_pooling_reference(data, rois, 3, 2, 1 / 16))
    assert_blob_close(to_caffe_layout(got["psroi"]),
                      psroi_pooling_reference(data, rois, 2, 2, 1 / 16), "psroi")
    np.testing.assert_array_equal(to_caffe_layout(got["reorg"]), reorg_reference(data, 2, False))
    assert_blob_close(to_caffe_layout(got["region"]), region_reference(data, 1, 2, 2), "region")


def test_detect_heads_save_and_load(detect_net, tmp_path):
    path, data, rois = detect_net
    model = _convert(path, outputs="all")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    feed = {"data": to_keras_layout(data), "rois": rois}
    a, b = model(feed), loaded(feed)
    for blob in ("roi", "psroi", "reorg", "region"):
        np.testing.assert_array_equal(_numpy(a[blob]), _numpy(b[blob]), blob)


@pytest.mark.parametrize("old,new,message", [
    ("pooled_h: 3 pooled_w: 2", "pooled_w: 2", "pooled_h"),
    ("output_dim: 2 group_size: 2", "output_dim: 3 group_size: 2", "channels"),
    ("reorg_param { stride: 2 }", "reorg_param { stride: 3 }", "divisible"),
    ("classes: 1 coords: 2 num: 2", "classes: 2 coords: 2 num: 2", "channels"),
])
def test_bad_settings_are_named(tmp_path, old, new, message):
    path = tmp_path / "bad.prototxt"
    path.write_text(DETECT_NET.replace(old, new))
    with pytest.raises(caffe2keras.CaffeFormatError, match=message):
        load_graph(path)


# ------------------------------------------------------------------ Proposal (Caffe)

PROPOSALS = ["prop_main", "prop_few", "prop_min", "prop_all"]


def assert_proposals(rois, scores, caffe_rois, caffe_scores, post, name):
    """Our per-image blocks of ``post`` rows against Caffe's stacked rows: per image the
    valid rows equal Caffe's rows for that image, in order; the rest are -1."""
    rois, scores = np.asarray(rois), np.asarray(scores)
    n = len(rois) // post
    for i in range(n):
        block, block_scores = rois[i * post:(i + 1) * post], scores[i * post:(i + 1) * post]
        mine = caffe_rois[:, 0] == i
        ref, ref_scores = caffe_rois[mine], caffe_scores[mine]
        assert np.all(block[:len(ref), 0] == i), f"{name} image {i}: valid rows come first"
        assert_blob_close(block[:len(ref)], ref, f"{name} image {i} rois")
        assert_blob_close(block_scores[:len(ref)], ref_scores, f"{name} image {i} scores")
        assert np.all(block[len(ref):] == -1) and np.all(block_scores[len(ref):] == -1), \
            f"{name} image {i}: padding rows are -1"


@pytest.fixture(scope="module")
def proposal_case():
    d = GOLDENS / "proposal"
    inputs, outputs = np.load(d / "inputs.npz"), np.load(d / "outputs.npz")
    model = _convert(d / "deploy.prototxt", outputs="all")
    feed = {k: to_keras_layout(inputs[k]) for k in inputs.files}
    return d / "deploy.prototxt", model, feed, outputs


def _post(deploy, name):
    return load_graph(deploy).shape(name)[0] // 2


@pytest.mark.parametrize("name", PROPOSALS)
def test_proposal_matches_caffe(proposal_case, name):
    """Anchors, deltas, clipping to im_info, min_size, pre/post_nms_topn (above the anchor
    count too), NMS with +1 sizes, fewer survivors than post_nms_topn; batch of 2."""
    deploy, model, feed, outputs = proposal_case
    got = model(feed)
    assert_proposals(_numpy(got[name]), _numpy(got[f"{name}_scores"]), outputs[name],
                     outputs[f"{name}_scores"], _post(deploy, name), name)


# ------------------------------------------------------------ Yolov3DetectionOutput

def yolov3_reference(bottoms, num_classes, num_box, biases, anchors_scale, mask,
                     mask_group_num, confidence_threshold, nms_threshold):
    """eric612/MobileNet-YOLO yolov3_detection_output_layer.cpp Forward_cpu (commit
    c93a7e6) for one image, loop for loop in float32: every (box, class) candidate above
    the threshold, sorted by score (stable here; std::sort there), class-agnostic greedy
    NMS at IoU >= threshold. Returns the fork's rows (n, 7)."""
    def sig(v):
        return F32(1.0 / (1.0 + np.exp(-np.float64(v))))

    length = 5 + num_classes
    groups = len(mask) // mask_group_num
    preds = []
    for t, x in enumerate(bottoms):
        side = x.shape[3]
        stride = side * side
        flat = x[0].reshape(-1)
        for s in range(stride):
            for n in range(num_box):
                index = n * length * stride + s
                tx, ty = sig(flat[index]), sig(flat[index + stride])
                obj = sig(flat[index + 4 * stride])
                m = mask[n + t * groups]
                span = side * anchors_scale[t]
                bx = F32(F32(s % side + tx) / F32(side))
                by = F32(F32(s // side + ty) / F32(side))
                bw = F32(F32(np.exp(flat[index + 2 * stride]) * F32(biases[2 * m])) / F32(span))
                bh = F32(F32(np.exp(flat[index + 3 * stride]) * F32(biases[2 * m + 1]))
                         / F32(span))
                for c in range(num_classes):
                    score = F32(sig(flat[index + (5 + c) * stride]) * obj)
                    if score > F32(confidence_threshold):
                        preds.append((bx, by, bw, bh, c, score))
    return _sorted_nms_rows(preds, nms_threshold)


YOLO_SETTINGS = {"num_classes": 3, "num_box": 2,
                 "biases": [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319],
                 "anchors_scale": [32, 16], "mask": [3, 4, 0, 1], "mask_group_num": 2,
                 "confidence_threshold": 0.3, "nms_threshold": 0.45}


def _yolo_inputs(seed, sides=(4, 8), obj_bias=0.0):
    rng = np.random.default_rng(seed)
    c = YOLO_SETTINGS["num_box"] * (5 + YOLO_SETTINGS["num_classes"])
    out = []
    for side in sides:
        x = rng.normal(0, 1.5, size=(1, c, side, side)).astype(F32)
        x.reshape(1, YOLO_SETTINGS["num_box"], -1, side, side)[:, :, 4] += obj_bias
        out.append(x)
    return out


@pytest.mark.parametrize("seed,obj_bias,thr", [(0, 0.0, 0.45), (1, 2.0, 0.45),
                                               (2, 1.0, 0.1), (3, -8.0, 0.45)])
def test_yolov3_detection_output_matches_the_reference(seed, obj_bias, thr):
    """Several classes per box above threshold, tight and loose NMS, no detection."""
    settings = {**YOLO_SETTINGS, "nms_threshold": thr}
    bottoms = _yolo_inputs(seed, obj_bias=obj_bias)
    # equal scores in far apart cells: the rows keep cell order
    bottoms[1][..., 6, 7] = bottoms[1][..., 0, 0] = bottoms[1][..., 3, 3]
    ref = yolov3_reference(bottoms, **settings)
    layer = detect_nms.Yolov3DetectionOutput(**settings, sides=[4, 8])
    got = _numpy(layer([to_keras_layout(b) for b in bottoms]))
    assert got.shape == (1, (16 + 64) * 2, 7)
    valid = got[0][got[0, :, 1] >= 0]
    assert len(valid) == len(ref)
    assert_blob_close(valid, ref, "yolov3")
    assert np.all(got[0, len(ref):] == -1)
    if obj_bias < -5:
        assert len(ref) == 0


def test_yolov3_detection_output_keeps_images_apart():
    """Batch of 2: each image gets its own block (the fork would merge them)."""
    a, b = _yolo_inputs(4, obj_bias=1.0), _yolo_inputs(5, obj_bias=1.0)
    layer = detect_nms.Yolov3DetectionOutput(**YOLO_SETTINGS, sides=[4, 8])
    got = _numpy(layer([to_keras_layout(np.concatenate([x, y])) for x, y in zip(a, b)]))
    for i, bottoms in enumerate((a, b)):
        ref = yolov3_reference(bottoms, **YOLO_SETTINGS)
        ref[:, 0] = i
        assert_blob_close(got[i, :len(ref)], ref, f"image {i}")
        assert np.all(got[i, len(ref):] == -1)


YOLO_NET = """
name: "yolo_head"
input: "s32" input_shape { dim: 1 dim: 16 dim: 4 dim: 4 }
input: "s16" input_shape { dim: 1 dim: 16 dim: 8 dim: 8 }
layer { name: "det" type: "Yolov3DetectionOutput" bottom: "s32" bottom: "s16" top: "det"
        yolov3_detection_output_param {
          num_classes: 3 num_box: 2 confidence_threshold: 0.3 nms_threshold: 0.45
          biases: 10 biases: 14 biases: 23 biases: 27 biases: 37 biases: 58
          biases: 81 biases: 82 biases: 135 biases: 169 biases: 344 biases: 319
          anchors_scale: 32 anchors_scale: 16 mask_group_num: 2
          mask: 3 mask: 4 mask: 0 mask: 1 } }
"""


def test_yolov3_net_converts_saves_and_loads(tmp_path):
    path = tmp_path / "yolo.prototxt"
    path.write_text(YOLO_NET)
    assert load_graph(path).shape("det") == (1, 160, 7)
    model = _convert(path)
    bottoms = _yolo_inputs(6, obj_bias=1.0)
    feed = {"s32": to_keras_layout(bottoms[0]), "s16": to_keras_layout(bottoms[1])}
    got = _numpy(model(feed)["det"])
    ref = yolov3_reference(bottoms, **YOLO_SETTINGS)
    assert_blob_close(got[0, :len(ref)], ref, "det")
    model.save(tmp_path / "y.keras")
    again = _numpy(keras.saving.load_model(tmp_path / "y.keras")(feed)["det"])
    np.testing.assert_array_equal(got, again)
    path.write_text(YOLO_NET.replace("nms_threshold: 0.45", "nms_threshold: 1.5"))
    assert describe(load_graph(path))["unsupported"] == [{
        "layer": "det", "type": "Yolov3DetectionOutput",
        "reason": "nms_threshold 1.5 > 1 switches NMS off (every class of every box becomes "
                  "a row): not supported"}]
    with pytest.raises(caffe2keras.CaffeFormatError, match="mask_group_num"):
        path.write_text(YOLO_NET.replace("mask_group_num: 2", "mask_group_num: 3"))
        load_graph(path)


def yolo_v2_reference(bottoms, num_classes, num_box, biases, confidence_threshold,
                      nms_threshold):
    """eric612/MobileNet-YOLO yolo_detection_output_layer.cpp Forward_cpu (commit 092f8df)
    for one image: per map, cell (row j, column i), box n: logistic x/y/objectness, a
    softmax's best class (first of equal ones), kept at score >= threshold; then the
    same sort and class-agnostic NMS as Yolov3DetectionOutput."""
    def sig(v):
        return F32(1.0 / (1.0 + np.exp(-np.float64(v))))

    preds = []
    for x in bottoms:
        side = x.shape[3]
        cells = x[0].transpose(1, 2, 0).reshape(side * side, num_box, -1)  # NHWC order
        for s in range(side * side):
            j, i = divmod(s, side)
            for n in range(num_box):
                v = cells[s, n]
                bx = F32(F32(i + sig(v[0])) / F32(side))
                by = F32(F32(j + sig(v[1])) / F32(side))
                bw = F32(F32(np.exp(v[2]) * F32(biases[2 * n])) / F32(side))
                bh = F32(F32(np.exp(v[3]) * F32(biases[2 * n + 1])) / F32(side))
                logits = v[5:5 + num_classes]
                e = np.exp(logits - logits.max()).astype(F32)
                probs = e / e.sum(dtype=F32)
                c = int(np.argmax(probs))
                score = F32(sig(v[4]) * probs[c])
                if score >= F32(confidence_threshold):
                    preds.append((bx, by, bw, bh, c, score))
    # reuse the v3 reference's sort, NMS and rows on these candidates
    return _sorted_nms_rows(preds, nms_threshold)


def _sorted_nms_rows(preds, nms_threshold):
    preds = sorted(preds, key=lambda p: -p[5])

    def iou(a, b):
        def overlap(c1, w1, c2, w2):
            left = max(F32(c1 - F32(w1 / F32(2))), F32(c2 - F32(w2 / F32(2))))
            right = min(F32(c1 + F32(w1 / F32(2))), F32(c2 + F32(w2 / F32(2))))
            return F32(right - left)
        w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
        inter = F32(0) if w < 0 or h < 0 else F32(w * h)
        union = F32(F32(F32(a[2] * a[3]) + F32(b[2] * b[3])) - inter)
        with np.errstate(invalid="ignore", divide="ignore"):
            return F32(inter / union)

    dead = set()
    for i in range(len(preds) - 1):
        if i in dead:
            continue
        for j in range(i + 1, len(preds)):
            if j not in dead and iou(preds[i], preds[j]) >= F32(nms_threshold):
                dead.add(j)
    rows = [(0, p[4] + 1, p[5], p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2,
             p[1] + p[3] / 2) for i, p in enumerate(preds) if i not in dead]
    return np.array(rows, F32).reshape(-1, 7)


@pytest.mark.parametrize("seed,sides,thr", [(0, (5,), 0.45), (1, (3, 6), 0.3),
                                            (2, (4,), 0.9)])
def test_yolo_v2_detection_output_matches_the_reference(seed, sides, thr):
    rng = np.random.default_rng(seed)
    classes, boxes = 4, 3
    biases = [1.08, 1.19, 3.42, 4.41, 6.63, 11.38]
    bottoms = []
    for side in sides:
        x = rng.normal(0, 1.5, size=(1, boxes, 5 + classes, side, side)).astype(F32)
        x[:, :, 4] += 1.0
        bottoms.append(x.reshape(1, -1, side, side))
    ref = yolo_v2_reference(bottoms, classes, boxes, biases, 0.2, thr)
    assert len(ref) > 0
    layer = detect_nms.YoloDetectionOutput(classes, boxes, biases, sides=list(sides),
                                       confidence_threshold=0.2, nms_threshold=thr)
    got = _numpy(layer([to_keras_layout(b) for b in bottoms]))
    assert got.shape == (1, sum(s * s for s in sides) * boxes, 7)
    assert_blob_close(got[0, :len(ref)], ref, "yolo v2")
    assert np.all(got[0, len(ref):] == -1)
    again = detect_nms.YoloDetectionOutput.from_config(layer.get_config())
    np.testing.assert_array_equal(_numpy(again([to_keras_layout(b) for b in bottoms])), got)


def test_yolo_v2_net_converts(tmp_path):
    path = tmp_path / "yolo2.prototxt"
    path.write_text("""
input: "map" input_shape { dim: 1 dim: 18 dim: 5 dim: 5 }
layer { name: "det" type: "YoloDetectionOutput" bottom: "map" top: "det"
        yolo_detection_output_param { num_classes: 1 num_box: 3 confidence_threshold: 0.3
          biases: 1 biases: 1 biases: 2 biases: 3 biases: 4 biases: 2 } }
""")
    assert load_graph(path).shape("det") == (1, 75, 7)
    x = np.random.default_rng(3).normal(size=(1, 18, 5, 5)).astype(F32)
    got = _numpy(_convert(path)({"map": to_keras_layout(x)})["det"])
    ref = yolo_v2_reference([x], 1, 3, [1, 1, 2, 3, 4, 2], 0.3, 0.45)
    assert_blob_close(got[0, :len(ref)], ref, "det")


# --------------------------------------------------------------------------- helpers

def test_divide_rounds_like_cpp():
    """XLA on CPU divides vectors through a reciprocal (7 / 3 * 3 gives 7.0000005);
    bin edges need C++'s correctly rounded float32 quotient."""
    rng = np.random.default_rng(0)
    a = np.concatenate([np.arange(1, 4000), rng.uniform(-1e4, 1e4, 4000)]).astype(F32)
    for b in (3, 7, 6, 49, 0.1, 13.7):
        got = _numpy(detect.divide(keras.ops.convert_to_tensor(a),
                                   keras.ops.full_like(a, b)))
        np.testing.assert_array_equal(got, a / F32(b), err_msg=str(b))


def test_detect_heads_codegen_builds_the_same_model(detect_net, tmp_path):
    from caffe2keras.codegen import write_python

    path, data, rois = detect_net
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = write_python(path, tmp_path / "detect_model.py", outputs=["roi", "reorg"])
    spec = importlib.util.spec_from_file_location("detect_model", tmp_path / "detect_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build_model()
    feed = {"data": to_keras_layout(data), "rois": rois}
    for blob in ("roi", "reorg"):
        np.testing.assert_array_equal(_numpy(built(feed)[blob]), _numpy(model(feed)[blob]))


def test_verify_compares_the_valid_proposal_rows(proposal_case):
    """`verify` against Caffe's stacked rows: the padded -1 rows are left out."""
    from caffe2keras.verify import compare

    deploy, model, feed, outputs = proposal_case
    ours = {k: _numpy(v) for k, v in model(feed).items()}
    checks = {c.blob: c for c in compare(load_graph(deploy), ours, dict(outputs))}
    for name in PROPOSALS:
        for blob in (name, f"{name}_scores"):
            assert checks[blob].status == "ok", (blob, checks[blob].note)
    broken = dict(outputs)
    broken["prop_main"] = outputs["prop_main"][:-1]
    assert {c.blob: c for c in compare(load_graph(deploy), ours, broken)}[
        "prop_main"].status == "FAIL"


FASTER_RCNN = """
name: "tiny_faster_rcnn"
input: "data" input_shape { dim: 1 dim: 3 dim: 64 dim: 80 }
input: "im_info" input_shape { dim: 1 dim: 3 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 stride: 16 pad: 1 } }
layer { name: "rpn_cls" type: "Convolution" bottom: "conv" top: "rpn_cls"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "rpn_cls_reshape" type: "Reshape" bottom: "rpn_cls" top: "rpn_cls_reshape"
        reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } } }
layer { name: "rpn_prob" type: "Softmax" bottom: "rpn_cls_reshape" top: "rpn_prob" }
layer { name: "rpn_prob_reshape" type: "Reshape" bottom: "rpn_prob" top: "rpn_prob_reshape"
        reshape_param { shape { dim: 0 dim: 4 dim: -1 dim: 0 } } }
layer { name: "rpn_bbox" type: "Convolution" bottom: "conv" top: "rpn_bbox"
        convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "proposal" type: "Proposal" bottom: "rpn_prob_reshape" bottom: "rpn_bbox"
        bottom: "im_info" top: "rois"
        proposal_param { feat_stride: 16 ratio: 1 scale: 32 scale: 64 min_size: 4
                         pre_nms_topn: 30 post_nms_topn: 12 nms_thresh: 0.5 } }
layer { name: "roi_pool" type: "ROIPooling" bottom: "conv" bottom: "rois" top: "pool"
        roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.0625 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
        inner_product_param { num_output: 3 } }
layer { name: "cls_prob" type: "Softmax" bottom: "fc" top: "cls_prob" }
"""


def test_a_faster_rcnn_chain_converts_and_runs(tmp_path):
    """Proposal -> ROIPooling -> InnerProduct: the ROI axis is the batch from there on;
    padded ROI rows pool to zeros (the fc then gives its bias)."""
    path = tmp_path / "frcnn.prototxt"
    path.write_text(FASTER_RCNN)
    assert load_graph(path).shape("cls_prob") == (12, 3)
    model = _convert(path, outputs="all", seed=0)
    image = np.random.default_rng(1).normal(size=(1, 64, 80, 3)).astype(F32)
    got = model({"data": image, "im_info": np.array([[64, 80, 1]], F32)})
    rois, pool = _numpy(got["rois"]), _numpy(got["pool"])
    assert rois.shape == (12, 5) and pool.shape == (12, 2, 2, 8)
    assert _numpy(got["cls_prob"]).shape == (12, 3)
    ref = roi_pooling_reference(to_caffe_layout(_numpy(got["conv"])),
                                rois[rois[:, 0] >= 0], 2, 2, 1 / 16)
    valid = rois[:, 0] >= 0
    np.testing.assert_array_equal(to_caffe_layout(pool[valid]), ref)
    assert np.all(pool[~valid] == 0)
