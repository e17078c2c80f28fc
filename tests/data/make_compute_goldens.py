"""Make tests/data/compute_goldens.npz: small Caffe nets for the compute-layer variants the
shared conformance suite leaves out, run through REAL Caffe (pycaffe).

    PYTHONPATH=/tmp/caffe-build/src/python LD_LIBRARY_PATH=/tmp/caffe-build/libs \\
        GLOG_minloglevel=2 /usr/bin/python3 tests/data/make_compute_goldens.py

Per case the archive holds ``CASE/prototxt`` (text), ``CASE/caffemodel`` (the bytes Caffe
saved after its fillers ran), ``CASE/in/BLOB`` and ``CASE/out/BLOB`` (every named blob
after forward, NCHW). Tests never need Caffe: they read this file.
"""
import os
import re
import sys
import tempfile

import caffe
import numpy as np

caffe.set_mode_cpu()
HERE = os.path.dirname(os.path.abspath(__file__))
G = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 }'
W = 'weight_filler { type: "gaussian" std: 0.3 }'
F1 = 'filler { type: "gaussian" std: 1 }'
F = F1 + ' bias_filler { type: "gaussian" std: 1 }'

CASES = []


def case(name, inputs, body, init=None, feed=None):
    CASES.append((name, inputs, body, init, feed))


