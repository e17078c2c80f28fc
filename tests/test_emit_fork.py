"""Layers of Caffe's popular forks: ReLU6, Upsample, Permute, ceil_mode pooling and
depthwise convolution against real Caffe (tests/fixtures/fork_goldens, made with the
brocolli-caffe fork by make_goldens.py there); Interp, ShuffleChannel and SegNet's
Upsample, which that build lacks, against numpy references written from their forks'
sources; and what inspect says about pooling field 13 in weights files."""
from pathlib import Path

import keras
import numpy as np
import pytest

from caffe2keras.caffemodel import load_caffemodel
from caffe2keras.errors import CaffeFormatError
from caffe2keras.graph import load_graph
from caffe2keras.writer import CaffeNetWriter

from .shared import assert_blob_close, check_layer, quiet_convert, run_caffe_layout

GOLDENS = Path(__file__).resolve().parent / "fixtures" / "fork_goldens"
RNG = np.random.default_rng(7)
F32 = np.float32



def _check_golden(case, deploy=None):
    d = GOLDENS / case
    weights = d / "weights.caffemodel"
    model = quiet_convert(deploy or d / "deploy.prototxt", weights if weights.exists() else None,
                          outputs="all")
    with np.load(d / "inputs.npz") as inputs, np.load(d / "outputs.npz") as outputs:
        check_layer(model, dict(inputs), dict(outputs))
    return model


# ------------------------------------------------------------------ real Caffe goldens

@pytest.mark.parametrize("case", ["relu6", "upsample", "permute", "pool_ceil_true",
                                  "pool_ceil_false", "depthwise"])
def test_against_caffe(case):
    _check_golden(case)


@pytest.mark.parametrize("fork_type", ["DepthwiseConvolution", "ConvolutionDepthwise"])
@pytest.mark.parametrize("keep_group", [True, False])
def test_depthwise_fork_types_match_grouped_caffe(tmp_path, fork_type, keep_group):
    """The forks' depthwise types are Caffe's Convolution with one group per channel."""
    text = (GOLDENS / "depthwise" / "deploy.prototxt").read_text()
    text = text.replace('type: "Convolution"', f'type: "{fork_type}"')
    if not keep_group:
        text = text.replace("group: 4 ", "")
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(text)
    model = _check_golden("depthwise", deploy)
    assert isinstance(model.get_layer("dw"), keras.layers.DepthwiseConv2D)


def test_relu6_params_and_fresh_layers():
    model = quiet_convert(GOLDENS / "relu6" / "deploy.prototxt")
    leaky = model.get_layer("r6_leaky")
    assert isinstance(leaky, keras.layers.ReLU)
    assert leaky.max_value == 4 and leaky.negative_slope == pytest.approx(0.1)


def test_pooling_round_mode_floor_matches_ceil_mode_false(tmp_path):
    """BVLC's round_mode: FLOOR is the forks' ceil_mode: false."""
    g = load_graph(GOLDENS / "pool_ceil_false" / "deploy.prototxt",
                   GOLDENS / "pool_ceil_false" / "weights.caffemodel")
    deploy, weights = _as_bvlc_floor(g, tmp_path)
    model = quiet_convert(deploy, weights, outputs="all")
    inputs = np.load(GOLDENS / "pool_ceil_false" / "inputs.npz")
    outputs = np.load(GOLDENS / "pool_ceil_false" / "outputs.npz")
    got = run_caffe_layout(model, {"data": inputs["data"]})
    for blob in outputs.files:
        assert_blob_close(got[blob], outputs[blob], blob)


# --------------------------------------------------- pooling field 13 in weights files

def _notes(g):
    return dict(g.notes)


def _as_bvlc_floor(g, tmp_path):
    """The pool_ceil_false net as BVLC Caffe writes it: round_mode: FLOOR, which puts 1
    in field 13 of the weights file, where the forks' ceil_mode: false put 0."""
    w = CaffeNetWriter.from_net(g.net)
    for _, type_, fields, _ in w.layers:
        if type_ == "Pooling":
            fields["pooling_param"].pop("ceil_mode")
            fields["pooling_param"]["round_mode"] = "FLOOR"
    deploy, weights = tmp_path / "bvlc.prototxt", tmp_path / "bvlc.caffemodel"
    w.write_prototxt(deploy)
    w.write_caffemodel(weights)
    return deploy, weights


