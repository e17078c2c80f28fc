"""emit/registry.py: one record per Caffe type, filled by register_converter.

The main test follows README's "Adding a layer type": a new weighted type registered
through the public call alone, then converted and exported in every weights format, the
keras format on the fast path (no model built)."""
import pickle
import warnings

import h5py
import numpy as np
import pytest

import caffe2keras
from caffe2keras import layout
from caffe2keras.emit import registry
from caffe2keras.emit.registry import Fillers, Keras2H5, LayerType, layer_type, unregister
from caffe2keras.errors import CaffeFormatError, InternalError, UnsupportedLayerError
from caffe2keras.writer import CaffeNetWriter

# ------------------------------------------------- a new weighted type: "Affine"
# y = x @ W.T + b over the channel axis of a 2-D blob, W (num_output, C) like InnerProduct


def affine_shape(layer, bottoms):
    n_out = layer.param("inner_product_param").num_output
    (n, c), = bottoms
    return [(n, n_out)], [(n_out, c), (n_out,)]


def affine_weights(ctx):
    w, b = ctx.blobs
    return {ctx.name: [layout.dense_kernel(w), b.reshape(-1)]}


def affine_check(layer):
    if layer.param("inner_product_param").transpose:
        return "Affine with transpose: true is not supported"
    return None


def _register_affine():
    @caffe2keras.register_converter(
        "Affine", weights=affine_weights, shape=affine_shape, check=affine_check,
        keras_classes="Dense",
        fillers=Fillers("inner_product_param", ("weight_filler", "bias_filler")),
        keras2_h5=Keras2H5(affine_weights, lambda ctx, n: ["kernel", "bias"][:n]))
    def affine(ctx):
        import keras

        n_out = ctx.param("inner_product_param").num_output
        return [ctx.add(keras.layers.Dense(n_out, name=ctx.name), ctx.inputs[0])]


@pytest.fixture
def affine():
    _register_affine()
    yield
    unregister("Affine")


def _net(tmp_path, rng, transpose=False):
    net = CaffeNetWriter("affine")
    net.input("data", (2, 6))
    blobs = [rng.standard_normal(s).astype("f4") for s in ((5, 6), (5,), (3, 5), (3,))]
    net.layer("ip", "InnerProduct", "data", "ip", inner_product_param={"num_output": 5},
              blobs=blobs[:2])
    ip = {"num_output": 3, **({"transpose": True} if transpose else {})}
    net.layer("aff", "Affine", "ip", "aff", inner_product_param=ip, blobs=blobs[2:])
    deploy, weights = tmp_path / "a.prototxt", tmp_path / "a.caffemodel"
    net.write_prototxt(deploy)
    net.write_caffemodel(weights)
    return deploy, weights, blobs


def _np(tensor):
    import keras

    return keras.ops.convert_to_numpy(tensor)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_a_new_weighted_type_converts_and_exports_in_every_format(affine, tmp_path,
                                                                  monkeypatch):
    from caffe2keras.export import keras3

    rng = np.random.default_rng(0)
    deploy, weights, (w1, b1, w2, b2) = _net(tmp_path, rng)
    x = rng.standard_normal((2, 6)).astype("f4")
    want = (x @ w1.T + b1) @ w2.T + b2

    model = _quiet(caffe2keras.convert, deploy, weights)
    np.testing.assert_allclose(_np(model({"data": x})["aff"]), want, rtol=1e-5,
                               atol=1e-5)

    def no_model(*args, **kwargs):
        raise AssertionError("the keras export left the fast path (built the model)")
    monkeypatch.setattr(keras3, "skeleton_layout", no_model)

    out = caffe2keras.export_weights(deploy, weights, tmp_path / "a.weights.h5")
    fresh = _quiet(caffe2keras.convert, deploy)
    fresh.load_weights(out)
    np.testing.assert_allclose(_np(fresh({"data": x})["aff"]), want, rtol=1e-5,
                               atol=1e-5)

    out = caffe2keras.export_weights(deploy, weights, tmp_path / "a.h5", "keras2-h5")
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["aff/aff/kernel"][()], w2.T)
        np.testing.assert_array_equal(f["aff/aff/bias"][()], b2)

    out = caffe2keras.export_weights(deploy, weights, tmp_path / "k.npz", layout="keras")
    with np.load(out) as z:
        np.testing.assert_array_equal(z["aff/0"], w2.T)

    out = caffe2keras.export_weights(deploy, weights, tmp_path / "c.npz")
    with np.load(out) as z:
        np.testing.assert_array_equal(z["aff/0"], w2)

    out = caffe2keras.export_weights(deploy, weights, tmp_path / "a.pkl")
    with open(out, "rb") as f:
        blobs = pickle.load(f)
    aff = next(lay for lay in blobs if lay["name"] == "aff")
    assert aff["type"] == "Affine"
    np.testing.assert_array_equal(np.asarray(aff["weights"][0]), w2)


