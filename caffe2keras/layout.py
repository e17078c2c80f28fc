"""The one place for Caffe's layout versus Keras's, and the pure weight-kernel transforms.

Convention: a 4-D Caffe blob (N, C, H, W) is NHWC in Keras, i.e. ``caffe.transpose(0, 2,
3, 1)``; a blob of any other rank keeps Caffe's axis order. Everything here is numpy (or
plain tuples) and needs no Keras: converters, weights functions, weight export,
keras2-h5, verify and the tests all use these same functions.
"""
from __future__ import annotations

import numpy as np

from .pages import release

NCHW_TO_NHWC = (0, 2, 3, 1)   # keras = caffe.transpose(NCHW_TO_NHWC)
NHWC_TO_NCHW = (0, 3, 1, 2)   # caffe = keras.transpose(NHWC_TO_NCHW)
OIHW_TO_HWIO = (2, 3, 1, 0)   # Caffe conv kernel -> Keras Conv2D kernel


# ------------------------------------------------------------------ axes and shapes

def keras_axis(caffe_axis: int, ndim: int) -> int:
    """The Keras axis holding Caffe axis ``caffe_axis`` (canonical, >= 0) of an
    ``ndim``-D blob."""
    return NHWC_TO_NCHW[caffe_axis] if ndim == 4 else caffe_axis


def caffe_axis(keras_ax: int, ndim: int) -> int:
    """The Caffe axis held by Keras axis ``keras_ax`` (canonical, >= 0) of an ``ndim``-D
    blob."""
    return NCHW_TO_NHWC[keras_ax] if ndim == 4 else keras_ax


def keras_order(ndim: int) -> list:
    """Caffe axis held by each Keras axis of an ``ndim``-D blob."""
    return list(NCHW_TO_NHWC) if ndim == 4 else list(range(ndim))


def channel_axis(ndim: int) -> int:
    """Keras axis of Caffe's channel axis (1): last for 4-D blobs, else 1."""
    return -1 if ndim == 4 else 1


def keras_shape(shape) -> tuple:
    """Keras layout of a Caffe shape (4-D NCHW -> NHWC; other ranks unchanged)."""
    s = tuple(shape)
    return (s[0], s[2], s[3], s[1]) if len(s) == 4 else s


def caffe_shape(shape) -> tuple:
    """Caffe layout of a Keras shape (4-D NHWC -> NCHW; other ranks unchanged)."""
    s = tuple(shape)
    return (s[0], s[3], s[1], s[2]) if len(s) == 4 else s


def same_memory_order(shape) -> bool:
    """Whether a 4-D Caffe shape lists its values in the same order as NCHW and NHWC
    (one channel, or 1x1 maps): its layout change is a mere reshape."""
    return len(shape) != 4 or shape[1] == 1 or shape[2] * shape[3] == 1


# ------------------------------------------------------------------ blobs

def to_keras(blob) -> np.ndarray:
    """A Caffe blob (NCHW if 4-D) in Keras's layout."""
    a = np.asarray(blob)
    return a.transpose(NCHW_TO_NHWC) if a.ndim == 4 else a


def to_caffe(tensor) -> np.ndarray:
    """A Keras tensor value (NHWC if 4-D) in Caffe's layout."""
    a = np.asarray(tensor)
    return a.transpose(NHWC_TO_NCHW) if a.ndim == 4 else a


# ------------------------------------------------------------------ weight kernels

ALIGN = 64          # bytes: JAX and TensorFlow on CPU adopt a 64-byte aligned buffer
TILE_VALUES = 1 << 18   # values per tile of the blocked transposes (1 MB of float32)


class _AlignedBuffer(np.ndarray):
    """The memory behind aligned_empty's arrays. Its type marks the arrays made here (see
    is_fresh); it is only ever reachable as their ``.base``."""


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ALIGN-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = _AlignedBuffer(nbytes + ALIGN, np.uint8)
    off = (-buf.ctypes.data) % ALIGN
    return np.ndarray(shape, dtype, buffer=buf, offset=off)


def is_aligned(a) -> bool:
    return isinstance(a, np.ndarray) and a.flags.c_contiguous and a.ctypes.data % ALIGN == 0


