"""Caffe's shape inference (NCHW, as Caffe's Reshape()): ``infer`` and the helpers that
shape functions and converters share (conv/pool geometry, slice points, crop offsets...).

Each type's shape function lives in its record (``LayerType.shape``, registered next to
its converter in ``emit/converters/``): it takes the layer and its bottom shapes and
returns (top shapes, parameter blob shapes). A dimension that only the data decides
(DetectionOutput's row count) is ``None``. Inconsistent settings raise ShapeError (a
CaffeFormatError) naming the layer.
"""
from __future__ import annotations

import itertools
import math

from .errors import CaffeFormatError


class ShapeError(CaffeFormatError):
    pass


def shape_fail(layer, msg):
    """Raise a ShapeError naming the layer and its line:column."""
    raise ShapeError(msg, layer=layer.name, position=layer.position or None)


def canonical_axis(layer, axis, ndim, what="axis"):
    if not -ndim <= axis < ndim:
        shape_fail(layer, f"{what} {axis} is out of range for a {ndim}-D input")
    return axis + ndim if axis < 0 else axis


def check_rank(layer, shape, ndim, what="input"):
    if len(shape) != ndim:
        shape_fail(layer, f"{layer.type} needs a {ndim}-D {what}, found {len(shape)}-D "
                      f"{list(shape)}")


def check_bottoms(layer, bottoms, lo, hi=None):
    hi = lo if hi is None else hi
    if not lo <= len(bottoms) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        shape_fail(layer, f"{layer.type} takes {want} bottoms, found {len(bottoms)}")


def _spatial_pairs(layer, p, name, default, hname, wname, alone=False):
    """Caffe's (h, w) from `name` (0, 1 or 2 values) or `name_h`/`name_w` (``alone``: one
    of the two may be given, the other keeps its default, as convolution's pad_h/pad_w)."""
    if p.has(hname) or p.has(wname):
        if alone:
            return int(getattr(p, hname)), int(getattr(p, wname))
        if not (p.has(hname) and p.has(wname)):
            shape_fail(layer, f"{hname} and {wname} must be given together")
        return int(getattr(p, hname)), int(getattr(p, wname))
    vals = getattr(p, name)
    if isinstance(vals, list):
        if len(vals) == 0:
            return default, default
        if len(vals) == 1:
            return int(vals[0]), int(vals[0])
        if len(vals) == 2:
            return int(vals[0]), int(vals[1])
        shape_fail(layer, f"{name} has {len(vals)} values; 2-D layers take 1 or 2")
    if not p.has(name) and default is not None:
        return default, default
    return int(vals), int(vals)


def conv_geometry(layer):
    """(kernel, stride, pad, dilation) as (h, w) pairs for Convolution/Deconvolution."""
    p = layer.param("convolution_param")
    if not (p.kernel_size or p.has("kernel_h") or p.has("kernel_w")):
        shape_fail(layer, "convolution_param needs kernel_size (or kernel_h and kernel_w)")
    k = _spatial_pairs(layer, p, "kernel_size", None, "kernel_h", "kernel_w")
    s = _spatial_pairs(layer, p, "stride", 1, "stride_h", "stride_w")
    pad = _spatial_pairs(layer, p, "pad", 0, "pad_h", "pad_w", alone=True)
    d = _dil(layer, p)
    if min(k) <= 0 or min(s) <= 0 or min(d) <= 0:
        shape_fail(layer, f"kernel {k}, stride {s} and dilation {d} must be positive")
    return k, s, pad, d


def _dil(layer, p):
    vals = p.dilation
    if len(vals) == 0 and (p.has("hole") or p.has("hole_h") or p.has("hole_w")):
        # DeepLab's fork names the dilation "hole" (im2col with holes): the same geometry
        hole = int(p.hole) if p.has("hole") else 1
        return (int(p.hole_h) if p.has("hole_h") else hole,
                int(p.hole_w) if p.has("hole_w") else hole)
    if len(vals) == 0:
        return 1, 1
    if len(vals) == 1:
        return int(vals[0]), int(vals[0])
    if len(vals) == 2:
        return int(vals[0]), int(vals[1])
    shape_fail(layer, f"dilation has {len(vals)} values; 2-D layers take 1 or 2")