@pytest.mark.parametrize("case,raw,meant,other", [
    ("pool_ceil_true", 1, "fork ceil_mode: true", "BVLC round_mode: FLOOR"),
    ("pool_ceil_false", 0, "fork ceil_mode: false", "BVLC round_mode: CEIL"),
])
def test_inspect_says_which_field_13_a_fork_file_means(case, raw, meant, other):
    d = GOLDENS / case
    assert {lw.pool_field13 for lw in load_caffemodel(d / "weights.caffemodel").all_layers
            if lw.type == "Pooling"} == {raw}
    notes = _notes(load_graph(d / "deploy.prototxt", d / "weights.caffemodel"))
    # pool_max feeds the InnerProduct: only one rounding fits its weights
    assert f"means {meant}" in notes["pool_max"]
    assert f"read as {other}" in notes["pool_max"] and "'ip'" in notes["pool_max"]
    # pool_ave_pad feeds nothing with weights: the file cannot tell, the prototxt decides
    assert "fit either" in notes["pool_ave_pad"]


def test_inspect_says_which_field_13_a_bvlc_file_means(tmp_path):
    g = load_graph(GOLDENS / "pool_ceil_false" / "deploy.prototxt",
                   GOLDENS / "pool_ceil_false" / "weights.caffemodel")
    deploy, weights = _as_bvlc_floor(g, tmp_path)
    assert {lw.pool_field13 for lw in load_caffemodel(weights).all_layers
            if lw.type == "Pooling"} == {1}
    notes = _notes(load_graph(deploy, weights))
    assert "means BVLC round_mode: FLOOR" in notes["pool_max"]
    assert "read as fork ceil_mode: true" in notes["pool_max"]


def test_inspect_notes_when_rounding_makes_no_difference(tmp_path):
    text = (GOLDENS / "pool_ceil_false" / "deploy.prototxt").read_text()
    deploy = tmp_path / "d.prototxt"
    deploy.write_text(text.replace("dim: 8 dim: 8", "dim: 7 dim: 7"))   # 7x7: 3x3 either way
    weights = GOLDENS / "pool_ceil_false" / "weights.caffemodel"
    notes = _notes(load_graph(deploy, weights))
    assert "no difference" in notes["pool_max"]


def test_cli_inspect_prints_the_note(capsys):
    from caffe2keras.cli import main

    d = GOLDENS / "pool_ceil_true"
    main(["inspect", str(d / "deploy.prototxt"), str(d / "weights.caffemodel")])
    out = capsys.readouterr().out
    assert "Note: pool_max: pooling field 13 in the weights is 1, which here means fork " \
           "ceil_mode: true" in out


# ---------------------------------------------------------- numpy references: Interp

def interp_reference(x, size_in, size_out, crop):
    """hszhao/PSPNet src/caffe/util/interp.cpp caffe_cpu_interp2 (also DeepLab v2), as
    InterpLayer::Forward_cpu calls it: x (N, C, H, W) cropped at (-pad_beg, -pad_beg)."""
    (h1, w1), (h2, w2), (y0, x0) = size_in, size_out, crop
    src = x[:, :, y0:y0 + h1, x0:x0 + w1]
    if (h1, w1) == (h2, w2):
        return src.copy()
    rh = F32(h1 - 1) / F32(h2 - 1) if h2 > 1 else F32(0)
    rw = F32(w1 - 1) / F32(w2 - 1) if w2 > 1 else F32(0)
    out = np.zeros(x.shape[:2] + (h2, w2), F32)
    for oy in range(h2):
        fy = F32(rh * F32(oy))
        y = int(fy)
        dy = 1 if y < h1 - 1 else 0
        ly1 = F32(fy - F32(y))
        ly0 = F32(1) - ly1
        for ox in range(w2):
            fx = F32(rw * F32(ox))
            xx = int(fx)
            dx = 1 if xx < w1 - 1 else 0
            lx1 = F32(fx - F32(xx))
            lx0 = F32(1) - lx1
            out[:, :, oy, ox] = (ly0 * (lx0 * src[:, :, y, xx] + lx1 * src[:, :, y, xx + dx])
                                 + ly1 * (lx0 * src[:, :, y + dy, xx]
                                          + lx1 * src[:, :, y + dy, xx + dx]))
    return out


