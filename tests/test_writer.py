"""The Caffe writer: what it writes reads back identically, in every format it offers.

Checked once against REAL Caffe (brocolli-caffe 9.0.2 build at /tmp/caffe-build), with
bench/writer_caffe_check.py: all 26 conformance cases rewritten by this writer as V2, V2 +
double_data, V2 + legacy dims, V1, V1 + double_data and (where the layer types exist in
V0) V0 weights - 136 prototxt + caffemodel pairs. pycaffe loaded every pair and, fed each
case's inputs, reproduced every golden blob (max abs diff 0.0). It also loaded the 553 MB
VGG16 file bench/bench_read.py writes (weights' XOR checksum equal). These tests need no
Caffe: they pin the writer to our readers, which the goldens pin to Caffe.
"""
import math
import os
import tracemalloc

import numpy as np
import pytest

from caffe2keras.caffemodel import load_caffemodel
from caffe2keras.graph import load_graph
from caffe2keras.net import load_net, parse_net
from caffe2keras.writer import _V0_TYPES, _V1_TYPES, CaffeNetWriter, Lazy, message_dict

from .shared import CONFORMANCE_CASES, conformance_files


def _variants(net):
    out = [("V2", {}), ("V2", {"double": True}), ("V2", {"legacy_dims": True})]
    if all(lay.type in _V1_TYPES for lay in net.layers):
        out += [("V1", {}), ("V1", {"double": True})]
        if all(lay.type in _V0_TYPES for lay in net.layers if lay.blobs):
            out.append(("V0", {}))
    return out


@pytest.mark.parametrize("case", CONFORMANCE_CASES)
def test_conformance_case_round_trips_in_every_format(case, tmp_path):
    deploy, weights, _, _ = conformance_files(case)
    g = load_graph(deploy, weights)
    for fmt, kw in _variants(g.net):
        w = CaffeNetWriter.from_net(g.net)
        p, m = tmp_path / f"{fmt}.prototxt", tmp_path / f"{fmt}.caffemodel"
        w.write_prototxt(p, "V1" if fmt == "V0" else fmt)
        w.write_caffemodel(m, fmt, **kw)
        g2 = load_graph(p, m)
        assert g2.net.format == ("V2" if fmt == "V2" else "V1")
        assert g2.net.inputs == g.net.inputs
        assert [(x.name, x.type, x.bottoms, x.tops) for x in g2.net.layers] == \
               [(x.name, x.type, x.bottoms, x.tops) for x in g.net.layers]
        for a, b in zip(g.net.layers, g2.net.layers):
            if fmt == g.net.format == "V2":  # V1 messages differ; checked below
                assert message_dict(b.params) == message_dict(a.params), a.name
            assert len(a.blobs) == len(b.blobs), a.name
            for x, y in zip(a.blobs, b.blobs):
                assert x.shape == y.shape, (a.name, fmt, kw)
                assert y.dtype == (np.float64 if kw.get("double") else np.float32)
                assert np.array_equal(x, y), (a.name, fmt, kw)
        for blob in g.blob_names():
            assert g2.shape(blob) == g.shape(blob)


def test_v1_prototxt_keeps_layer_settings(tmp_path):
    deploy, weights, _, _ = conformance_files("legacy_v1")
    g = load_graph(deploy, weights)
    w = CaffeNetWriter.from_net(g.net)
    text = w.prototxt("V1")
    assert "layers {" in text and "type: CONVOLUTION" in text and "layer {" not in text
    net = parse_net(text)
    for a, b in zip(g.net.layers, net.layers):
        for name in ("convolution_param", "pooling_param", "inner_product_param"):
            assert message_dict(a.param(name)) == message_dict(b.param(name)), (a.name, name)
        assert a.lr_mults == b.lr_mults and a.params.weight_decay == b.params.weight_decay
    assert any(a.lr_mults == [1.0, 2.0] for a in net.layers)
    # V1 -> V2 upgrades blobs_lr/weight_decay into param specs, as Caffe does
    v2 = parse_net(w.prototxt("V2"))
    for a, b in zip(net.layers, v2.layers):
        assert b.lr_mults == a.lr_mults
        decay = list(a.params.weight_decay) or [1.0] * len(a.lr_mults)  # unset: 1
        assert [p.decay_mult for p in b.params.param] == decay
    # and back
    again = parse_net(CaffeNetWriter.from_net(v2).prototxt("V1"))
    assert [a.lr_mults for a in again.layers] == [a.lr_mults for a in net.layers]


def test_inputs_in_all_three_styles(tmp_path):
    for style, marker in (("input_shape", "input_shape {"), ("input_dim", "input_dim: 5"),
                          ("layer", 'type: "Input"')):
        w = CaffeNetWriter("n").input("data", (2, 3, 4, 5), style=style)
        w.layer("r", "ReLU", "data", "r")
        text = w.prototxt()
        assert marker in text
        net = parse_net(text)
        assert net.inputs == {"data": (2, 3, 4, 5)}
        assert [x.name for x in net.layers] == ["r"]