def pool_geometry(layer, shape):
    """(kernel, stride, pad, ceil) for Pooling on an NCHW ``shape``."""
    p = layer.param("pooling_param")
    if p.global_pooling:
        if p.has("kernel_size") or p.has("kernel_h"):
            shape_fail(layer, "global_pooling takes no kernel size")
        k = (shape[2], shape[3])
        s, pad = (1, 1), (0, 0)
        if any(p.has(f) for f in ("pad", "pad_h", "pad_w")) and (p.pad or p.pad_h or p.pad_w):
            shape_fail(layer, "global_pooling needs pad 0")
    else:
        if not (p.has("kernel_size") or p.has("kernel_h")):
            shape_fail(layer, "pooling_param needs kernel_size (or kernel_h and kernel_w)")
        k = _spatial_pairs(layer, p, "kernel_size", None, "kernel_h", "kernel_w")
        s = _spatial_pairs(layer, p, "stride", 1, "stride_h", "stride_w")
        pad = _spatial_pairs(layer, p, "pad", 0, "pad_h", "pad_w")
    if min(k) <= 0 or min(s) <= 0:
        shape_fail(layer, f"kernel {k} and stride {s} must be positive")
    if pad[0] >= k[0] or pad[1] >= k[1]:
        shape_fail(layer, f"pad {pad} must be smaller than the kernel {k}")
    return k, s, pad, pooling_rounds_up(layer)


def pooling_rounds_up(layer) -> bool:
    """Caffe rounds pooled sizes up (CEIL); BVLC's round_mode FLOOR and forks'
    ceil_mode false round down."""
    p = layer.param("pooling_param")
    if p.has("ceil_mode"):
        return bool(p.ceil_mode)
    if p.has("round_mode"):
        return p.round_mode == "CEIL"
    return True


