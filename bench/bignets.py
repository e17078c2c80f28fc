"""Large nets as Caffe files with random weights, generated (never committed): the layer
structure and shapes of ResNet-50/101/152 (He et al., the MSRA deploy prototxts:
Convolution without bias + BatchNorm + Scale + ReLU), DenseNet-121 (Huang et al., the
pre-activation BatchNorm/Scale/ReLU/Convolution layers of the public Caffe port) and
Inception-ResNet-v2 (Szegedy et al., 299x299, residual scales 0.17/0.1/0.2 as Eltwise
coefficients), for benchmarks that must not depend on downloading them.

``resnet(depth, batchnorm=False)`` gives the ResNet with BatchNorm folded into biased
convolutions, as deployment prototxts often are: there every ReLU but the one after each
Eltwise directly follows a Convolution.
"""
from __future__ import annotations

import math

import numpy as np

from caffe2keras.writer import CaffeNetWriter, Lazy


class _Builder:
    """Adds layers to a CaffeNetWriter with seeded, He-scaled random weights (made while
    the caffemodel is written: one blob in memory at a time)."""

    def __init__(self, name, seed, batchnorm=True):
        self.net = CaffeNetWriter(name)
        self.seed = seed
        self.count = 0
        self.batchnorm = batchnorm
        self.params = 0

    def _blob(self, shape, std=None, fill=None):
        self.count += 1
        self.params += math.prod(shape)
        seed = (self.seed, self.count)

        def make():
            if fill is not None:
                return np.full(shape, fill, np.float32)
            a = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
            a *= std
            return a
        return Lazy(shape, make)

    def conv(self, name, bottom, c_in, c_out, k, stride=1, pad=None, relu=True, bias=None,
             bn=None):
        """Convolution (+ BatchNorm + Scale when batchnorm, else a bias) (+ ReLU in place).
        ``k`` and ``pad``: an int or (h, w); bn=False: no BatchNorm whatever the net has."""
        kh, kw = (k, k) if isinstance(k, int) else k
        if pad is None:
            pad = (kh // 2, kw // 2)
        ph, pw = (pad, pad) if isinstance(pad, int) else pad
        bias = not self.batchnorm if bias is None else bias
        cp = {"num_output": c_out, "bias_term": bias}
        if kh == kw:
            cp["kernel_size"] = [kh]
        else:
            cp.update(kernel_h=kh, kernel_w=kw)
        if ph == pw:
            if ph:
                cp["pad"] = [ph]
        else:
            cp.update(pad_h=ph, pad_w=pw)
        if stride != 1:
            cp["stride"] = [stride]
        blobs = [self._blob((c_out, c_in, kh, kw), std=math.sqrt(2.0 / (c_in * kh * kw)))]
        if bias:
            blobs.append(self._blob((c_out,), fill=0.0))
        self.net.layer(name, "Convolution", bottom, name, convolution_param=cp, blobs=blobs)
        if (self.batchnorm if bn is None else bn) and not bias:
            self.bn(name, name, c_out)
        if relu:
            self.net.layer(f"{name}_relu", "ReLU", name, name)
        return name

    def bn(self, name, blob, c):
        """BatchNorm + Scale in place on ``blob`` (the MSRA ResNet pattern)."""
        self.net.layer(f"{name}_bn", "BatchNorm", blob, blob,
                       batch_norm_param={"use_global_stats": True},
                       blobs=[self._blob((c,), fill=0.0), self._blob((c,), fill=1.0),
                              self._blob((1,), fill=1.0)])
        self.net.layer(f"{name}_scale", "Scale", blob, blob, scale_param={"bias_term": True},
                       blobs=[self._blob((c,), fill=1.0), self._blob((c,), fill=0.0)])

    def pool(self, name, bottom, k, stride, kind="MAX", pad=0, global_=False):
        p = {"pool": kind}
        if global_:
            p["global_pooling"] = True
        else:
            p.update(kernel_size=k, stride=stride)
            if pad:
                p["pad"] = pad
        self.net.layer(name, "Pooling", bottom, name, pooling_param=p)
        return name

    def fc(self, name, bottom, c_in, c_out):
        self.net.layer(name, "InnerProduct", bottom, name,
                       inner_product_param={"num_output": c_out},
                       blobs=[self._blob((c_out, c_in), std=math.sqrt(1.0 / c_in)),
                              self._blob((c_out,), fill=0.0)])
        return name

    def head(self, bottom, c):
        x = self.pool("pool_global", bottom, 0, 0, kind="AVE", global_=True)
        x = self.fc("fc1000", x, c, 1000)
        self.net.layer("prob", "Softmax", x, "prob")


RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def resnet(depth=152, batchnorm=True, seed=0, size=224) -> CaffeNetWriter:
    b = _Builder(f"ResNet-{depth}", seed, batchnorm)
    b.net.input("data", (1, 3, size, size))
    x = b.conv("conv1", "data", 3, 64, 7, stride=2, pad=3)
    x = b.pool("pool1", x, 3, 2)
    c_in = 64
    for stage, blocks in enumerate(RESNET_BLOCKS[depth], start=2):
        width = 64 * 2 ** (stage - 2)
        for i in range(blocks):
            name = f"res{stage}_{i}"
            stride = 2 if i == 0 and stage > 2 else 1
            short = x
            if i == 0:
                short = b.conv(f"{name}_branch1", x, c_in, 4 * width, 1, stride, relu=False)
            y = b.conv(f"{name}_branch2a", x, c_in, width, 1, stride)
            y = b.conv(f"{name}_branch2b", y, width, width, 3)
            y = b.conv(f"{name}_branch2c", y, width, 4 * width, 1, relu=False)
            b.net.layer(name, "Eltwise", [short, y], name)
            b.net.layer(f"{name}_relu", "ReLU", name, name)
            x, c_in = name, 4 * width
    b.head(x, c_in)
    b.net.params = b.params
    return b.net


def densenet121(seed=0, size=224, growth=32, blocks=(6, 12, 24, 16)) -> CaffeNetWriter:
    b = _Builder("DenseNet-121", seed)
    b.net.input("data", (1, 3, size, size))
    x = b.conv("conv1", "data", 3, 64, 7, stride=2, pad=3)
    x = b.pool("pool1", x, 3, 2, pad=1)
    c = 64
    for s, n in enumerate(blocks, start=2):
        for i in range(1, n + 1):
            name = f"conv{s}_{i}"
            # pre-activation: BatchNorm + Scale + ReLU on a copy of the concatenation
            pre = f"{name}_pre"
            b.net.layer(f"{pre}_bn", "BatchNorm", x, pre,
                        batch_norm_param={"use_global_stats": True},
                        blobs=[b._blob((c,), fill=0.0), b._blob((c,), fill=1.0),
                               b._blob((1,), fill=1.0)])
            b.net.layer(f"{pre}_scale", "Scale", pre, pre, scale_param={"bias_term": True},
                        blobs=[b._blob((c,), fill=1.0), b._blob((c,), fill=0.0)])
            b.net.layer(f"{pre}_relu", "ReLU", pre, pre)
            # conv_x1's BatchNorm + Scale + ReLU are conv_x2's pre-activation; conv_x2 has
            # none (the next layer's comes after the concatenation)
            y = b.conv(f"{name}_x1", pre, c, 4 * growth, 1)
            y = b.conv(f"{name}_x2", y, 4 * growth, growth, 3, relu=False, bn=False)
            b.net.layer(f"concat_{s}_{i}", "Concat", [x, y], f"concat_{s}_{i}")
            x, c = f"concat_{s}_{i}", c + growth
        if s < 1 + len(blocks):
            name = f"conv{s}_blk"
            b.net.layer(f"{name}_bn", "BatchNorm", x, f"{name}_bn",
                        batch_norm_param={"use_global_stats": True},
                        blobs=[b._blob((c,), fill=0.0), b._blob((c,), fill=1.0),
                               b._blob((1,), fill=1.0)])
            b.net.layer(f"{name}_scale", "Scale", f"{name}_bn", f"{name}_bn",
                        scale_param={"bias_term": True},
                        blobs=[b._blob((c,), fill=1.0), b._blob((c,), fill=0.0)])
            b.net.layer(f"{name}_relu", "ReLU", f"{name}_bn", f"{name}_bn")
            y = b.conv(name, f"{name}_bn", c, c // 2, 1, relu=False, bn=False)
            x, c = b.pool(f"pool{s}", y, 2, 2, kind="AVE"), c // 2
    b.bn("conv5_blk", x, c)
    b.net.layer("conv5_blk_relu", "ReLU", x, x)
    b.head(x, c)
    b.net.params = b.params
    return b.net


def inception_resnet_v2(seed=0, size=299, repeats=(10, 20, 10)) -> CaffeNetWriter:
    b = _Builder("Inception-ResNet-v2", seed)
    b.net.input("data", (1, 3, size, size))
    x = b.conv("conv1_3x3_s2", "data", 3, 32, 3, stride=2, pad=0)
    x = b.conv("conv2_3x3_s1", x, 32, 32, 3, pad=0)
    x = b.conv("conv3_3x3_s1", x, 32, 64, 3)
    x = b.pool("pool1_3x3_s2", x, 3, 2)
    x = b.conv("conv4_3x3_reduce", x, 64, 80, 1)
    x = b.conv("conv4_3x3", x, 80, 192, 3, pad=0)
    x = b.pool("pool2_3x3_s2", x, 3, 2)
    # Mixed_5b
    a = b.conv("m5b_1x1", x, 192, 96, 1)
    c5 = b.conv("m5b_5x5", b.conv("m5b_5x5_reduce", x, 192, 48, 1), 48, 64, 5)
    d = b.conv("m5b_3x3_reduce", x, 192, 64, 1)
    d = b.conv("m5b_3x3_2", b.conv("m5b_3x3", d, 64, 96, 3), 96, 96, 3)
    p = b.conv("m5b_pool_proj", b.pool("m5b_pool", x, 3, 1, kind="AVE", pad=1), 192, 64, 1)
    b.net.layer("m5b", "Concat", [a, c5, d, p], "m5b")
    x, c = "m5b", 320

    def residual(name, x, branches, c, scale, relu=True):
        b.net.layer(f"{name}_concat", "Concat", branches[0], f"{name}_concat")
        up = b.conv(f"{name}_up", f"{name}_concat", branches[1], c, 1, relu=False,
                    bias=True, bn=False)
        b.net.layer(name, "Eltwise", [x, up], name, eltwise_param={"coeff": [1.0, scale]})
        if relu:
            b.net.layer(f"{name}_relu", "ReLU", name, name)
        return name

    for i in range(repeats[0]):
        n = f"block35_{i}"
        b0 = b.conv(f"{n}_b0", x, c, 32, 1)
        b1 = b.conv(f"{n}_b1_3x3", b.conv(f"{n}_b1", x, c, 32, 1), 32, 32, 3)
        b2 = b.conv(f"{n}_b2_3x3_2", b.conv(f"{n}_b2_3x3", b.conv(f"{n}_b2", x, c, 32, 1),
                                            32, 48, 3), 48, 64, 3)
        x = residual(n, x, ([b0, b1, b2], 128), c, 0.17)
    # Mixed_6a
    a = b.conv("m6a_3x3", x, c, 384, 3, stride=2, pad=0)
    d = b.conv("m6a_3x3_2_reduce", x, c, 256, 1)
    d = b.conv("m6a_3x3_2", b.conv("m6a_3x3_2_a", d, 256, 256, 3), 256, 384, 3, stride=2,
               pad=0)
    p = b.pool("m6a_pool", x, 3, 2)
    b.net.layer("m6a", "Concat", [a, d, p], "m6a")
    x, c = "m6a", 384 + 384 + c
    for i in range(repeats[1]):
        n = f"block17_{i}"
        b0 = b.conv(f"{n}_b0", x, c, 192, 1)
        b1 = b.conv(f"{n}_b1", x, c, 128, 1)
        b1 = b.conv(f"{n}_b1_7x1", b.conv(f"{n}_b1_1x7", b1, 128, 160, (1, 7)),
                    160, 192, (7, 1))
        x = residual(n, x, ([b0, b1], 384), c, 0.1)
    # Mixed_7a
    a = b.conv("m7a_a", b.conv("m7a_a_reduce", x, c, 256, 1), 256, 384, 3, stride=2, pad=0)
    e = b.conv("m7a_b", b.conv("m7a_b_reduce", x, c, 256, 1), 256, 288, 3, stride=2, pad=0)
    d = b.conv("m7a_c_2", b.conv("m7a_c", b.conv("m7a_c_reduce", x, c, 256, 1),
                                 256, 288, 3), 288, 320, 3, stride=2, pad=0)
    p = b.pool("m7a_pool", x, 3, 2)
    b.net.layer("m7a", "Concat", [a, e, d, p], "m7a")
    x, c = "m7a", 384 + 288 + 320 + c
    for i in range(repeats[2]):
        n = f"block8_{i}"
        b0 = b.conv(f"{n}_b0", x, c, 192, 1)
        b1 = b.conv(f"{n}_b1", x, c, 192, 1)
        b1 = b.conv(f"{n}_b1_3x1", b.conv(f"{n}_b1_1x3", b1, 192, 224, (1, 3)),
                    224, 256, (3, 1))
        x = residual(n, x, ([b0, b1], 448), c, 0.2, relu=i < repeats[2] - 1)
    x = b.conv("conv_final", x, c, 1536, 1)
    b.head(x, 1536)
    b.net.params = b.params
    return b.net


NETS = {
    "resnet152": lambda: resnet(152),
    "densenet121": densenet121,
    "inception_resnet_v2": inception_resnet_v2,
}