def test_a_new_type_draws_fresh_weights_from_its_fillers(affine, tmp_path):
    rng = np.random.default_rng(1)
    deploy, _, _ = _net(tmp_path, rng)
    model = _quiet(caffe2keras.convert, deploy, seed=0)
    kernel, bias = model.get_layer("aff").get_weights()
    assert kernel.shape == (5, 3) and not np.all(kernel == 0)
    np.testing.assert_array_equal(bias, 0)  # no bias_filler: zero, as the record says


def test_setting_checks_run_up_front_with_unsupported_types(affine, tmp_path):
    from caffe2keras.inspect import describe, format_table

    rng = np.random.default_rng(2)
    deploy, weights, _ = _net(tmp_path, rng, transpose=True)
    with pytest.raises(UnsupportedLayerError, match="transpose: true is not supported") as e:
        _quiet(caffe2keras.convert, deploy, weights)
    assert e.value.layer == "aff" and e.value.position  # line:column of the layer
    text = deploy.read_text().replace('type: "InnerProduct"', 'type: "Frobnicate"')
    deploy.write_text(text)
    with pytest.raises(UnsupportedLayerError) as e:
        _quiet(caffe2keras.convert, deploy)
    assert "ip (Frobnicate)" in str(e.value) and "aff (Affine): Affine with transpose" in \
        str(e.value)
    info = describe(caffe2keras.load_graph(deploy))
    assert info["unsupported"] == [
        {"layer": "ip", "type": "Frobnicate"},
        {"layer": "aff", "type": "Affine",
         "reason": "Affine with transpose: true is not supported"}]
    text = format_table(info)
    assert "UNSUPPORTED: 1 layer(s) of type Frobnicate: ip (Frobnicate)" in text
    assert "UNSUPPORTED: 1 layer(s) with unsupported settings: aff (Affine): Affine with " \
        "transpose" in text


# ------------------------------------------------- the records themselves

def test_every_builtin_type_has_one_consistent_record():
    registry.load_builtin()
    weighted = {"Convolution", "DepthwiseConvolution", "ConvolutionDepthwise",
                "Deconvolution", "InnerProduct", "Embed", "BatchNorm", "BatchNorm+Scale",
                "Scale", "Bias", "PReLU", "Normalize", "BN", "LSTM", "RNN", "Parameter"}
    for name, rec in registry.TYPES.items():
        assert isinstance(rec, LayerType) and rec.name == name
        assert rec.converter is not None, name
        assert rec.keras_classes is not None, f"{name} misses the export fast path"
        assert (rec.weights is not None) == (name in weighted), name
        if name != "BatchNorm+Scale":  # a step, not a Caffe type
            assert rec.shape is not None, f"{name} has no shape function"
    # the views answer from the records
    assert registry.CONVERTERS["ReLU"] is layer_type("ReLU").converter
    assert registry.WEIGHTS["Scale"] is layer_type("Scale").weights
    assert registry.SHAPE_FUNCTIONS["Pooling"] is layer_type("Pooling").shape
    assert "ReLU" not in registry.WEIGHTS
    assert not set(registry.SHAPE_FUNCTIONS) - set(registry.CONVERTERS)


def test_replacing_a_builtin_converter_keeps_its_weights_but_not_its_keras_classes():
    builtin = layer_type("Scale")
    try:
        @caffe2keras.register_converter("Scale")
        def mine(ctx):
            raise NotImplementedError
        rec = layer_type("Scale")
        assert rec.converter is mine and rec.weights is builtin.weights
        assert rec.shape is builtin.shape and rec.fillers == builtin.fillers
        assert rec.keras_classes is None  # only the registrant knows what `mine` makes
    finally:
        registry.TYPES["Scale"] = builtin


def test_register_converter_needs_type_names():
    with pytest.raises(TypeError):
        caffe2keras.register_converter()
    with pytest.raises(TypeError):
        caffe2keras.register_converter("")


def test_ctx_fail_names_file_position_and_layer(tmp_path):
    net = CaffeNetWriter("t")
    net.input("data", (1, 2, 4, 4))
    net.layer("s", "Scale", "data", "s", scale_param={"axis": 0, "num_axes": 1})
    net.write_prototxt(tmp_path / "t.prototxt")
    with pytest.raises(CaffeFormatError, match="along the batch axis") as e:
        _quiet(caffe2keras.convert, tmp_path / "t.prototxt")
    assert e.value.path == str(tmp_path / "t.prototxt")
    assert e.value.layer == "s" and ":" in str(e.value.position)


def test_a_converter_breaking_an_invariant_raises_internal_error(tmp_path):
    import keras

    net = CaffeNetWriter("t")
    net.input("data", (1, 2))
    net.layer("b", "Broken", "data", ["b1", "b2"])
    net.write_prototxt(tmp_path / "t.prototxt")

    @caffe2keras.register_converter("Broken")
    def broken(ctx):  # one tensor for two tops
        return [ctx.add(keras.layers.Identity(name=ctx.name), ctx.inputs[0])]
    try:
        with pytest.raises(InternalError, match=r"layer 'b' \(Broken.*1 tensors for 2 tops"):
            _quiet(caffe2keras.convert, tmp_path / "t.prototxt")
    finally:
        unregister("Broken")
    assert not issubclass(InternalError, CaffeFormatError)
