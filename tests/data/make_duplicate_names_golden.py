"""Make tests/data/duplicate_names_golden.npz: a small net whose layers share names (two
Convolutions named 'conv', two Crops named 'crop', as HED's deploy has), saved and
reloaded by REAL Caffe (pycaffe), to pin down where Caffe puts the weights:

    PYTHONPATH=/tmp/caffe-build/src/python LD_LIBRARY_PATH=/tmp/caffe-build/libs \\
        GLOG_minloglevel=2 /usr/bin/python3 tests/data/make_duplicate_names_golden.py

The caffemodel Caffe saves holds two 'conv' entries (values A, then B). Loading it, Caffe
copies both into the FIRST 'conv' (so it ends with B) and leaves the second 'conv' with
its constant fillers. The archive holds ``prototxt``, ``caffemodel`` (bytes), ``A``/``B``
(the first entry's and second entry's weight blob 0), ``first_conv_w`` (what the first
'conv' holds after loading), ``in/data`` and ``out/BLOB`` (every blob after forward).
"""
import os
import tempfile

import caffe
import numpy as np

caffe.set_mode_cpu()
HERE = os.path.dirname(os.path.abspath(__file__))

PROTOTXT = """name: "duplicate_names"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "act" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "conv" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "constant" value: 0.05 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool" type: "Pooling" bottom: "c2" top: "p"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "crop" type: "Crop" bottom: "c2" bottom: "p" top: "k1"
  crop_param { axis: 2 offset: 1 } }
layer { name: "crop" type: "Crop" bottom: "c1" bottom: "p" top: "k2"
  crop_param { axis: 2 offset: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "k1" bottom: "k2" top: "out" }
"""


def main():
    rng = np.random.default_rng(10)
    out = {"prototxt": np.array(PROTOTXT)}
    with tempfile.TemporaryDirectory() as tmp:
        proto = os.path.join(tmp, "net.prototxt")
        weights = os.path.join(tmp, "net.caffemodel")
        with open(proto, "w") as f:
            f.write(PROTOTXT)
        net = caffe.Net(proto, caffe.TEST)
        convs = [i for i, n in enumerate(net._layer_names) if n == "conv"]
        assert len(convs) == 2
        for key, i in zip("AB", convs):  # distinct values in the two saved entries
            for j, blob in enumerate(net.layers[i].blobs):
                blob.data[...] = rng.normal(0, 0.3, blob.data.shape)
            out[key] = net.layers[i].blobs[0].data.copy()
        net.save(weights)
        with open(weights, "rb") as f:
            out["caffemodel"] = np.frombuffer(f.read(), np.uint8)
        loaded = caffe.Net(proto, caffe.TEST, weights=weights)
        out["first_conv_w"] = loaded.layers[convs[0]].blobs[0].data.copy()
        out["second_conv_w"] = loaded.layers[convs[1]].blobs[0].data.copy()
        x = rng.normal(0, 1, (1, 4, 6, 6)).astype(np.float32)
        loaded.blobs["data"].data[...] = x
        loaded.forward()
        out["in/data"] = x
        for name, blob in loaded.blobs.items():
            out[f"out/{name}"] = blob.data.copy()
    np.savez_compressed(os.path.join(HERE, "duplicate_names_golden.npz"), **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main()
