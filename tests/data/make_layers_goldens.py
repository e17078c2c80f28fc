"""Make tests/data/layers_goldens.npz: small nets for the BVLC layers LSTM, RNN, SPP,
Im2col, Parameter, BatchReindex, Filter and MAX pooling's mask top, run through REAL
Caffe (pycaffe).

    PYTHONPATH=/tmp/caffe-build/src/python LD_LIBRARY_PATH=/tmp/caffe-build/libs \\
        GLOG_minloglevel=2 /usr/bin/python3 tests/data/make_layers_goldens.py

Same layout as compute_goldens.npz (tests/compute_goldens.py reads both): per case
``CASE/prototxt``, ``CASE/caffemodel``, ``CASE/in/BLOB`` and ``CASE/out/BLOB`` (every
named blob after forward, NCHW). Tests never need Caffe. The fork layers BN and Axpy are
not in this Caffe: tests/test_emit_wild.py checks them against numpy references.
"""
import os
import re
import sys
import tempfile

import caffe
import numpy as np

caffe.set_mode_cpu()
HERE = os.path.dirname(os.path.abspath(__file__))
G = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'

CASES = []


def case(name, inputs, body, feed=None, init=None):
    CASES.append((name, inputs, body, feed or {}, init))


def layer(name, typ, bottoms, tops, params=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{typ}" {b} {t} {params} }}\n'


def cont(shape, rng):
    """Sequence-continuation flags: 0 starts a new sequence (Caffe's cont input)."""
    c = np.ones(shape)
    c[0] = 0
    c[rng.integers(1, shape[0]), rng.integers(0, shape[1])] = 0
    return c


def values(v):
    return lambda shape, rng: np.asarray(v, np.float64).reshape(shape)


# ---- LSTM / RNN: x (T, N, ...), cont (T, N), optional x_static (N, ...), h0/c0 (1, N, H)
case("lstm", {"x": (5, 3, 4), "cont": (5, 3)},
     layer("lstm", "LSTM", ["x", "cont"], ["h"],
           f"recurrent_param {{ num_output: 6 {G} }}"), feed={"cont": cont})
case("lstm_static_expose", {"x": (4, 2, 3), "cont": (4, 2), "xs": (2, 5),
                            "h0": (1, 2, 4), "c0": (1, 2, 4)},
     layer("lstm", "LSTM", ["x", "cont", "xs", "h0", "c0"], ["h", "hT", "cT"],
           f"recurrent_param {{ num_output: 4 expose_hidden: true {G} }}"),
     feed={"cont": cont})
case("lstm_4d_input", {"x": (3, 2, 2, 3), "cont": (3, 2)},
     layer("lstm", "LSTM", ["x", "cont"], ["h"],
           f"recurrent_param {{ num_output: 3 {G} }}"), feed={"cont": cont})
case("rnn", {"x": (6, 2, 3), "cont": (6, 2)},
     layer("rnn", "RNN", ["x", "cont"], ["o"],
           f"recurrent_param {{ num_output: 5 {G} }}"), feed={"cont": cont})
case("rnn_static_expose", {"x": (3, 2, 4), "cont": (3, 2), "xs": (2, 3), "h0": (1, 2, 5)},
     layer("rnn", "RNN", ["x", "cont", "xs", "h0"], ["o", "hT"],
           f"recurrent_param {{ num_output: 5 expose_hidden: true {G} }}"),
     feed={"cont": cont})

# ---- SPP: pyramid pooling (kernel ceil(H / bins), padding to cover, stride = kernel)
case("spp", {"data": (2, 3, 13, 11)},
     layer("spp_max", "SPP", ["data"], ["spp_max"], "spp_param { pyramid_height: 3 }")
     + layer("spp_ave", "SPP", ["data"], ["spp_ave"],
             "spp_param { pyramid_height: 2 pool: AVE }")
     + layer("spp_one", "SPP", ["data"], ["spp_one"], "spp_param { pyramid_height: 1 }"))
case("spp_square", {"data": (1, 2, 8, 8)},
     layer("spp", "SPP", ["data"], ["spp"], "spp_param { pyramid_height: 4 pool: AVE }"))

# ---- Im2col: (N, C*kh*kw, oh, ow), channel c*kh*kw + i*kw + j
case("im2col", {"data": (2, 3, 7, 8)},
     layer("i1", "Im2col", ["data"], ["i1"],
           "convolution_param { kernel_size: 3 stride: 2 pad: 1 }")
     + layer("i2", "Im2col", ["data"], ["i2"],
             "convolution_param { kernel_size: 3 dilation: 2 pad: 2 }")
     + layer("i3", "Im2col", ["data"], ["i3"],
             "convolution_param { kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_w: 1 }"))


# ---- Parameter: a learned blob as a top (Caffe starts it at 0: set it here)
def set_params(names):
    def init(net, rng):
        for name in names:
            p = net.params[name][0]
            p.data[...] = rng.standard_normal(p.data.shape)
    return init


case("parameter", {"data": (2, 3, 4, 5)},
     layer("p4", "Parameter", [], ["p4"], "parameter_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } }")
     + layer("sum", "Eltwise", ["data", "p4"], ["sum"])
     + layer("p2", "Parameter", [], ["p2"], "parameter_param { shape { dim: 3 dim: 4 } }"),
     init=set_params(["p4", "p2"]))

# ---- BatchReindex: top[i] = bottom[index[i]]
case("batch_reindex", {"data": (4, 3, 2, 2), "vec": (4, 5), "idx": (6,)},
     layer("r4", "BatchReindex", ["data", "idx"], ["r4"])
     + layer("r2", "BatchReindex", ["vec", "idx"], ["r2"]),
     feed={"idx": values([3, 0, 0, 2, 1, 3])})

# ---- Filter: the items whose selector is nonzero (Caffe's top has that many rows)
case("filter", {"data": (5, 3, 2, 2), "vec": (5, 4), "sel": (5,)},
     layer("f", "Filter", ["data", "vec", "sel"], ["fd", "fv"]),
     feed={"sel": values([1, 0, 2.5, 1, 0])})
case("filter_4d_selector", {"data": (4, 2, 3, 3), "sel": (4, 1, 1, 1)},
     layer("f", "Filter", ["data", "sel"], ["fd"]),
     feed={"sel": values([0, 1, 0, -1])})


# ---- MAX pooling's second top: the argmax mask SegNet's Upsample unpools with
# (flat index h * W + w in the input plane; the first maximum wins ties)
def ints(shape, rng):
    return rng.integers(-3, 4, shape).astype(np.float64)   # many ties


case("pool_mask", {"data": (2, 3, 8, 9), "tied": (1, 2, 6, 7)},
     layer("p1", "Pooling", ["data"], ["p1", "m1"],
           "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
     + layer("p2", "Pooling", ["data"], ["p2", "m2"],
             "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }")
     + layer("p3", "Pooling", ["tied"], ["p3", "m3"],
             "pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 }"),
     feed={"tied": ints})


def header(name, inputs):
    s = f'name: "{name}"\n'
    for blob, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        s += f'layer {{ name: "{blob}" type: "Input" top: "{blob}" ' \
             f'input_param {{ shape {{ {dims} }} }} }}\n'
    return s


def main():
    only = set(sys.argv[1:])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, inputs, body, feed, init) in enumerate(CASES):
            if only and name not in only:
                continue
            proto = header(name, inputs) + body
            path = os.path.join(tmp, name + ".prototxt")
            with open(path, "w") as f:
                f.write(proto)
            caffe.set_random_seed(3000 + i)
            net = caffe.Net(path, caffe.TEST)
            rng = np.random.default_rng(700 + i)
            if init:
                init(net, rng)
            for blob, shape in inputs.items():
                x = feed[blob](shape, rng) if blob in feed else rng.standard_normal(shape)
                net.blobs[blob].data[...] = x
                out[f"{name}/in/{blob}"] = x.astype(np.float32)
            net.forward()
            for blob, v in net.blobs.items():
                if blob not in inputs and not re.search(r"_split_\d+$", blob):
                    out[f"{name}/out/{blob}"] = v.data.copy()
            weights = os.path.join(tmp, name + ".caffemodel")
            net.save(weights)
            out[f"{name}/prototxt"] = np.array(proto)
            out[f"{name}/caffemodel"] = np.fromfile(weights, np.uint8)
            print(name, {k.split("/")[-1]: v.shape for k, v in out.items()
                         if k.startswith(name + "/out/")})
    np.savez_compressed(os.path.join(HERE, "layers_goldens.npz"), **out)


if __name__ == "__main__":
    main()