def layer(name, typ, bottoms, tops, params=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{typ}" {b} {t} {params} }}\n'


def conv(name, bottom, top, params, typ="Convolution", bottoms=None):
    return layer(name, typ, bottoms or [bottom], [top] if isinstance(top, str) else top,
                 f"convolution_param {{ {params} }}")


def pool(name, bottom, params):
    return layer(name, "Pooling", [bottom], [name], f"pooling_param {{ {params} }}")


# ---- Convolution: stride with dilation (Keras refuses both), depthwise multiplier
case("conv_s2_d2", {"data": (1, 3, 13, 14)},
     conv("c", "data", "c", f"num_output: 4 kernel_size: 3 stride: 2 dilation: 2 pad: 2 {G}"))
case("conv_s2_d4", {"data": (1, 3, 17, 16)},
     conv("c", "data", "c", f"num_output: 4 kernel_size: 3 stride: 2 dilation: 4 pad: 3 {G}"))
case("conv_s6_d4", {"data": (1, 2, 23, 21)},
     conv("c", "data", "c", f"num_output: 3 kernel_size: 3 stride: 6 dilation: 4 pad: 1 {G}"))
case("conv_rect_stride_dilation", {"data": (2, 3, 12, 15)},
     conv("c", "data", "c", f"num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 "
                            f"dilation: 1 dilation: 3 pad_h: 1 pad_w: 2 {G}"))
case("conv_depthwise_multiplier", {"data": (1, 4, 11, 11)},
     conv("dw", "data", "dw", f"num_output: 8 group: 4 kernel_size: 3 stride: 2 dilation: 2 "
                              f"pad: 1 {G}"))
case("conv_group_dilated_nobias", {"data": (1, 4, 9, 10)},
     conv("c", "data", "c", f"num_output: 6 group: 2 kernel_size: 3 dilation: 2 pad: 2 "
                            f"bias_term: false {W}"))
case("conv_two_bottoms", {"a": (1, 3, 7, 8), "b": (1, 3, 7, 8)},
     conv("c", None, ["ca", "cb"], f"num_output: 5 kernel_size: 3 pad_h: 1 pad_w: 0 {G}",
          bottoms=["a", "b"]))

# ---- Deconvolution
case("deconv_dilated", {"data": (1, 3, 5, 6)},
     conv("up", "data", "up", f"num_output: 4 kernel_size: 3 stride: 2 dilation: 2 pad: 1 {G}",
          typ="Deconvolution"))
case("deconv_kernel_lt_stride", {"data": (1, 3, 4, 5)},
     conv("up", "data", "up", f"num_output: 2 kernel_size: 2 stride: 3 {G}", typ="Deconvolution"))
case("deconv_rect", {"data": (2, 3, 5, 4)},
     conv("up", "data", "up", f"num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 "
                              f"pad_h: 1 pad_w: 0 {G}", typ="Deconvolution"))
case("deconv_group_dilated_rect", {"data": (1, 4, 5, 6)},
     conv("up", "data", "up", f"num_output: 6 group: 2 kernel_size: 3 stride_h: 2 stride_w: 3 "
                              f"dilation: 2 pad: 3 {G}", typ="Deconvolution"))
case("deconv_group_multiplier", {"data": (1, 3, 6, 5)},
     conv("up", "data", "up", f"num_output: 6 group: 3 kernel_size: 3 pad: 2 bias_term: false "
                              f"{W}", typ="Deconvolution"))
case("deconv_two_bottoms", {"a": (1, 2, 4, 4), "b": (1, 2, 4, 4)},
     conv("up", None, ["ua", "ub"], f"num_output: 3 kernel_size: 4 stride: 2 pad: 1 {G}",
          typ="Deconvolution", bottoms=["a", "b"]))

# ---- Pooling
case("pool_floor", {"data": (1, 3, 14, 15)},
     pool("p1", "data", "pool: MAX kernel_size: 3 stride: 2 ceil_mode: false")
     + pool("p2", "data", "pool: MAX kernel_size: 3 stride: 2 pad: 1 ceil_mode: false")
     + pool("p3", "data", "pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1 "
                          "ceil_mode: false"))
case("pool_ave_overhang", {"data": (1, 3, 14, 15)},
     pool("p1", "data", "pool: AVE kernel_size: 3 stride: 2")
     + pool("p2", "data", "pool: AVE kernel_size: 4 stride: 3 pad: 2"))
case("pool_drop_last_window", {"data": (2, 2, 5, 7)},
     pool("pm", "data", "pool: MAX kernel_size: 2 stride: 2 pad: 1")
     + pool("pa", "data", "pool: AVE kernel_size: 2 stride: 2 pad: 1"))
case("pool_rect_max_pad", {"data": (1, 3, 9, 11)},
     pool("p", "data", "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 2 "
                       "pad_w: 1"))

# ---- InnerProduct on any axis and rank
case("ip_axis2", {"data": (2, 3, 4, 5)},
     layer("fc", "InnerProduct", ["data"], ["fc"],
           f"inner_product_param {{ num_output: 6 axis: 2 {G} }}"))
case("ip_axis3_out4d", {"data": (2, 3, 4, 5)},
     layer("fc", "InnerProduct", ["data"], ["fc"],
           f"inner_product_param {{ num_output: 6 axis: -1 {G} }}"))
case("ip_rank3", {"data": (2, 3, 4)},
     layer("fc1", "InnerProduct", ["data"], ["fc1"],
           f"inner_product_param {{ num_output: 5 axis: 2 {G} }}")
     + layer("fc2", "InnerProduct", ["data"], ["fc2"],
             f"inner_product_param {{ num_output: 5 transpose: true bias_term: false {W} }}"))
case("ip_rank5_axis3", {"data": (1, 2, 3, 4, 5)},
     layer("fc", "InnerProduct", ["data"], ["fc"],
           f"inner_product_param {{ num_output: 6 axis: 3 {G} }}"))
case("ip_rank2", {"data": (3, 7)},
     layer("fc", "InnerProduct", ["data"], ["fc"],
           f"inner_product_param {{ num_output: 4 transpose: true {G} }}"))


def int_feed(high):
    def make(shape, rng):
        return rng.integers(0, high, shape).astype(np.float32)
    return make


case("embed", {"data": (2, 5)},
     layer("e", "Embed", ["data"], ["e"],
           f"embed_param {{ num_output: 3 input_dim: 7 {G} }}"), feed=int_feed(7))
case("embed_to_4d", {"data": (1, 3, 4)},
     layer("e", "Embed", ["data"], ["e"],
           f"embed_param {{ num_output: 2 input_dim: 5 bias_term: false {W} }}"),
     feed=int_feed(5))


# ---- BatchNorm, Scale, Bias
def set_bn(names, factors):
    def init(net, rng):
        for name, factor in zip(names, factors):
            m, v, s = net.params[name]
            c = m.data.shape[0]
            m.data[...] = rng.normal(0, 1, c) * factor
            v.data[...] = rng.uniform(0.2, 2.0, c) * factor
            s.data[...] = factor
    return init


case("bn_rank2_unfused", {"data": (4, 6)},
     layer("bn", "BatchNorm", ["data"], ["bn"], "batch_norm_param { eps: 0.01 }"),
     init=set_bn(["bn"], [3.0]))
case("bn_zero_factor_scale_nobias", {"data": (1, 3, 4, 5)},
     layer("bn", "BatchNorm", ["data"], ["x"])
     + layer("sc", "Scale", ["x"], ["x"], f"scale_param {{ {F1} }}"),
     init=set_bn(["bn"], [0.0]))
case("bn_rank3_scale", {"data": (2, 3, 5)},
     layer("bn", "BatchNorm", ["data"], ["bn"])
     + layer("sc", "Scale", ["bn"], ["sc"], f"scale_param {{ bias_term: true {F} }}"),
     init=set_bn(["bn"], [0.5]))
case("scale_learned_axes", {"data": (1, 3, 4, 5)},
     layer("s_ch", "Scale", ["data"], ["s_ch"],
           f"scale_param {{ axis: 1 num_axes: 2 bias_term: true {F} }}")
     + layer("s_hw", "Scale", ["data"], ["s_hw"], f"scale_param {{ axis: 2 num_axes: -1 {F} }}")
     + layer("s_w", "Scale", ["data"], ["s_w"], f"scale_param {{ axis: -1 {F} }}")
     + layer("s_0", "Scale", ["data"], ["s_0"],
             f"scale_param {{ num_axes: 0 bias_term: true {F} }}"))
case("scale_second_bottom", {"data": (2, 3, 4, 5), "ch": (3, 4), "full": (2, 3, 4, 5),
                             "v": (2, 3)},
     layer("s1", "Scale", ["data", "ch"], ["s1"],
           f"scale_param {{ axis: 1 bias_term: true {F} }}")
     + layer("s2", "Scale", ["data", "full"], ["s2"], "scale_param { axis: 0 }")
     + layer("s3", "Scale", ["data", "v"], ["s3"], "scale_param { axis: 0 }"))
case("scale_rank3", {"data": (2, 3, 4), "f": (3,)},
     layer("s1", "Scale", ["data", "f"], ["s1"], "scale_param { axis: 1 }")
     + layer("s2", "Scale", ["data"], ["s2"], f"scale_param {{ axis: 2 bias_term: true {F} }}"))
case("bias_variants", {"data": (2, 3, 4, 5), "b": (2, 3), "hw": (4, 5)},
     layer("b1", "Bias", ["data", "b"], ["b1"], "bias_param { axis: 0 }")
     + layer("b2", "Bias", ["data", "hw"], ["b2"], "bias_param { axis: 2 }")
     + layer("b3", "Bias", ["data"], ["b3"],
             'bias_param { axis: 2 num_axes: 2 filler { type: "gaussian" std: 1 } }'))

# ---- LRN and MVN
case("lrn_more", {"data": (1, 10, 5, 6)},
     layer("n1", "LRN", ["data"], ["n1"], "lrn_param { local_size: 1 alpha: 0.3 k: 0.5 }")
     + layer("n2", "LRN", ["data"], ["n2"], "lrn_param { local_size: 7 alpha: 2 beta: 1.5 k: 4 }")
     + layer("n3", "LRN", ["data"], ["n3"],
             "lrn_param { local_size: 1 alpha: 3 beta: 0.5 norm_region: WITHIN_CHANNEL }"))
case("mvn", {"data": (2, 3, 4, 5)},
     layer("m1", "MVN", ["data"], ["m1"])
     + layer("m2", "MVN", ["data"], ["m2"], "mvn_param { normalize_variance: false }")
     + layer("m3", "MVN", ["data"], ["m3"], "mvn_param { across_channels: true eps: 0.5 }"))
case("mvn_ranks", {"d2": (3, 6), "d3": (2, 3, 5)},
     layer("m2", "MVN", ["d2"], ["m2"], "mvn_param { across_channels: true eps: 0.1 }")
     + layer("m2c", "MVN", ["d2"], ["m2c"], "mvn_param { normalize_variance: false }")
     + layer("m3", "MVN", ["d3"], ["m3"], "mvn_param { eps: 0.01 }"))


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
        for i, (name, inputs, body, init, feed) in enumerate(CASES):
            if only and name not in only:
                continue
            proto = header(name, inputs) + body
            path = os.path.join(tmp, name + ".prototxt")
            with open(path, "w") as f:
                f.write(proto)
            caffe.set_random_seed(2000 + i)
            net = caffe.Net(path, caffe.TEST)
            rng = np.random.default_rng(500 + i)
            if init:
                init(net, rng)
            for blob, shape in inputs.items():
                x = feed(shape, rng) if feed else rng.standard_normal(shape) * 2
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
    np.savez_compressed(os.path.join(HERE, "compute_goldens.npz"), **out)


if __name__ == "__main__":
    main()
