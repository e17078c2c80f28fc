"""What caffe2keras's custom Keras layers cost, next to Keras built-ins doing similar work.

    python bench/bench_layers.py [--backends jax,tensorflow,torch] [--json out.json]

Each case is a one-layer Caffe net (fresh weights) on a realistic feature map, converted
and run batch-1 with `predict_on_batch` (compiled: jax.jit / tf.function; torch eager),
median of 20 after warm-up, in a fresh process per backend. "keras" names the Keras layer
classes the case became, so a custom layer and its built-in neighbour can be compared.
The last rows are whole zoo nets, for scale.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ZOO = ROOT.parent / "shared" / "caffe-models"

CASES = [  # name, input NCHW, layer text (bottom "data", top "y")
    ("max pool 3/2, ceil overhang", (1, 64, 112, 112),
     'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }'),
    ("max pool 2/2 (built-in)", (1, 64, 112, 112),
     'type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }'),
    ("ave pool 3/1 pad 1", (1, 256, 28, 28),
     'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 }'),
    ("ave pool 2/2 (built-in)", (1, 256, 28, 28),
     'type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 2 }'),
    ("LRN across 5", (1, 96, 55, 55), 'type: "LRN" lrn_param { local_size: 5 alpha: 1e-4 }'),
    ("LRN within 3", (1, 32, 16, 16),
     'type: "LRN" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }'),
    ("deconv depthwise k4 s2", (1, 21, 64, 64),
     ('type: "Deconvolution" convolution_param { num_output: 21 group: 21 kernel_size: 4 '
     'stride: 2 pad: 1 bias_term: false weight_filler { type: "bilinear" } }')),
    ("deconv k4 s2 (built-in)", (1, 21, 64, 64),
     ('type: "Deconvolution" convolution_param { num_output: 21 kernel_size: 4 stride: 2 '
     'pad: 1 bias_term: false }')),
    ("Scale + bias", (1, 256, 56, 56), 'type: "Scale" scale_param { bias_term: true }'),
    ("Eltwise SUM coeff", (1, 128, 56, 56), None),
    ("Normalize (SSD conv4_3)", (1, 512, 38, 38),
     'type: "Normalize" norm_param { across_spatial: false channel_shared: false }'),
    ("Interp zoom 2", (1, 21, 64, 64), 'type: "Interp" interp_param { zoom_factor: 2 }'),
    ("ShuffleChannel g3", (1, 240, 28, 28),
     'type: "ShuffleChannel" shuffle_channel_param { group: 3 }'),
    ("Flatten after conv", (1, 512, 7, 7), 'type: "Flatten"'),
    ("ArgMax over channels", (1, 21, 512, 512), 'type: "ArgMax" argmax_param { axis: 1 }'),
    ("BNLL", (1, 128, 56, 56), 'type: "BNLL"'),
    ("ReLU (built-in)", (1, 128, 56, 56), 'type: "ReLU"'),
]
NETS = [  # whole nets: (name, prototxt, caffemodel or None, input blob, NCHW shape)
    ("GoogLeNet (fresh)", "_prototxt_only/bvlc_googlenet_deploy.prototxt", None, "data",
     (1, 3, 224, 224)),
    ("MobileNet-SSD (fresh)", "_prototxt_only/MobileNetSSD_deploy.prototxt", None, "data",
     (1, 3, 300, 300)),
    ("open_nsfw ResNet-50/2", "open_nsfw/deploy.prototxt",
     "open_nsfw/resnet_50_1by2_nsfw.caffemodel", "data", (1, 3, 224, 224)),
]


def _prototxt(shape, text):
    dims = " ".join(f"dim: {d}" for d in shape)
    head = f'input: "data" input_shape {{ {dims} }}\n'
    if text is None:  # Eltwise with coefficients needs two bottoms
        return head + ('layer { name: "s" type: "Sigmoid" bottom: "data" top: "s" }\n'
                       'layer { name: "y" type: "Eltwise" bottom: "data" bottom: "s" top: "y" '
                       'eltwise_param { coeff: 1 coeff: -0.5 } }\n')
    return head + f'layer {{ name: "y" bottom: "data" top: "y" {text} }}\n'


def _time(model, feed, runs=20):
    import keras

    for _ in range(3):
        keras.ops.convert_to_numpy(next(iter(model.predict_on_batch(feed).values())))
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        keras.ops.convert_to_numpy(next(iter(model.predict_on_batch(feed).values())))
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def child():
    import warnings

    import numpy as np

    import caffe2keras

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, shape, text in CASES:
            path = Path(d) / "n.prototxt"
            path.write_text(_prototxt(shape, text))
            model = caffe2keras.convert(path, seed=0)
            x = rng.standard_normal((shape[0], shape[2], shape[3], shape[1])).astype("f4")
            classes = sorted({type(lay).__name__ for lay in model.layers[1:]})
            rows.append({"case": name, "ms": 1e3 * _time(model, {"data": x}),
                         "keras": ", ".join(classes)})
    for name, deploy, weights, blob, shape in NETS:
        model = caffe2keras.convert(ZOO / deploy, weights and ZOO / weights, seed=0)
        x = rng.uniform(-50, 50, (shape[0], shape[2], shape[3], shape[1])).astype("f4")
        rows.append({"case": name, "ms": 1e3 * _time(model, {blob: x}, runs=10),
                     "keras": "whole net"})
    print(json.dumps(rows))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="jax,tensorflow,torch")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    backends = args.backends.split(",")
    results = {}
    for b in backends:
        env = dict(os.environ, KERAS_BACKEND=b, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = subprocess.run([sys.executable, __file__, "--child"], env=env, text=True,
                             capture_output=True, check=False)
        if out.returncode:
            raise SystemExit(f"{b} failed:\n{out.stderr[-3000:]}")
        results[b] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"batch 1, ms per predict_on_batch (median); load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':<30}" + "".join(f"{b:>12}" for b in backends) + "   keras layers")
    for i, row in enumerate(results[backends[0]]):
        cells = "".join(f"{results[b][i]['ms']:>12.2f}" for b in backends)
        print(f"{row['case']:<30}{cells}   {row['keras']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child()
    else:
        main()
