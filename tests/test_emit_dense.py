"""InnerProduct and Embed converters: exact against real Caffe on every axis and rank,
and the conv -> fc case flattening NHWC directly (weights permuted, no transposes)."""
import subprocess
import sys

import keras
import numpy as np
import pytest

from caffe2keras.errors import CaffeFormatError
from caffe2keras.writer import CaffeNetWriter, write_net

from .compute_goldens import cases, check_case, write_case
from .shared import convert_net

RNG = np.random.default_rng(11)


@pytest.mark.parametrize("case", cases("ip_") + cases("embed"))
def test_against_caffe(case, tmp_path):
    check_case(case, tmp_path)


def _fc_net(shape, n_out=5, **param):
    k = int(np.prod(shape[param.get("axis", 1):]))
    w = RNG.standard_normal((n_out, k)).astype(np.float32)
    b = RNG.standard_normal(n_out).astype(np.float32)
    net = CaffeNetWriter("t")
    net.input("data", shape)
    net.layer("fc", "InnerProduct", "data", "fc",
              inner_product_param={"num_output": n_out, **param}, blobs=[w, b])
    return net, w, b



def test_fc_after_4d_flattens_nhwc_with_permuted_weights(tmp_path):
    net, w, b = _fc_net((2, 3, 4, 5))
    model = convert_net(tmp_path, net)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Flatten", "Dense"]  # no Permute of activations
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    got = keras.ops.convert_to_numpy(model({"data": x.transpose(0, 2, 3, 1)})["fc"])
    np.testing.assert_allclose(got, x.reshape(2, -1) @ w.T + b, rtol=1e-5, atol=1e-5)


def test_weights_functions_run_without_keras(tmp_path):
    # weight export reuses them on a LayerContext in a process that never imports Keras
    net, w, _ = _fc_net((1, 2, 3, 3), n_out=4)
    write_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel", net)
    np.save(tmp_path / "w.npy", w)
    nets = [(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")]
    for case in ("conv_depthwise_multiplier", "deconv_group_dilated_rect", "embed",
                 "bn_rank3_scale", "bn_rank2_unfused", "scale_second_bottom",
                 "scale_learned_axes", "bias_variants", "ip_axis3_out4d"):
        nets.append(write_case(case, tmp_path)[:2])
    script = f"""
import sys
import numpy as np
from caffe2keras.emit.context import LayerContext
from caffe2keras.emit.plan import make_plan
from caffe2keras.emit.registry import WEIGHTS, load_builtin
from caffe2keras.graph import load_graph
load_builtin()
done = set()
for deploy, weights in {[(str(a), str(b)) for a, b in nets]!r}:
    graph = load_graph(deploy, weights)
    for step in make_plan(graph):
        if step.type in WEIGHTS and any(n.layer.blobs for n in step.nodes):
            out = WEIGHTS[step.type](LayerContext(step, graph))
            assert step.name in out
            done.add(step.type)
graph = load_graph(r"{tmp_path / 'n.prototxt'}", r"{tmp_path / 'n.caffemodel'}")
kernel, bias = WEIGHTS["InnerProduct"](LayerContext(make_plan(graph)[0], graph))["fc"]
w = np.load(r"{tmp_path / 'w.npy'}")
assert kernel.shape == (18, 4)
# row (h, w, c) of the Keras kernel is Caffe's column (c, h, w)
assert kernel[(1 * 3 + 2) * 2 + 1, 3] == w[3, 1 * 9 + 1 * 3 + 2]
assert "keras" not in sys.modules
print(sorted(done))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted(
        ["BatchNorm", "BatchNorm+Scale", "Bias", "Convolution", "Deconvolution", "Embed",
         "InnerProduct", "Scale"]))


def test_axis_zero_is_refused(tmp_path):
    net, _, _ = _fc_net((2, 3), axis=0)
    with pytest.raises(CaffeFormatError, match="axis 0"):
        convert_net(tmp_path, net)
