"""VGG16 (Simonyan & Zisserman, configuration D) as Caffe files with random weights:
the exact layer shapes of the released VGG_ILSVRC_16_layers model (138,357,544 params,
a 553 MB caffemodel), for benchmarks that must not depend on downloading it."""
from __future__ import annotations

import numpy as np

from caffe2keras.writer import CaffeNetWriter, Lazy

# (block, convs, channels)
BLOCKS = [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)]
PARAMS = 138_357_544


def vgg16(seed=0, batch=1) -> CaffeNetWriter:
    rng = np.random.default_rng(seed)

    def blob(*shape):
        # made while written, so writing holds one blob (at most fc6's 411 MB) at a time
        def make():
            a = rng.standard_normal(shape, dtype=np.float32)
            a *= 0.01  # in place: no second copy of fc6
            return a
        return Lazy(shape, make)

    net = CaffeNetWriter("VGG_ILSVRC_16_layers")
    net.input("data", (batch, 3, 224, 224), style="input_dim")
    bottom, c_in = "data", 3
    for block, n, c in BLOCKS:
        for i in range(1, n + 1):
            name = f"conv{block}_{i}"
            net.layer(name, "Convolution", bottom, name,
                      convolution_param={"num_output": c, "pad": [1], "kernel_size": [3]},
                      blobs=[blob(c, c_in, 3, 3), blob(c)])
            net.layer(f"relu{block}_{i}", "ReLU", name, name)
            bottom, c_in = name, c
        net.layer(f"pool{block}", "Pooling", bottom, f"pool{block}",
                  pooling_param={"pool": "MAX", "kernel_size": 2, "stride": 2})
        bottom = f"pool{block}"
    for name, k, n in (("fc6", 512 * 7 * 7, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)):
        net.layer(name, "InnerProduct", bottom, name,
                  inner_product_param={"num_output": n}, blobs=[blob(n, k), blob(n)])
        bottom = name
        if name != "fc8":
            net.layer(f"relu{name[2:]}", "ReLU", name, name)
            net.layer(f"drop{name[2:]}", "Dropout", name, name,
                      dropout_param={"dropout_ratio": 0.5})
    net.layer("prob", "Softmax", "fc8", "prob")
    return net