def test_text_values_read_back_exactly():
    w = CaffeNetWriter('odd "name" \\ \n')
    w.input("data", (1, 2, 3, 3))
    w.layer("s", "Scale", "data", "s",
            scale_param={"bias_term": True, "filler": {"type": "constant", "value": 0.1}},
            param=[{"lr_mult": 0.0, "decay_mult": 1e-30}],
            include=[{"phase": "TEST", "stage": ["a", "b"], "min_level": -3}])
    w.layer("p", "Pooling", "s", "p", pooling_param={"pool": "AVE", "kernel_size": 2,
                                                      "round_mode": "FLOOR"})
    w.layer("t", "Threshold", "p", "t", threshold_param={"threshold": float("inf")})
    net = parse_net(w.prototxt(), stages=("a", "b"), level=-3)
    assert net.name == 'odd "name" \\ \n'
    s, p, t = net.layers
    assert s.param("scale_param").filler.value == np.float32(0.1)
    assert s.params.param[0].lr_mult == 0.0 and s.params.param[0].decay_mult == np.float32(1e-30)
    assert s.params.include[0].stage == ["a", "b"]
    assert p.param("pooling_param").pool == "AVE"
    assert p.param("pooling_param").round_mode == "FLOOR"
    assert t.param("threshold_param").threshold == math.inf


def test_misspelt_fields_and_impossible_formats_fail_in_the_writer():
    w = CaffeNetWriter().input("data", (1, 1, 2, 2))
    w.layer("c", "Convolution", "data", "c", convolution_param={"num_ouptut": 1})
    with pytest.raises(ValueError, match="num_ouptut"):
        w.prototxt()
    w = CaffeNetWriter().input("data", (1, 1, 2, 2))
    w.layer("b", "BatchNorm", "data", "b")
    with pytest.raises(ValueError, match="BatchNorm.*no V1"):
        w.prototxt("V1")
    with pytest.raises(ValueError, match="4 dims"):
        CaffeNetWriter().input("data", (1, 2, 3), style="input_dim")
    w = CaffeNetWriter().input("data", (1, 1), style="layer")
    with pytest.raises(ValueError, match="no Input layer"):
        w.prototxt("V1")
    w = CaffeNetWriter().input("data", (1, 1, 2, 2))
    w.layer("ip", "InnerProduct", "data", "ip", inner_product_param={"num_output": 1},
            blobs=[np.zeros((1, 2, 2, 2, 1), np.float32)])
    with pytest.raises(ValueError, match="legacy"):
        w.write_caffemodel(os.devnull, "V1")


def _big_net(blob):
    w = CaffeNetWriter("big").input("data", (1, 16 << 20))
    w.layer("ip", "InnerProduct", "data", "ip",
            inner_product_param={"num_output": 1, "bias_term": False}, blobs=[blob])
    return w


def test_writing_streams_blobs_without_copying_them(tmp_path):
    """A 64 MB blob is written from the caller's array: the writer's own allocations stay
    far below the blob (no serialised copy of the file is ever built)."""
    arr = np.random.default_rng(0).standard_normal((1, 16 << 20), dtype=np.float32)
    w = _big_net(arr)
    tracemalloc.start()
    try:
        w.write_caffemodel(tmp_path / "big.caffemodel")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"writer allocated {peak / 1e6:.1f} MB for a 67 MB blob"
    cm = load_caffemodel(tmp_path / "big.caffemodel")
    assert np.array_equal(cm.layers["ip"].blobs[0].array(), arr)


def test_lazy_blobs_are_made_one_at_a_time(tmp_path):
    made = []

    def make():
        made.append(1)
        return np.full((1, 16 << 20), 0.5, np.float32)

    w = _big_net(Lazy((1, 16 << 20), make))
    tracemalloc.start()
    try:
        w.write_caffemodel(tmp_path / "lazy.caffemodel")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert made == [1]
    assert peak < (64 << 20) + (4 << 20), f"{peak / 1e6:.1f} MB for one 67 MB blob"
    cm = load_caffemodel(tmp_path / "lazy.caffemodel")
    assert float(cm.layers["ip"].blobs[0].data[-1]) == 0.5


def test_a_failing_write_leaves_no_file(tmp_path):
    def boom():
        raise RuntimeError("generator failed")

    target = tmp_path / "w.caffemodel"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="generator failed"):
        _big_net(Lazy((1, 16 << 20), boom)).write_caffemodel(target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.caffemodel"]


def test_weights_only_files_and_settings(tmp_path):
    deploy, weights, _, _ = conformance_files("pool_max_ceil")
    w = CaffeNetWriter.from_net(load_net(deploy), load_caffemodel(weights))
    w.write_caffemodel(tmp_path / "with.caffemodel")
    w.write_caffemodel(tmp_path / "without.caffemodel", params=False)
    assert (tmp_path / "without.caffemodel").stat().st_size < \
           (tmp_path / "with.caffemodel").stat().st_size
    a, b = (load_caffemodel(tmp_path / f) for f in ("with.caffemodel", "without.caffemodel"))
    assert list(a.layers) == list(b.layers)