def _net(tmp_path, inputs, body):
    head = "".join(f'input: "{b}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in s)} }}\n'
                   for b, s in inputs.items())
    path = tmp_path / "net.prototxt"
    path.write_text(f'name: "t"\n{head}{body}')
    return path


@pytest.mark.parametrize("param,shape,size_out,crop", [
    ("zoom_factor: 3", (2, 3, 5, 7), (13, 19), (0, 0)),
    ("shrink_factor: 2", (1, 2, 9, 8), (5, 4), (0, 0)),
    ("height: 9 width: 10", (1, 2, 4, 6), (9, 10), (0, 0)),           # uneven ratios
    ("height: 4 width: 3", (1, 2, 9, 10), (4, 3), (0, 0)),            # downscale
    ("height: 1 width: 5", (1, 1, 4, 4), (1, 5), (0, 0)),             # ratio 0 rows
    ("zoom_factor: 2 pad_beg: -1 pad_end: -1", (1, 2, 6, 7), (7, 9), (1, 1)),
    ("shrink_factor: 2 zoom_factor: 3", (1, 1, 9, 7), (13, 10), (0, 0)),
    ("height: 5 width: 7", (1, 2, 5, 7), (5, 7), (0, 0)),             # same size: copy
])
def test_interp_matches_pspnet_reference(tmp_path, param, shape, size_out, crop):
    deploy = _net(tmp_path, {"data": shape},
                  f'layer {{ name: "up" type: "Interp" bottom: "data" top: "up" '
                  f'interp_param {{ {param} }} }}')
    x = RNG.standard_normal(shape).astype(F32)
    got = run_caffe_layout(quiet_convert(deploy), {"data": x})["up"]
    pad = crop[0]
    size_in = (shape[2] - 2 * pad, shape[3] - 2 * pad)
    assert got.shape[2:] == size_out
    assert_blob_close(got, interp_reference(x, size_in, size_out, crop), param)


def test_interp_takes_its_size_from_a_second_bottom(tmp_path):
    deploy = _net(tmp_path, {"data": (1, 2, 3, 4), "ref": (1, 5, 8, 6)},
                  'layer { name: "up" type: "Interp" bottom: "data" bottom: "ref" top: "up" }')
    x = RNG.standard_normal((1, 2, 3, 4)).astype(F32)
    ref = RNG.standard_normal((1, 5, 8, 6)).astype(F32)
    got = run_caffe_layout(quiet_convert(deploy), {"data": x, "ref": ref})["up"]
    assert_blob_close(got, interp_reference(x, (3, 4), (8, 6), (0, 0)), "up")


def test_interp_refuses_positive_padding(tmp_path):
    deploy = _net(tmp_path, {"data": (1, 1, 4, 4)},
                  'layer { name: "up" type: "Interp" bottom: "data" top: "up" '
                  'interp_param { zoom_factor: 2 pad_beg: 1 } }')
    with pytest.raises(CaffeFormatError, match="non-positive pad_beg"):
        quiet_convert(deploy)


# --------------------------------------------------- numpy references: ShuffleChannel

def shuffle_reference(x, group):
    """farmingyard/ShuffleNet shuffle_channel_layer.cpp Resize_cpu: input channel
    i * (C / group) + j goes to output channel j * group + i."""
    cols = x.shape[1] // group
    out = np.empty_like(x)
    for i in range(group):
        for j in range(cols):
            out[:, j * group + i] = x[:, i * cols + j]
    return out


