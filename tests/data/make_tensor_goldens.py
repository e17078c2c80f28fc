"""Make tests/data/tensor_goldens.npz: small Caffe nets for the activation and axis/tensor
layer variants the shared conformance suite leaves out, run through REAL Caffe (pycaffe).

    PYTHONPATH=/tmp/caffe-build/src/python LD_LIBRARY_PATH=/tmp/caffe-build/libs \\
        GLOG_minloglevel=2 /usr/bin/python3 tests/data/make_tensor_goldens.py

Per case the archive holds ``CASE/prototxt`` (text, the shapes the model is converted
with), ``CASE/caffemodel`` (the bytes Caffe saved after its fillers ran), ``CASE/in/BLOB``
and ``CASE/out/BLOB`` (every named blob after forward, NCHW). A case with ``batches``
feeds Caffe other batch sizes than its prototxt declares (Caffe reshapes the net, as
a Keras model with a flexible batch axis must follow). Tests never need Caffe.
"""
import os
import re
import sys
import tempfile

import caffe
import numpy as np

caffe.set_mode_cpu()
HERE = os.path.dirname(os.path.abspath(__file__))
U = 'filler { type: "uniform" min: -1 max: 1 }'
CASES = []


def case(name, inputs, body, batches=None, rounded=()):
    CASES.append((name, inputs, body, batches, set(rounded)))


def layer(name, typ, bottoms, tops, params=""):
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [tops] if isinstance(tops, str) else tops
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{typ}" {b} {t} {params} }}\n'


def neuron(name, typ, bottom, params=""):
    return layer(name, typ, bottom, name, params)


# ---- activations: every parameter path of Caffe's CPU forward
case("act_neuron", {"data": (2, 3, 4, 5)}, "".join([
    neuron("pow_sqrt", "Power", "data", "power_param { power: 0.5 shift: 20 }"),
    neuron("pow_cube", "Power", "data", "power_param { power: 3 scale: -1.5 shift: 0.2 }"),
    neuron("pow_const", "Power", "data", "power_param { power: 3 scale: 0 shift: 2 }"),
    neuron("pow_zero", "Power", "data", "power_param { power: 0 scale: 3 }"),
    neuron("pow_lin", "Power", "data", "power_param { scale: -2 shift: 0.5 }"),
    neuron("pow_inv", "Power", "data", "power_param { power: -1 shift: 30 }"),
    neuron("pow_sq", "Power", "data", "power_param { power: 2 scale: 0.7 }"),
    neuron("exp_e", "Exp", "data"),
    neuron("exp_s", "Exp", "data", "exp_param { scale: 0.3 shift: 0.5 }"),
    neuron("exp10", "Exp", "data", "exp_param { base: 10 scale: 0.2 shift: -0.5 }"),
    neuron("log_e", "Log", "data", "log_param { shift: 20 }"),
    neuron("log2", "Log", "data", "log_param { base: 2 scale: 0.5 shift: 20 }"),
    neuron("thr0", "Threshold", "data"),
    neuron("thr", "Threshold", "data", "threshold_param { threshold: -0.7 }"),
    neuron("elu1", "ELU", "data"),
    neuron("abs", "AbsVal", "data"),
    neuron("relu0", "ReLU", "data"),
    neuron("drop", "Dropout", "data", "dropout_param { dropout_ratio: 0.3 }"),
    neuron("big", "Power", "data", "power_param { scale: 40 }"),  # overflow-prone inputs
    neuron("bnll_big", "BNLL", "big"),
    neuron("tanh_big", "TanH", "big"),
    neuron("sig_big", "Sigmoid", "big"),
    neuron("elu_big", "ELU", "big", "elu_param { alpha: 2.5 }"),
    neuron("leaky_big", "ReLU", "big", "relu_param { negative_slope: -0.3 }"),
    neuron("prelu_u", "PReLU", "data", f"prelu_param {{ {U} }}"),
    neuron("prelu_default", "PReLU", "data"),
    neuron("prelu_shared", "PReLU", "data", f"prelu_param {{ channel_shared: true {U} }}"),
]))
# PReLU after InnerProduct (2-D) and on 3-D blobs: alphas along Caffe's axis 1
case("act_prelu_ranks", {"v": (3, 6), "t": (2, 4, 7)}, "".join([
    neuron("prelu_v", "PReLU", "v", f"prelu_param {{ {U} }}"),
    neuron("prelu_vs", "PReLU", "v", f"prelu_param {{ channel_shared: true {U} }}"),
    neuron("prelu_t", "PReLU", "t", f"prelu_param {{ {U} }}"),
    neuron("abs_t", "AbsVal", "t"),
    neuron("sig_v", "Sigmoid", "v"),
    neuron("elu_t", "ELU", "t", "elu_param { alpha: 0.3 }"),
]))

