"""Images as pycaffe reads them: loading (Pillow), resizing (three methods, numpy only)
and centre-cropping. preprocess.py builds on these."""
from __future__ import annotations

import numpy as np

from .errors import CaffeFormatError, UserInputError

RESIZE_METHODS = {
    "skimage": "linear with Gaussian anti-aliasing, reflected borders: "
               "skimage.transform.resize's defaults",
    "pycaffe": "linear with anti-aliasing, zero borders: caffe.io.resize_image "
               "(mode='constant') with scikit-image >= 0.15",
    "pillow": "Pillow's bilinear resize (what open_nsfw's classify_nsfw.py uses)",
}
CHANNEL_ORDERS = ("BGR", "RGB")


# --- resizing -------------------------------------------------------------------------

def _extend(idx, n, mode):
    """Map (possibly out-of-range) indices into [0, n) the way scipy.ndimage extends an
    axis; also returns which entries are inside (all, except for constant mode)."""
    idx = np.asarray(idx)
    if mode == "constant":
        valid = (idx >= 0) & (idx < n)
        return np.clip(idx, 0, n - 1), valid
    if n == 1:
        return np.zeros_like(idx), np.ones(idx.shape, bool)
    if mode == "mirror":        # d c b | a b c d | c b a   (numpy.pad 'reflect')
        period = 2 * n - 2
        i = np.mod(idx, period)
        i = np.where(i >= n, period - i, i)
    elif mode == "reflect":     # c b a | a b c d | d c b   (numpy.pad 'symmetric')
        period = 2 * n
        i = np.mod(idx, period)
        i = np.where(i >= n, period - 1 - i, i)
    elif mode == "nearest":
        i = np.clip(idx, 0, n - 1)
    else:
        raise ValueError(f"unknown border mode {mode!r}")
    return i, np.ones(idx.shape, bool)


def _gaussian_operator(n, sigma, mode):
    """(n, n) matrix of scipy.ndimage.gaussian_filter1d (truncate 4.0) along one axis."""
    if sigma <= 1e-15:
        return np.eye(n)
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    op = np.zeros((n, n))
    rows = np.arange(n)
    for k, w in zip(offsets, weights):
        cols, valid = _extend(rows + k, n, mode)
        np.add.at(op, (rows[valid], cols[valid]), w)
    return op


def _linear_operator(n_in, n_out, mode):
    """(n_out, n_in) matrix of order-1 scipy.ndimage.zoom with grid_mode=True: output
    pixel centres map onto input pixel centres, (o + 0.5) * n_in / n_out - 0.5."""
    coord = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    lo = np.floor(coord).astype(np.int64)
    t = coord - lo
    op = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    for idx, w in ((lo, 1.0 - t), (lo + 1, t)):
        cols, valid = _extend(idx, n_in, mode)
        np.add.at(op, (rows[valid], cols[valid]), w[valid])
    return op


def _skimage_resize(image, size, mode):
    """skimage.transform.resize(image, size, order=1, mode=..., anti_aliasing=None) for a
    float (H, W, C) image, as two separable linear operators (exact to float rounding)."""
    ndi_mode = {"reflect": "mirror", "constant": "constant"}[mode]
    x = image.astype(np.float64)
    (h_in, w_in), (h_out, w_out) = image.shape[:2], size
    antialias = h_out < h_in or w_out < w_in
    ops = []
    for n_in, n_out in ((h_in, h_out), (w_in, w_out)):
        op = _linear_operator(n_in, n_out, ndi_mode)
        if antialias:
            sigma = max(0.0, (n_in / n_out - 1) / 2)
            op = op @ _gaussian_operator(n_in, sigma, ndi_mode)
        ops.append(op)
    out = np.einsum("oh,hwc->owc", ops[0], x)
    out = np.einsum("pw,owc->opc", ops[1], out)
    lo, hi = float(x.min()), float(x.max())
    if mode == "constant":      # skimage clips to the input's range, the zero border included
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return np.clip(out, lo, hi)


def resize_image(image, size, method="skimage"):
    """Resize an (H, W, C) image to ``size`` = (height, width). Float images keep their
    value range; "pillow" takes uint8 (or float, resized per channel in Pillow's 'F'
    mode). Returns float32."""
    size = (int(size[0]), int(size[1]))
    image = np.asarray(image)
    if image.ndim != 3:
        raise UserInputError(f"expected an (H, W, C) image, got shape {image.shape}")
    if method in ("skimage", "pycaffe"):
        mode = "reflect" if method == "skimage" else "constant"
        return _skimage_resize(image, size, mode).astype(np.float32)
    if method == "pillow":
        from PIL import Image
        if image.dtype == np.uint8 and image.shape[2] in (1, 3):
            pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
            out = np.asarray(pil.resize(size[::-1], resample=Image.BILINEAR))
            return out.reshape(size[0], size[1], -1).astype(np.float32)
        chans = [np.asarray(Image.fromarray(np.ascontiguousarray(image[:, :, c], np.float32))
                            .resize(size[::-1], resample=Image.BILINEAR))
                 for c in range(image.shape[2])]
        return np.stack(chans, axis=-1).astype(np.float32)
    raise UserInputError(f"unknown resize method {method!r}; "
                         f"use one of {', '.join(RESIZE_METHODS)}")


def center_crop(image, size):
    """The centre ``size`` = (h, w) of an (H, W, ...) array, offsets (H - h) // 2 as
    Caffe's DataTransformer crops at test time."""
    h, w = size
    hh, ww = image.shape[:2]
    if h > hh or w > ww:
        raise UserInputError(f"cannot crop {h}x{w} out of {hh}x{ww}")
    top, left = (hh - h) // 2, (ww - w) // 2
    return image[top:top + h, left:left + w]


# --- reading images and means -----------------------------------------------------------

def load_image(src, channels=3):
    """An image as an (H, W, channels) array, RGB (or one intensity channel): a path or
    file object (read with Pillow), a PIL image, or an array (uint8 or float, HW or HWC;
    an alpha channel is dropped, gray is repeated to RGB, RGB becomes luma for
    ``channels=1``)."""
    if isinstance(src, np.ndarray):
        img = src
    else:
        try:
            from PIL import Image
        except ImportError:
            raise ImportError("reading images needs Pillow: pip install "
                              "'caffe2keras[images]'") from None
        if isinstance(src, Image.Image):
            pil = src
        else:
            try:
                pil = Image.open(src)
                pil.load()
            except FileNotFoundError:
                raise CaffeFormatError("no such image file", path=src) from None
            except OSError as e:
                raise CaffeFormatError(f"cannot read as an image: {e}", path=src) from None
        pil = pil.convert("L" if channels == 1 else "RGB")
        img = np.asarray(pil)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise UserInputError(f"expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.shape[2] == channels:
        return img
    if img.shape[2] == 1:
        return np.repeat(img, channels, axis=2)
    if channels == 1 and img.shape[2] == 3:    # ITU-R 601 luma, as Pillow's convert("L")
        luma = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return luma[:, :, None].astype(img.dtype if img.dtype != np.uint8 else np.float32)
    raise UserInputError(f"image has {img.shape[2]} channels, the net takes {channels}")