def pooled_size(size, k, s, pad, ceil):
    """Caffe's pooled output length: ceil (or floor), then drop a last window that
    would start inside the padding."""
    span = size + 2 * pad - k
    o = (-(-span // s) if ceil else span // s) + 1
    if pad and (o - 1) * s >= size + pad:
        o -= 1
    return o


def same_shape(layer, bottoms):
    """The shape function of a one-bottom layer whose tops all keep its shape."""
    check_bottoms(layer, bottoms, 1)
    return [tuple(bottoms[0])] * max(1, len(layer.tops)), []


def slice_points(layer, shape):
    """(axis, [(start, stop), ...]) of each top of a Slice layer."""
    p = layer.param("slice_param")
    axis = p.slice_dim if p.has("slice_dim") and not p.has("axis") else p.axis
    axis = canonical_axis(layer, axis, len(shape))
    size, n = shape[axis], len(layer.tops)
    if n == 0:
        shape_fail(layer, "Slice needs at least one top")
    pts = [int(x) for x in p.slice_point]
    if pts:
        if len(pts) != n - 1:
            shape_fail(layer, f"{n} tops need {n - 1} slice_points, found {len(pts)}")
        bounds = [0] + pts + [size]
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            shape_fail(layer, f"slice_points {pts} must increase strictly inside (0, {size})")
    else:
        if size % n:
            shape_fail(layer, f"axis {axis} of size {size} does not split evenly into {n} tops")
        bounds = [i * size // n for i in range(n + 1)]
    return axis, list(itertools.pairwise(bounds))


def crop_offsets(layer, shape, ref):
    p = layer.param("crop_param")
    axis = canonical_axis(layer, p.axis, len(shape))
    n = len(shape) - axis
    offs = [int(x) for x in p.offset]
    if len(offs) == 0:
        offs = [0] * n
    elif len(offs) == 1:
        offs = offs * n
    elif len(offs) != n:
        shape_fail(layer, f"crop_param needs 0, 1 or {n} offsets, found {len(offs)}")
    for i, o in enumerate(offs):
        a = axis + i
        if o + ref[a] > shape[a]:
            shape_fail(layer, f"crop of {ref[a]} at offset {o} exceeds axis {a} of size {shape[a]}")
    return axis, offs


def reshape_target(layer, shape):
    p = layer.param("reshape_param")
    dims = [int(d) for d in p.shape.dim]
    nd = len(shape)
    axis = p.axis
    if not -nd - 1 <= axis <= nd:
        shape_fail(layer, f"reshape axis {axis} out of range for {nd}-D input")
    start = axis + nd + 1 if axis < 0 else axis
    num = p.num_axes
    if num < -1:
        shape_fail(layer, f"num_axes must be >= -1, found {num}")
    end = nd if num == -1 else start + num
    if end > nd:
        shape_fail(layer, f"axis {axis} + num_axes {num} exceed the input's {nd} axes")
    if dims.count(-1) > 1:
        shape_fail(layer, "at most one reshape dim may be -1")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= nd:
                shape_fail(layer, f"dim {i} is 0 (copy) but the input has no axis {start + i}")
            new.append(shape[start + i])
        elif d < -1:
            shape_fail(layer, f"reshape dim {d} is invalid")
        else:
            new.append(d)
    out = list(shape[:start]) + new + list(shape[end:])
    total = math.prod(shape)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            shape_fail(layer, f"cannot reshape {list(shape)} into {dims}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        shape_fail(layer, f"cannot reshape {list(shape)} ({total} values) into {out}")
    return tuple(out)


def permute_order(layer, ndim):
    order = [int(o) for o in layer.param("permute_param").order]
    for o in order:
        if not 0 <= o < ndim:
            shape_fail(layer, f"permute order {order} names axis {o} of a {ndim}-D input")
    if len(set(order)) != len(order):
        shape_fail(layer, f"permute order {order} repeats an axis")
    return order + [i for i in range(ndim) if i not in order]


def prior_aspect_ratios(p):
    """SSD's list: 1, then each new ratio (and its inverse when flip)."""
    ars = [1.0]
    for ar in p.aspect_ratio:
        if any(abs(ar - x) < 1e-6 for x in ars):
            continue
        ars.append(float(ar))
        if p.flip:
            ars.append(1.0 / ar if ar else math.inf)
    return ars


def detection_rows(layer, bottoms):
    """Rows per image of a converted DetectionOutput. Caffe's top is (1, 1, n, 7) with n
    decided by the data; the Keras model gives a fixed (batch, rows, 7) block instead,
    rows = keep_top_k, or every candidate the NMS could keep when keep_top_k is -1
    (unused rows are -1; see emit/layers/ssd.py)."""
    p = layer.param("detection_output_param")
    if p.keep_top_k > -1:
        return p.keep_top_k
    prior = bottoms[2]
    priors = prior[2] // 4 if len(prior) > 2 else 0
    nms = p.nms_param
    per_class = min(nms.top_k, priors) if nms.has("top_k") and nms.top_k > -1 else priors
    classes = p.num_classes - (1 if 0 <= p.background_label_id < p.num_classes else 0)
    return classes * per_class


def interp_size(layer, bottoms):
    p = layer.param("interp_param")
    check_rank(layer, bottoms[0], 4)
    _n, _c, h, w = bottoms[0]
    he, we = h + p.pad_beg + p.pad_end, w + p.pad_beg + p.pad_end
    if p.shrink_factor < 1 or p.zoom_factor < 1:
        shape_fail(layer, f"shrink_factor ({p.shrink_factor}) and zoom_factor ({p.zoom_factor}) "
                     f"must be at least 1")
    if p.has("shrink_factor") and not p.has("zoom_factor"):
        oh, ow = (he - 1) // p.shrink_factor + 1, (we - 1) // p.shrink_factor + 1
    elif p.has("zoom_factor") and not p.has("shrink_factor"):
        oh, ow = he + (he - 1) * (p.zoom_factor - 1), we + (we - 1) * (p.zoom_factor - 1)
    elif p.has("zoom_factor") and p.has("shrink_factor"):
        oh, ow = (he - 1) // p.shrink_factor + 1, (we - 1) // p.shrink_factor + 1
        oh, ow = oh + (oh - 1) * (p.zoom_factor - 1), ow + (ow - 1) * (p.zoom_factor - 1)
    elif p.has("height") and p.has("width"):
        oh, ow = p.height, p.width
    elif len(bottoms) == 2:
        check_rank(layer, bottoms[1], 4, "second bottom")
        oh, ow = bottoms[1][2], bottoms[1][3]
    else:
        shape_fail(layer, "interp_param needs zoom_factor, shrink_factor, height+width, or a "
                     "second bottom")
    if oh <= 0 or ow <= 0 or he <= 0 or we <= 0:
        shape_fail(layer, f"output size {oh}x{ow} is empty")
    return oh, ow


def infer(layer, bottoms):
    """(top shapes, param shapes) of ``layer`` or None if its type is unknown here."""
    from .emit.registry import layer_type
    rec = layer_type(layer.type)
    fn = None if rec is None else rec.shape
    if fn is None:
        return None
    for b in bottoms:
        if b is None or any(d is None for d in b):
            shape_fail(layer, f"input shape {b} depends on the data; {layer.type} cannot follow it")
    try:
        tops, params = fn(layer, [tuple(b) for b in bottoms])
    except CaffeFormatError:
        raise
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError) as e:
        # a shape function that did not foresee these settings (a custom one, or a
        # check missing here): still one clear error naming the layer, not a traceback
        shape_fail(layer, f"cannot work out the output shape of this {layer.type} layer from "
                     f"inputs {[list(b) for b in bottoms]}: {type(e).__name__}: {e}")
    if len(tops) != len(layer.tops) and layer.type not in ("Silence",):
        shape_fail(layer, f"{layer.type} gives {len(tops)} tops here, but the layer lists "
                     f"{len(layer.tops)}")
    return tops, params