# ---- merging and splitting
MERGE = "".join([
    layer("cat0", "Concat", ["a", "b"], "cat0", "concat_param { axis: 0 }"),
    layer("catw", "Concat", ["a", "a"], "catw", "concat_param { axis: -1 }"),
    layer("cath", "Concat", ["a", "a", "a"], "cath", "concat_param { concat_dim: 2 }"),
    layer("cat3d", "Concat", ["m", "m"], "cat3d", "concat_param { axis: 2 }"),
    layer("cat1", "Concat", ["m"], "cat1"),
    layer("sl0", "Slice", "big", ["sl0a", "sl0b"], "slice_param { axis: 0 slice_point: 1 }"),
    layer("slw", "Slice", "big", ["slwa", "slwb", "slwc", "slwd"], "slice_param { axis: 3 }"),
    layer("slc", "Slice", "big", ["slca", "slcb"], "slice_param { slice_point: 2 }"),
    layer("slv", "Slice", "v", ["slva", "slvb", "slvc"],
          "slice_param { slice_dim: 1 slice_point: 1 slice_point: 4 }"),
    layer("split", "Split", "a", ["sp1", "sp2"]),
    layer("esum", "Eltwise", ["a", "sp1", "a"], "esum",
          "eltwise_param { operation: SUM coeff: 0.5 coeff: -1 coeff: 2 }"),
    layer("emax", "Eltwise", ["a", "sp2", "esum"], "emax", "eltwise_param { operation: MAX }"),
    layer("eprod", "Eltwise", ["a", "sp2", "esum"], "eprod",
          "eltwise_param { operation: PROD }"),
    layer("esum1", "Eltwise", ["a", "esum"], "esum1"),
    layer("esumv", "Eltwise", ["v", "v"], "esumv", "eltwise_param { coeff: 1 coeff: 1 }"),
    layer("sil", "Silence", ["sp2", "slwd"], []),
])
MERGE_IN = {"a": (2, 3, 4, 5), "b": (3, 3, 4, 5), "m": (2, 6, 4), "v": (4, 6),
            "big": (4, 3, 7, 8)}
case("tensor_merge", MERGE_IN, MERGE)
case("tensor_merge_batch", MERGE_IN, MERGE,
     batches={"a": 3, "b": 1, "m": 5, "v": 2, "big": 6})

CROP = "".join([
    layer("crop1", "Crop", ["big", "ref"], "crop1", "crop_param { axis: 1 offset: 1 offset: 2 "
                                                   "offset: 3 }"),
    layer("crop3", "Crop", ["big", "ref"], "crop3", "crop_param { axis: 3 offset: 2 }"),
    layer("crop2", "Crop", ["big", "ref"], "crop2", "crop_param { offset: 4 offset: 1 }"),
    layer("crop0", "Crop", ["big", "ref"], "crop0", "crop_param { axis: 0 offset: 1 offset: 0 "
                                                   "offset: 2 offset: 1 }"),
    layer("cropm", "Crop", ["big", "ref"], "cropm", "crop_param { axis: -2 offset: 4 offset: 1 }"),
    layer("crop3d", "Crop", ["m", "mref"], "crop3d", "crop_param { axis: 1 offset: 2 }"),
])
CROP_IN = {"big": (4, 3, 7, 8), "ref": (2, 2, 3, 4), "m": (2, 6, 4), "mref": (1, 3, 2)}
case("tensor_crop", CROP_IN, CROP)
case("tensor_crop_batch", CROP_IN, CROP, batches={"big": 6, "ref": 3, "m": 3})