def is_fresh(a) -> bool:
    """Whether ``a`` is an aligned array whose memory aligned_empty allocated: a kernel
    made by the transforms below, which nothing but its receiver holds. A Keras variable
    may take such an array over as its own memory (keras_compat.variable_value); any
    other array (a caffemodel blob, a caller's array) is copied first."""
    if not is_aligned(a):
        return False
    base = a
    while isinstance(base, np.ndarray) and not isinstance(base, _AlignedBuffer):
        base = base.base
    return isinstance(base, _AlignedBuffer)


def rows_to_last(w, inner) -> np.ndarray:
    """(N, C, *inner) -> (*inner, C, N), a new aligned C-contiguous array. Copied in tiles
    of about TILE_VALUES (rows x channels) so reads and writes both stay in cache: numpy's
    plain strided copy of fc6 (4096 x 25088) is ~5x slower. The mapped caffemodel pages of
    each block of rows are dropped once copied (pages.release: the file keeps them)."""
    w = np.asarray(w)
    n, c = w.shape[:2]
    s = int(np.prod(inner, dtype=np.int64))
    src = w.reshape(n, c, s)
    out = aligned_empty((s, c, n), w.dtype)
    rb = min(n, 128)
    cb = min(c, max(8, TILE_VALUES // (rb * max(s, 1))))
    for r0 in range(0, n, rb):
        r1 = min(n, r0 + rb)
        for c0 in range(0, c, cb):
            out[:, c0:c0 + cb, r0:r1] = src[r0:r1, c0:c0 + cb].transpose(2, 1, 0)
        if w.flags.c_contiguous:
            release([w[r0:r1]])
    return out.reshape(*inner, c, n)


def conv_kernel(w) -> np.ndarray:
    """Caffe Convolution (C_out, C_in/g, kh, kw) -> Keras Conv2D (kh, kw, C_in/g, C_out).
    No flip: both compute a cross-correlation. Grouped: Conv2D(groups=g)'s own layout."""
    w = np.asarray(w)
    return rows_to_last(w, w.shape[2:])


def depthwise_kernel(w, in_channels: int) -> np.ndarray:
    """Caffe depthwise (C*m, 1, kh, kw), output c*m + j reading input c -> Keras
    DepthwiseConv2D (kh, kw, C, m)."""
    w = np.asarray(w)
    return w.reshape(in_channels, -1, *w.shape[2:]).transpose(2, 3, 0, 1)


def deconv_kernel(w) -> np.ndarray:
    """Caffe Deconvolution (C_in, C_out/g, kh, kw) -> Keras (kh, kw, C_out/g, C_in).
    No flip: both layers scatter each input pixel through the kernel the same way."""
    w = np.asarray(w)
    return rows_to_last(w, w.shape[2:])


def deconv_kernel_ungrouped(w, groups: int) -> np.ndarray:
    """A grouped Caffe Deconvolution (C_in, C_out/g, kh, kw) as the equivalent full
    Conv2DTranspose kernel (kh, kw, C_out, C_in), zero between groups."""
    w = np.asarray(w)
    if groups == 1:
        return deconv_kernel(w)
    c_in, co_g = w.shape[:2]
    ci_g = c_in // groups
    kernel = np.zeros((*w.shape[2:], co_g * groups, c_in), dtype=w.dtype)
    for j in range(groups):
        kernel[:, :, j * co_g:(j + 1) * co_g, j * ci_g:(j + 1) * ci_g] = \
            deconv_kernel(w[j * ci_g:(j + 1) * ci_g])
    return kernel


def dense_kernel_after_conv(w, chw) -> np.ndarray:
    """InnerProduct (N, C*H*W) after a 4-D blob -> Dense kernel (H*W*C, N): Keras's
    Flatten walks the NHWC tensor in H, W, C order where Caffe walks C, H, W, so the
    kernel rows are permuted to match (the tensor itself needs no transpose)."""
    w = np.asarray(w)
    n = w.shape[0]
    c, h, wd = chw
    return rows_to_last(w.reshape(n, c, h, wd), (h, wd)).reshape(h * wd * c, n)


def dense_kernel(w) -> np.ndarray:
    """InnerProduct (N, K) -> Dense kernel (K, N)."""
    w = np.asarray(w)
    return rows_to_last(w, ()).reshape(w.shape[1], w.shape[0])