@pytest.mark.parametrize("shape,group", [((2, 6, 3, 4), 3), ((2, 12, 2, 2), 4),
                                         ((3, 8), 2), ((2, 6, 5), 3)])
def test_shuffle_channel_matches_shufflenet_reference(tmp_path, shape, group):
    deploy = _net(tmp_path, {"data": shape},
                  f'layer {{ name: "sh" type: "ShuffleChannel" bottom: "data" top: "sh" '
                  f'shuffle_channel_param {{ group: {group} }} }}')
    x = RNG.standard_normal(shape).astype(F32)
    got = run_caffe_layout(quiet_convert(deploy), {"data": x})["sh"]
    np.testing.assert_array_equal(got, shuffle_reference(x, group))


# ------------------------------------------- numpy references: SegNet Upsample + mask

def unpool_reference(x, mask, out_hw):
    """alexgkendall/caffe-segnet upsample_layer.cpp Forward_cpu: zeros, then for each
    input position in raster order top[mask] = bottom (later writes win)."""
    n, c, h, w = x.shape
    out = np.zeros((n, c) + tuple(out_hw), F32)
    for b in range(n):
        for ch in range(c):
            plane = out[b, ch].reshape(-1)
            for i in range(h * w):
                plane[int(mask[b, ch].reshape(-1)[i])] = x[b, ch].reshape(-1)[i]
    return out


@pytest.mark.parametrize("param,shape,out_hw", [
    ("scale: 2", (2, 3, 3, 4), (6, 8)),
    ("scale_h: 2 scale_w: 3", (1, 2, 3, 3), (6, 9)),
    ("upsample_h: 7 upsample_w: 5", (1, 2, 4, 3), (7, 5)),
    ("scale: 2 pad_out_h: true", (1, 1, 4, 4), (7, 8)),
])
def test_segnet_upsample_matches_reference(tmp_path, param, shape, out_hw):
    deploy = _net(tmp_path, {"data": shape, "mask": shape},
                  f'layer {{ name: "up" type: "Upsample" bottom: "data" bottom: "mask" '
                  f'top: "up" upsample_param {{ {param} }} }}')
    x = RNG.standard_normal(shape).astype(F32)
    plane = out_hw[0] * out_hw[1]
    mask = RNG.integers(0, plane, shape).astype(F32)
    mask.reshape(-1)[:3] = mask.reshape(-1)[3]     # several inputs naming one position
    got = run_caffe_layout(quiet_convert(deploy), {"data": x, "mask": mask})["up"]
    np.testing.assert_array_equal(got, unpool_reference(x, mask, out_hw))


def test_nearest_upsample_needs_an_explicit_scale(tmp_path):
    deploy = _net(tmp_path, {"data": (1, 1, 2, 2)},
                  'layer { name: "up" type: "Upsample" bottom: "data" top: "up" }')
    with pytest.raises(CaffeFormatError, match="needs scale"):
        quiet_convert(deploy)


def test_fork_layers_save_and_load(tmp_path):
    deploy = _net(tmp_path, {"data": (1, 6, 4, 5), "mask": (1, 6, 4, 5)},
                  'layer { name: "ip" type: "Interp" bottom: "data" top: "ip" '
                  'interp_param { zoom_factor: 2 } }\n'
                  'layer { name: "sh" type: "ShuffleChannel" bottom: "data" top: "sh" '
                  'shuffle_channel_param { group: 2 } }\n'
                  'layer { name: "un" type: "Upsample" bottom: "data" bottom: "mask" top: "un" '
                  'upsample_param { scale: 2 } }')
    model = quiet_convert(deploy, outputs=["ip", "sh", "un"])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    feed = {"data": RNG.standard_normal((1, 6, 4, 5)).astype(F32),
            "mask": RNG.integers(0, 80, (1, 6, 4, 5)).astype(F32)}
    a, b = run_caffe_layout(model, feed), run_caffe_layout(loaded, feed)
    for blob in ("ip", "sh", "un"):
        np.testing.assert_array_equal(a[blob], b[blob])