# ---- reshaping
RESHAPE = "".join([
    layer("fl0", "Flatten", "m", "fl0", "flatten_param { axis: 0 end_axis: 1 }"),
    layer("fl23", "Flatten", "a", "fl23", "flatten_param { axis: 2 }"),
    layer("fl12", "Flatten", "a", "fl12", "flatten_param { axis: 1 end_axis: 2 }"),
    layer("flneg", "Flatten", "a", "flneg", "flatten_param { axis: -3 end_axis: -2 }"),
    layer("fl33", "Flatten", "a", "fl33", "flatten_param { axis: 3 }"),
    layer("flall", "Flatten", "a", "flall", "flatten_param { axis: 0 }"),
    layer("fl", "Flatten", "a", "fl"),
    layer("flp", "Flatten", "p", "flp"),
    layer("flc", "Flatten", "c1", "flc"),
    layer("rs_ax", "Reshape", "a", "rs_ax",
          "reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 }"),
    layer("rs_b", "Reshape", "big", "rs_b", "reshape_param { shape { dim: 2 dim: -1 dim: 8 } }"),
    layer("rs_34", "Reshape", "m", "rs_34",
          "reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 4 } }"),
    layer("rs_24", "Reshape", "v", "rs_24",
          "reshape_param { shape { dim: 0 dim: 3 dim: 2 dim: 1 } }"),
    layer("rs_2p", "Reshape", "v", "rs_2p",
          "reshape_param { shape { dim: 0 dim: 6 dim: 1 dim: 1 } }"),
    layer("rs_ins", "Reshape", "a", "rs_ins",
          "reshape_param { shape { dim: 1 } axis: 1 num_axes: 0 }"),
    layer("rs_hw", "Reshape", "a", "rs_hw", "reshape_param { shape { dim: 2 dim: 10 } axis: 2 }"),
    layer("rs_c", "Reshape", "a", "rs_c",
          "reshape_param { shape { dim: 0 dim: 6 dim: 2 dim: -1 } }"),
    layer("rs_end", "Reshape", "a", "rs_end",
          "reshape_param { shape { dim: 5 dim: 1 } axis: -2 num_axes: 1 }"),
    layer("rs_one", "Reshape", "one", "rs_one",
          "reshape_param { shape { dim: 1 dim: -1 dim: 2 } }"),
    layer("pm1", "Permute", "a", "pm1", "permute_param { order: 0 order: 3 order: 1 order: 2 }"),
    layer("pm2", "Permute", "a", "pm2", "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
    layer("pm3", "Permute", "a", "pm3", "permute_param { order: 0 order: 1 order: 3 order: 2 }"),
    layer("pm4", "Permute", "m", "pm4", "permute_param { order: 0 order: 2 order: 1 }"),
    layer("pm5", "Permute", "a", "pm5", "permute_param { order: 1 order: 0 }"),
    layer("pm6", "Permute", "a", "pm6", "permute_param { order: 0 order: 1 order: 2 order: 3 }"),
    layer("pm7", "Permute", "f", "pm7",
          "permute_param { order: 0 order: 2 order: 1 order: 4 order: 3 }"),
    layer("rs_f", "Reshape", "f", "rs_f", "reshape_param { shape { dim: 0 dim: -1 dim: 3 "
                                          "dim: 4 } }"),
    layer("rs_tof", "Reshape", "a", "rs_tof", "reshape_param { shape { dim: 0 dim: 3 dim: 2 "
                                              "dim: 2 dim: -1 } }"),
])
RESHAPE_IN = {"a": (2, 3, 4, 5), "big": (4, 3, 7, 8), "m": (2, 6, 4), "v": (4, 6),
              "p": (2, 7, 1, 1), "c1": (2, 1, 3, 4), "one": (1, 6, 5, 4),
              "f": (2, 3, 2, 3, 4)}
case("tensor_reshape", RESHAPE_IN, RESHAPE)
case("tensor_reshape_batch", RESHAPE_IN, RESHAPE,
     batches={"a": 3, "big": 6, "m": 5, "v": 2, "p": 3, "c1": 1, "one": 1, "f": 1})

# ---- per-axis computations
AXIS = "".join([
    layer("sm0", "Softmax", "a", "sm0", "softmax_param { axis: 0 }"),
    layer("sm2", "Softmax", "a", "sm2", "softmax_param { axis: 2 }"),
    layer("sm3", "Softmax", "a", "sm3", "softmax_param { axis: -1 }"),
    layer("smm", "Softmax", "m", "smm", "softmax_param { axis: 2 }"),
    layer("smv", "Softmax", "v", "smv"),
    layer("am1", "ArgMax", "q", "am1", "argmax_param { axis: 1 top_k: 3 }"),
    layer("am1v", "ArgMax", "q", "am1v", "argmax_param { axis: 1 top_k: 2 out_max_val: true }"),
    layer("am3", "ArgMax", "q", "am3", "argmax_param { axis: 3 }"),
    layer("am2", "ArgMax", "q", "am2", "argmax_param { axis: -2 top_k: 3 }"),
    layer("am0", "ArgMax", "q", "am0", "argmax_param { axis: 0 }"),
    layer("amf", "ArgMax", "q", "amf", "argmax_param { top_k: 4 }"),
    layer("amfv", "ArgMax", "q", "amfv", "argmax_param { top_k: 3 out_max_val: true }"),
    layer("amf1", "ArgMax", "q", "amf1"),
    layer("amf1v", "ArgMax", "q", "amf1v", "argmax_param { out_max_val: true }"),
    layer("amv", "ArgMax", "v", "amv", "argmax_param { out_max_val: true top_k: 2 }"),
    layer("amm", "ArgMax", "mq", "amm", "argmax_param { axis: 2 top_k: 2 }"),
    layer("red0", "Reduction", "a", "red0"),
    layer("red1", "Reduction", "a", "red1", "reduction_param { operation: ASUM axis: 1 }"),
    layer("red3", "Reduction", "a", "red3", "reduction_param { operation: SUMSQ axis: -1 }"),
    layer("red2", "Reduction", "a", "red2", "reduction_param { operation: MEAN axis: 2 "
                                            "coeff: 0.5 }"),
    layer("red0m", "Reduction", "a", "red0m", "reduction_param { operation: MEAN coeff: 3 }"),
    layer("redm", "Reduction", "m", "redm", "reduction_param { operation: MEAN axis: 1 "
                                            "coeff: -2 }"),
    layer("redm2", "Reduction", "m", "redm2", "reduction_param { operation: SUM axis: 2 }"),
    layer("red5", "Reduction", "f", "red5", "reduction_param { operation: SUMSQ axis: -1 }"),
    layer("red5c", "Reduction", "f", "red5c", "reduction_param { operation: ASUM axis: 2 }"),
    layer("am5", "ArgMax", "f", "am5", "argmax_param { axis: 2 }"),
    layer("am5f", "ArgMax", "f", "am5f", "argmax_param { top_k: 2 out_max_val: true }"),
    layer("sm5", "Softmax", "f", "sm5", "softmax_param { axis: 3 }"),
    layer("tile1", "Tile", "a", "tile1", "tile_param { axis: 1 tiles: 3 }"),
    layer("tile3", "Tile", "a", "tile3", "tile_param { axis: 3 tiles: 2 }"),
    layer("tile2", "Tile", "a", "tile2", "tile_param { axis: 2 tiles: 2 }"),
    layer("tile0", "Tile", "a", "tile0", "tile_param { axis: 0 tiles: 2 }"),
    layer("tilev", "Tile", "v", "tilev", "tile_param { axis: -1 tiles: 2 }"),
])
AXIS_IN = {"a": (2, 3, 4, 5), "m": (2, 6, 4), "v": (4, 6), "q": (2, 5, 3, 4),
           "mq": (2, 3, 5), "f": (2, 3, 2, 3, 4)}
case("tensor_axis", AXIS_IN, AXIS, rounded=("q", "mq"))
case("tensor_axis_batch", AXIS_IN, AXIS, batches={"a": 3, "m": 1, "v": 2, "q": 3, "mq": 4, "f": 1},
     rounded=("q", "mq"))


def header(name, inputs):
    s = f'name: "{name}"\n'
    for blob, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        s += f'input: "{blob}"\ninput_shape {{ {dims} }}\n'
    return s


def main():
    only = set(sys.argv[1:])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, inputs, body, batches, rounded) in enumerate(CASES):
            if only and name not in only:
                continue
            proto = header(name, inputs) + body
            path = os.path.join(tmp, f"{name}.prototxt")
            with open(path, "w") as f:
                f.write(proto)
            caffe.set_random_seed(100 + i)
            net = caffe.Net(path, caffe.TEST)
            model = os.path.join(tmp, f"{name}.caffemodel")
            net.save(model)
            rng = np.random.default_rng(i)
            feed = {}
            for blob, shape in inputs.items():
                shape = ((batches or {}).get(blob, shape[0]),) + tuple(shape[1:])
                x = (rng.standard_normal(shape) * 2).astype(np.float32)
                if blob in rounded:
                    # ties for ArgMax, with -0 among them (Caffe treats it as 0)
                    x = np.round(x).astype(np.float32)
                net.blobs[blob].reshape(*shape)
                feed[blob] = x
            net.reshape()
            for blob, x in feed.items():
                net.blobs[blob].data[...] = x
            net.forward()
            out[f"{name}/prototxt"] = np.array(proto)
            with open(model, "rb") as f:
                out[f"{name}/caffemodel"] = np.frombuffer(f.read(), np.uint8)
            for blob, x in feed.items():
                out[f"{name}/in/{blob}"] = x
            for blob, b in net.blobs.items():
                if blob in feed or re.search(r"_split_\d+$", blob):
                    continue
                out[f"{name}/out/{blob}"] = b.data.copy()
            print(name, "ok", len(net.blobs), "blobs")
    np.savez_compressed(os.path.join(HERE, "tensor_goldens.npz"), **out)


if __name__ == "__main__":
    main()
