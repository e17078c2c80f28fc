"""BVLC's recurrent and rarer layers (emit/converters/zoo_recurrent.py, zoo_bvlc.py) against
real Caffe (tests/data/layers_goldens.npz, made by tests/data/make_layers_goldens.py):
LSTM, RNN, SPP, Im2col, Parameter, BatchReindex, Filter. Plus saving, fresh weights,
weight export, inspect and the errors for what Caffe refuses."""
import warnings

import keras
import numpy as np
import pytest

import caffe2keras
from caffe2keras.errors import CaffeFormatError
from caffe2keras.graph import load_graph

from .compute_goldens import LAYERS_ARCHIVE, cases, check_case, write_case
from .shared import assert_blob_close, quiet_convert, run_caffe_layout

RNG = np.random.default_rng(11)
F32 = np.float32
FILTER_CASES = ["filter", "filter_4d_selector"]


def _net(tmp_path, inputs, body, name="net.prototxt"):
    head = "".join(f'input: "{b}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in s)} }}\n'
                   for b, s in inputs.items())
    path = tmp_path / name
    path.write_text(f'name: "t"\n{head}{body}')
    return path


@pytest.mark.parametrize("case", [c for c in cases("", LAYERS_ARCHIVE)
                                  if c not in FILTER_CASES])
def test_against_caffe(case, tmp_path):
    check_case(case, tmp_path, LAYERS_ARCHIVE)


@pytest.mark.parametrize("case", FILTER_CASES)
def test_filter_gives_caffes_items_first_then_zero_rows(case, tmp_path):
    deploy, weights, ins, outs = write_case(case, tmp_path, LAYERS_ARCHIVE)
    got = run_caffe_layout(quiet_convert(deploy, weights, outputs="all"), ins)
    kept = int(np.count_nonzero(ins["sel"]))
    assert 0 < kept < ins["sel"].shape[0]
    for blob, ref in outs.items():
        assert ref.shape[0] == kept                       # Caffe's data-dependent batch
        assert got[blob].shape == (ins["sel"].shape[0],) + ref.shape[1:]
        assert_blob_close(got[blob][:kept], ref, blob)
        assert not got[blob][kept:].any()


def test_layers_save_and_load(tmp_path):
    models = []
    for case in ("lstm_static_expose", "rnn", "im2col", "parameter", "batch_reindex",
                 "filter", "spp", "pool_mask"):
        deploy, weights, ins, _ = write_case(case, tmp_path, LAYERS_ARCHIVE)
        model = quiet_convert(deploy, weights, outputs="all")
        path = tmp_path / f"{case}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)   # safe mode: no Lambda anywhere
        a, b = run_caffe_layout(model, ins), run_caffe_layout(loaded, ins)
        for blob in a:   # torch may round a last bit differently between two models
            np.testing.assert_allclose(a[blob], b[blob], rtol=1e-6, atol=1e-7,
                                       err_msg=f"{case}:{blob}")
        models.append(model)


def test_recurrent_time_axis_is_free_and_cont_resets(tmp_path):
    """The Keras batch axis of x is Caffe's T: a longer sequence runs through the same
    model, and cont 0 restarts a stream exactly like a fresh call."""
    deploy, weights, _, _ = write_case("lstm", tmp_path, LAYERS_ARCHIVE)
    model = quiet_convert(deploy, weights)
    x = RNG.standard_normal((9, 3, 4)).astype(F32)
    cont = np.ones((9, 3), F32)
    cont[0] = 0
    cont[4] = 0                                    # every stream restarts at t = 4
    h = keras.ops.convert_to_numpy(model({"x": x, "cont": cont})["h"])
    assert h.shape == (9, 3, 6)
    tail = keras.ops.convert_to_numpy(model({"x": x[4:], "cont": cont[4:]})["h"])
    np.testing.assert_allclose(h[4:], tail, rtol=1e-5, atol=1e-6)


def test_recurrent_fresh_weights_follow_the_fillers(tmp_path):
    deploy = _net(tmp_path, {"x": (3, 2, 4), "cont": (3, 2)},
                  'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" '
                  'recurrent_param { num_output: 5 '
                  'weight_filler { type: "uniform" min: -0.1 max: 0.1 } '
                  'bias_filler { type: "constant" value: 0.5 } } }\n'
                  'layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "o" '
                  'recurrent_param { num_output: 3 } }')
    model = quiet_convert(deploy, seed=0)
    w = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    assert w["lstm/kernel"].shape == (4, 20) and np.abs(w["lstm/kernel"]).max() <= 0.1
    assert np.all(w["lstm/bias"] == 0.5)
    assert w["lstm/recurrent_kernel"].shape == (5, 20)
    assert np.all(w["rnn/bias"] == 0) and np.all(w["rnn/output_bias"] == 0)
    assert np.abs(w["rnn/output_kernel"]).max() > 0        # Glorot where none is named


@pytest.mark.parametrize("case", ["lstm_static_expose", "rnn_static_expose", "parameter"])
def test_exported_weights_load_into_the_converted_model(case, tmp_path):
    deploy, weights, ins, outs = write_case(case, tmp_path, LAYERS_ARCHIVE)
    out = tmp_path / "w.weights.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        caffe2keras.export_weights(deploy, weights, out)
    model = quiet_convert(deploy, outputs="all")
    model.load_weights(out)
    got = run_caffe_layout(model, ins)
    for blob, ref in outs.items():
        assert_blob_close(got[blob], ref, blob)


def test_inspect_knows_the_shapes(tmp_path):
    deploy, _, _, _ = write_case("lstm_static_expose", tmp_path, LAYERS_ARCHIVE)
    g = load_graph(deploy)
    lstm = next(n for n in g.nodes if n.type == "LSTM")
    assert lstm.param_shapes == [(16, 3), (16,), (16, 5), (16, 4)]
    assert [g.values[v].shape for v in lstm.outputs] == [(4, 2, 4), (1, 2, 4), (1, 2, 4)]
    deploy, _, _, _ = write_case("spp", tmp_path, LAYERS_ARCHIVE)
    g = load_graph(deploy)
    assert {n.name: g.values[n.outputs[0]].shape for n in g.nodes if n.type == "SPP"} == \
        {"spp_max": (2, 63), "spp_ave": (2, 15), "spp_one": (2, 3, 1, 1)}


@pytest.mark.parametrize("inputs,body,match", [
    ({"x": (3, 2, 4), "cont": (3, 3)},
     ('layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "h" '
      'recurrent_param { num_output: 2 } }'), r"cont must be \(T, N\)"),
    ({"x": (3, 2), "cont": (3, 2)},
     ('layer { name: "l" type: "RNN" bottom: "x" bottom: "cont" top: "h" '
      'recurrent_param { num_output: 2 } }'), "at least 3 axes"),
    ({"x": (3, 2, 4), "cont": (3, 2)},
     ('layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "h" top: "hT" '
      'recurrent_param { num_output: 2 } }'), "1 top"),
    ({"data": (1, 2, 5, 5)},
     'layer { name: "s" type: "SPP" bottom: "data" top: "s" spp_param { pyramid_height: 3 } }',
     "refuses pad >= kernel"),
    ({"data": (4, 3), "sel": (4, 2)},
     'layer { name: "f" type: "Filter" bottom: "data" bottom: "sel" top: "f" }',
     "selector"),
    ({"data": (4, 3), "idx": (2, 2)},
     'layer { name: "r" type: "BatchReindex" bottom: "data" bottom: "idx" top: "r" }',
     "must be 1-D"),
])
def test_what_caffe_refuses_is_refused_clearly(tmp_path, inputs, body, match):
    with pytest.raises(CaffeFormatError, match=match):
        load_graph(_net(tmp_path, inputs, body))


@pytest.mark.parametrize("case", cases("", LAYERS_ARCHIVE))
def test_export_fast_paths_are_the_models(case, tmp_path):
    from .test_export import check_fast_paths

    deploy, weights, _, _ = write_case(case, tmp_path, LAYERS_ARCHIVE)
    check_fast_paths(deploy, weights)
    check_fast_paths(deploy, weights, outputs="all")


def test_inspect_says_how_filter_and_recurrent_layersquiet_convert(tmp_path, capsys):
    from caffe2keras.inspect import describe

    deploy, _, _, _ = write_case("filter", tmp_path, LAYERS_ARCHIVE)
    notes = {e["name"]: e.get("note") for e in describe(load_graph(deploy))["layers"]}
    assert "then zero rows" in notes["f"]
    deploy, _, _, _ = write_case("rnn", tmp_path, LAYERS_ARCHIVE)
    notes = {e["name"]: e.get("note") for e in describe(load_graph(deploy))["layers"]}
    assert "time is the Keras batch axis" in notes["rnn"]


def test_recurrent_layers_train(tmp_path):
    """One sequence per batch (time is the batch axis): gradients flow through the scan.
    (With x_static or h0, inputs of other batch sizes, fit() refuses the mix: train those
    with a loop of your own.)"""
    deploy, weights, ins, outs = write_case("lstm", tmp_path, LAYERS_ARCHIVE)
    model = quiet_convert(deploy, weights)
    before = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_weights}
    model.compile(keras.optimizers.SGD(0.1), loss={k: "mse" for k in model.output})
    target = {k: np.zeros_like(v) for k, v in outs.items()}
    model.fit(ins, target, batch_size=ins["x"].shape[0], shuffle=False, epochs=2, verbose=0)
    after = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_weights}
    assert set(before) == {"lstm/kernel", "lstm/bias", "lstm/recurrent_kernel"}
    for k, v in before.items():
        assert not np.allclose(v, after[k]), k
