"""Caffe's shape inference, one function per layer type (NCHW, as Caffe's Reshape()).

Each function takes the layer and its bottom shapes and returns (top shapes, parameter
blob shapes). A dimension that only the data decides (DetectionOutput's row count) is
``None``. Inconsistent settings raise CaffeFormatError naming the layer.
"""
from __future__ import annotations

import itertools
import math

from .errors import CaffeFormatError

SHAPE_FUNCTIONS = {}


def shape_function(*types):
    def register(fn):
        for t in types:
            SHAPE_FUNCTIONS[t] = fn
        return fn
    return register


class ShapeError(CaffeFormatError):
    pass


def _fail(layer, msg):
    raise ShapeError(msg, layer=layer.name, position=layer.position or None)


def canonical_axis(layer, axis, ndim, what="axis"):
    if not -ndim <= axis < ndim:
        _fail(layer, f"{what} {axis} is out of range for a {ndim}-D input")
    return axis + ndim if axis < 0 else axis


def _rank(layer, shape, ndim, what="input"):
    if len(shape) != ndim:
        _fail(layer, f"{layer.type} needs a {ndim}-D {what}, found {len(shape)}-D {list(shape)}")


def _n_bottoms(layer, bottoms, lo, hi=None):
    hi = lo if hi is None else hi
    if not lo <= len(bottoms) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        _fail(layer, f"{layer.type} takes {want} bottoms, found {len(bottoms)}")


def _spatial_pairs(layer, p, name, default, hname, wname):
    """Caffe's (h, w) from `name` (0, 1 or 2 values) or `name_h`/`name_w`."""
    if p.has(hname) or p.has(wname):
        if not (p.has(hname) and p.has(wname)):
            _fail(layer, f"{hname} and {wname} must be given together")
        return int(getattr(p, hname)), int(getattr(p, wname))
    vals = getattr(p, name)
    if isinstance(vals, list):
        if len(vals) == 0:
            return default, default
        if len(vals) == 1:
            return int(vals[0]), int(vals[0])
        if len(vals) == 2:
            return int(vals[0]), int(vals[1])
        _fail(layer, f"{name} has {len(vals)} values; 2-D layers take 1 or 2")
    if not p.has(name) and default is not None:
        return default, default
    return int(vals), int(vals)


def conv_geometry(layer):
    """(kernel, stride, pad, dilation) as (h, w) pairs for Convolution/Deconvolution."""
    p = layer.param("convolution_param")
    if not (p.kernel_size or p.has("kernel_h") or p.has("kernel_w")):
        _fail(layer, "convolution_param needs kernel_size (or kernel_h and kernel_w)")
    k = _spatial_pairs(layer, p, "kernel_size", None, "kernel_h", "kernel_w")
    s = _spatial_pairs(layer, p, "stride", 1, "stride_h", "stride_w")
    pad = _spatial_pairs(layer, p, "pad", 0, "pad_h", "pad_w")
    d = _dil(layer, p)
    if min(k) <= 0 or min(s) <= 0 or min(d) <= 0:
        _fail(layer, f"kernel {k}, stride {s} and dilation {d} must be positive")
    return k, s, pad, d


def _dil(layer, p):
    vals = p.dilation
    if len(vals) == 0:
        return 1, 1
    if len(vals) == 1:
        return int(vals[0]), int(vals[0])
    if len(vals) == 2:
        return int(vals[0]), int(vals[1])
    _fail(layer, f"dilation has {len(vals)} values; 2-D layers take 1 or 2")


def _conv_common(layer, bottoms):
    _n_bottoms(layer, bottoms, 1, 1 << 30)
    p = layer.param("convolution_param")
    shape = bottoms[0]
    if p.axis not in (1, 1 - len(shape)):
        _fail(layer, f"convolution axis {p.axis} is not supported (only the channel axis 1)")
    if len(shape) != 4:
        _fail(layer, f"only 2-D convolution (4-D NCHW input) is supported; input is "
                     f"{len(shape)}-D {list(shape)}")
    for b in bottoms[1:]:
        if tuple(b) != tuple(shape):
            _fail(layer, f"all bottoms must share one shape; found {list(shape)} and {list(b)}")
    if not p.has("num_output") or p.num_output <= 0:
        _fail(layer, "convolution_param needs num_output > 0")
    group = p.group
    c = shape[1]
    if group <= 0 or c % group or p.num_output % group:
        _fail(layer, f"group {group} must divide both the input channels ({c}) and "
                     f"num_output ({p.num_output})")
    return p, shape, group


@shape_function("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise")
def _convolution(layer, bottoms):
    p, (n, c, h, w), group = _conv_common(layer, bottoms)
    if layer.type != "Convolution" and group == 1:
        if c <= 0:
            _fail(layer, f"depthwise convolution needs input channels, found {c}")
        group = c  # fork depthwise types: one filter group per input channel
        if p.num_output % c:
            _fail(layer, f"depthwise num_output {p.num_output} must be a multiple of the "
                         f"input channels {c}")
    k, s, pad, d = conv_geometry(layer)
    out = []
    for size, kk, ss, pp, dd in zip((h, w), k, s, pad, d):
        ext = dd * (kk - 1) + 1
        o = (size + 2 * pp - ext) // ss + 1
        if o <= 0:
            _fail(layer, f"kernel extent {ext} does not fit the padded input "
                         f"{size}+2*{pp}: output would be empty")
        out.append(o)
    params = [(p.num_output, c // group, *k)]
    if p.bias_term:
        params.append((p.num_output,))
    return [(n, p.num_output, *out)] * len(bottoms), params


@shape_function("Deconvolution")
def _deconvolution(layer, bottoms):
    p, (n, c, h, w), group = _conv_common(layer, bottoms)
    k, s, pad, d = conv_geometry(layer)
    out = []
    for size, kk, ss, pp, dd in zip((h, w), k, s, pad, d):
        o = ss * (size - 1) + dd * (kk - 1) + 1 - 2 * pp
        if o <= 0:
            _fail(layer, f"padding {pp} removes the whole output")
        out.append(o)
    params = [(c, p.num_output // group, *k)]
    if p.bias_term:
        params.append((p.num_output,))
    return [(n, p.num_output, *out)] * len(bottoms), params


def pool_geometry(layer, shape):
    """(kernel, stride, pad, ceil) for Pooling on an NCHW ``shape``."""
    p = layer.param("pooling_param")
    if p.global_pooling:
        if p.has("kernel_size") or p.has("kernel_h"):
            _fail(layer, "global_pooling takes no kernel size")
        k = (shape[2], shape[3])
        s, pad = (1, 1), (0, 0)
        if any(p.has(f) for f in ("pad", "pad_h", "pad_w")) and (p.pad or p.pad_h or p.pad_w):
            _fail(layer, "global_pooling needs pad 0")
    else:
        if not (p.has("kernel_size") or p.has("kernel_h")):
            _fail(layer, "pooling_param needs kernel_size (or kernel_h and kernel_w)")
        k = _spatial_pairs(layer, p, "kernel_size", None, "kernel_h", "kernel_w")
        s = _spatial_pairs(layer, p, "stride", 1, "stride_h", "stride_w")
        pad = _spatial_pairs(layer, p, "pad", 0, "pad_h", "pad_w")
    if min(k) <= 0 or min(s) <= 0:
        _fail(layer, f"kernel {k} and stride {s} must be positive")
    if pad[0] >= k[0] or pad[1] >= k[1]:
        _fail(layer, f"pad {pad} must be smaller than the kernel {k}")
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


@shape_function("Pooling")
def _pooling(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    shape = bottoms[0]
    if len(shape) != 4:
        _fail(layer, f"Pooling needs a 4-D NCHW input, found {list(shape)}")
    n, c, h, w = shape
    k, s, pad, ceil = pool_geometry(layer, shape)
    p = layer.param("pooling_param")
    if p.pool == "STOCHASTIC":
        pass  # deterministic at test time (weighted average); shape as any pooling
    oh, ow = (pooled_size(h, k[0], s[0], pad[0], ceil), pooled_size(w, k[1], s[1], pad[1], ceil))
    if oh <= 0 or ow <= 0:
        _fail(layer, f"kernel {k} is larger than the padded input {h}x{w}")
    tops = [(n, c, oh, ow)]
    if len(layer.tops) == 2:  # MAX pooling's optional argmax mask
        tops.append((n, c, oh, ow))
    return tops, []


@shape_function("InnerProduct")
def _inner_product(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    p = layer.param("inner_product_param")
    shape = bottoms[0]
    axis = canonical_axis(layer, p.axis, len(shape))
    k = math.prod(shape[axis:])
    if not p.has("num_output") or p.num_output <= 0:
        _fail(layer, "inner_product_param needs num_output > 0")
    params = [(k, p.num_output) if p.transpose else (p.num_output, k)]
    if p.bias_term:
        params.append((p.num_output,))
    return [tuple(shape[:axis]) + (p.num_output,)], params


def _same(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    return [tuple(bottoms[0])] * max(1, len(layer.tops)), []


for _t in ("ReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log",
           "Threshold", "Dropout", "LRN", "MVN", "Softmax", "ReLU6", "Clip", "Swish",
           "ShuffleChannel", "GELU", "Mish", "HardSigmoid", "HardSwish"):
    SHAPE_FUNCTIONS[_t] = _same


@shape_function("MVN")
def _mvn(layer, bottoms):
    # Caffe's MVN reshapes its top with the legacy 4-D accessors: (N, C, H, W), 1-padded.
    _n_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    if not 1 <= len(shape) <= 4:
        _fail(layer, f"MVN takes 1-D to 4-D inputs (Caffe's legacy accessors), found "
                     f"{list(shape)}")
    return [shape + (1,) * (4 - len(shape))], []


@shape_function("LRN")
def _lrn(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    p = layer.param("lrn_param")
    if p.local_size % 2 == 0:
        _fail(layer, f"LRN local_size must be odd, found {p.local_size}")
    if len(bottoms[0]) != 4:
        _fail(layer, f"LRN needs a 4-D input, found {list(bottoms[0])}")
    return [tuple(bottoms[0])], []


@shape_function("Softmax")
def _softmax(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    canonical_axis(layer, layer.param("softmax_param").axis, len(bottoms[0]))
    return [tuple(bottoms[0])], []


def _channels(shape):
    return shape[1] if len(shape) > 1 else 1


@shape_function("PReLU")
def _prelu(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    shared = layer.param("prelu_param").channel_shared
    if len(bottoms[0]) < 2:
        _fail(layer, "PReLU needs an input with a channel axis")
    return [tuple(bottoms[0])], [() if shared else (bottoms[0][1],)]


@shape_function("BatchNorm")
def _batch_norm(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    c = _channels(bottoms[0])
    return [tuple(bottoms[0])], [(c,), (c,), (1,)]


def _scale_shape(layer, p, shape, bottoms):
    if len(bottoms) == 2:
        other = tuple(bottoms[1])
        axis = 0 if not other else canonical_axis(layer, p.axis, len(shape))
        if tuple(shape[axis:axis + len(other)]) != other:
            _fail(layer, f"second bottom {list(other)} does not match input {list(shape)} "
                         f"from axis {axis}")
        return other
    axis = canonical_axis(layer, p.axis, len(shape)) if shape else 0
    num = p.num_axes
    if num < -1:
        _fail(layer, f"num_axes must be >= -1, found {num}")
    end = len(shape) if num == -1 else axis + num
    if end > len(shape):
        _fail(layer, f"axis {axis} + num_axes {num} exceeds the input's {len(shape)} axes")
    return tuple(shape[axis:end])


@shape_function("Scale")
def _scale(layer, bottoms):
    _n_bottoms(layer, bottoms, 1, 2)
    p = layer.param("scale_param")
    sshape = _scale_shape(layer, p, tuple(bottoms[0]), bottoms)
    params = [] if len(bottoms) == 2 else [sshape]
    if p.bias_term:
        params.append(sshape)
    return [tuple(bottoms[0])], params


@shape_function("Bias")
def _bias(layer, bottoms):
    _n_bottoms(layer, bottoms, 1, 2)
    p = layer.param("bias_param")
    bshape = _scale_shape(layer, p, tuple(bottoms[0]), bottoms)
    return [tuple(bottoms[0])], ([] if len(bottoms) == 2 else [bshape])


@shape_function("Eltwise")
def _eltwise(layer, bottoms):
    _n_bottoms(layer, bottoms, 2, 1 << 30)
    p = layer.param("eltwise_param")
    for b in bottoms[1:]:
        if tuple(b) != tuple(bottoms[0]):
            _fail(layer, f"Eltwise inputs must share one shape; found {list(bottoms[0])} "
                         f"and {list(b)}")
    if p.coeff and (p.operation != "SUM" or len(p.coeff) != len(bottoms)):
        _fail(layer, f"Eltwise coeff needs operation SUM and one value per bottom "
                     f"({len(bottoms)}), found {len(p.coeff)}")
    return [tuple(bottoms[0])], []


@shape_function("Concat")
def _concat(layer, bottoms):
    _n_bottoms(layer, bottoms, 1, 1 << 30)
    p = layer.param("concat_param")
    ref = tuple(bottoms[0])
    axis = p.concat_dim if p.has("concat_dim") and not p.has("axis") else p.axis
    axis = canonical_axis(layer, axis, len(ref))
    total = 0
    for b in bottoms:
        if len(b) != len(ref) or any(x != y for i, (x, y) in enumerate(zip(b, ref)) if i != axis):
            _fail(layer, f"Concat inputs must match except on axis {axis}; found "
                         f"{list(ref)} and {list(b)}")
        total += b[axis]
    return [ref[:axis] + (total,) + ref[axis + 1:]], []


def slice_points(layer, shape):
    """(axis, [(start, stop), ...]) of each top of a Slice layer."""
    p = layer.param("slice_param")
    axis = p.slice_dim if p.has("slice_dim") and not p.has("axis") else p.axis
    axis = canonical_axis(layer, axis, len(shape))
    size, n = shape[axis], len(layer.tops)
    if n == 0:
        _fail(layer, "Slice needs at least one top")
    pts = [int(x) for x in p.slice_point]
    if pts:
        if len(pts) != n - 1:
            _fail(layer, f"{n} tops need {n - 1} slice_points, found {len(pts)}")
        bounds = [0] + pts + [size]
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            _fail(layer, f"slice_points {pts} must increase strictly inside (0, {size})")
    else:
        if size % n:
            _fail(layer, f"axis {axis} of size {size} does not split evenly into {n} tops")
        bounds = [i * size // n for i in range(n + 1)]
    return axis, list(itertools.pairwise(bounds))


@shape_function("Slice")
def _slice(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    axis, ranges = slice_points(layer, shape)
    return [shape[:axis] + (b - a,) + shape[axis + 1:] for a, b in ranges], []


@shape_function("Split")
def _split(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    return [tuple(bottoms[0])] * len(layer.tops), []


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
        _fail(layer, f"crop_param needs 0, 1 or {n} offsets, found {len(offs)}")
    for i, o in enumerate(offs):
        a = axis + i
        if o + ref[a] > shape[a]:
            _fail(layer, f"crop of {ref[a]} at offset {o} exceeds axis {a} of size {shape[a]}")
    return axis, offs


@shape_function("Crop")
def _crop(layer, bottoms):
    _n_bottoms(layer, bottoms, 2)
    shape, ref = tuple(bottoms[0]), tuple(bottoms[1])
    if len(shape) != len(ref):
        _fail(layer, f"Crop inputs differ in rank: {list(shape)} and {list(ref)}")
    axis, _ = crop_offsets(layer, shape, ref)
    return [shape[:axis] + ref[axis:]], []


@shape_function("Flatten")
def _flatten(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    p = layer.param("flatten_param")
    shape = tuple(bottoms[0])
    a = canonical_axis(layer, p.axis, len(shape))
    e = canonical_axis(layer, p.end_axis, len(shape), "end_axis")
    if e < a:
        _fail(layer, f"end_axis {p.end_axis} comes before axis {p.axis}")
    return [shape[:a] + (math.prod(shape[a:e + 1]),) + shape[e + 1:]], []


def reshape_target(layer, shape):
    p = layer.param("reshape_param")
    dims = [int(d) for d in p.shape.dim]
    nd = len(shape)
    axis = p.axis
    if not -nd - 1 <= axis <= nd:
        _fail(layer, f"reshape axis {axis} out of range for {nd}-D input")
    start = axis + nd + 1 if axis < 0 else axis
    num = p.num_axes
    if num < -1:
        _fail(layer, f"num_axes must be >= -1, found {num}")
    end = nd if num == -1 else start + num
    if end > nd:
        _fail(layer, f"axis {axis} + num_axes {num} exceed the input's {nd} axes")
    if dims.count(-1) > 1:
        _fail(layer, "at most one reshape dim may be -1")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= nd:
                _fail(layer, f"dim {i} is 0 (copy) but the input has no axis {start + i}")
            new.append(shape[start + i])
        elif d < -1:
            _fail(layer, f"reshape dim {d} is invalid")
        else:
            new.append(d)
    out = list(shape[:start]) + new + list(shape[end:])
    total = math.prod(shape)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            _fail(layer, f"cannot reshape {list(shape)} into {dims}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        _fail(layer, f"cannot reshape {list(shape)} ({total} values) into {out}")
    return tuple(out)


@shape_function("Reshape")
def _reshape(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    return [reshape_target(layer, tuple(bottoms[0]))], []


def permute_order(layer, ndim):
    order = [int(o) for o in layer.param("permute_param").order]
    for o in order:
        if not 0 <= o < ndim:
            _fail(layer, f"permute order {order} names axis {o} of a {ndim}-D input")
    if len(set(order)) != len(order):
        _fail(layer, f"permute order {order} repeats an axis")
    return order + [i for i in range(ndim) if i not in order]


@shape_function("Permute")
def _permute(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    return [tuple(shape[i] for i in permute_order(layer, len(shape)))], []


@shape_function("ArgMax")
def _argmax(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    p = layer.param("argmax_param")
    shape = tuple(bottoms[0])
    if not shape:
        _fail(layer, "ArgMax needs an input with at least one axis")
    if p.has("axis"):
        axis = canonical_axis(layer, p.axis, len(shape))
        if p.top_k > shape[axis]:
            _fail(layer, f"top_k {p.top_k} exceeds axis {axis} of size {shape[axis]}")
        out = list(shape)
        out[axis] = p.top_k
        return [tuple(out)], []
    if p.top_k > math.prod(shape[1:]):
        _fail(layer, f"top_k {p.top_k} exceeds the {math.prod(shape[1:])} values per item")
    out = [1] * max(3, len(shape))
    out[0] = shape[0]
    out[2] = p.top_k
    if p.out_max_val:
        out[1] = 2
    return [tuple(out)], []


@shape_function("Reduction")
def _reduction(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    axis = canonical_axis(layer, layer.param("reduction_param").axis, len(shape))
    return [shape[:axis]], []


@shape_function("Tile")
def _tile(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    p = layer.param("tile_param")
    shape = list(bottoms[0])
    axis = canonical_axis(layer, p.axis, len(shape))
    if p.tiles <= 0:
        _fail(layer, f"tiles must be positive, found {p.tiles}")
    shape[axis] *= p.tiles
    return [tuple(shape)], []


@shape_function("Normalize")
def _normalize(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    if len(shape) < 2:
        _fail(layer, f"Normalize needs at least 2 axes, found {list(shape)}")
    shared = layer.param("norm_param").channel_shared
    return [shape], [(1,) if shared else (shape[1],)]


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


@shape_function("PriorBox")
def _prior_box(layer, bottoms):
    _n_bottoms(layer, bottoms, 2)
    p = layer.param("prior_box_param")
    if not p.min_size:
        _fail(layer, "prior_box_param needs min_size")
    if p.max_size and len(p.max_size) != len(p.min_size):
        _fail(layer, f"{len(p.max_size)} max_size values for {len(p.min_size)} min_size")
    if any(not ar > 0 for ar in p.aspect_ratio):
        _fail(layer, f"aspect_ratio values must be positive, found {list(p.aspect_ratio)}")
    _rank(layer, bottoms[0], 4, "feature map (first bottom)")
    num = len(prior_aspect_ratios(p)) * len(p.min_size) + len(p.max_size)
    h, w = bottoms[0][2], bottoms[0][3]
    return [(1, 2, h * w * num * 4)], []


@shape_function("DetectionOutput")
def _detection_output(layer, bottoms):
    _n_bottoms(layer, bottoms, 3, 4)
    p = layer.param("detection_output_param")
    if not p.has("num_classes"):
        _fail(layer, "detection_output_param needs num_classes")
    return [(bottoms[0][0], detection_rows(layer, bottoms), 7)], []


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


@shape_function("Upsample")
def _upsample(layer, bottoms):
    _n_bottoms(layer, bottoms, 1, 2)
    p = layer.param("upsample_param")
    _rank(layer, bottoms[0], 4)
    n, c, h, w = bottoms[0]
    sh = p.scale_h if p.has("scale_h") else p.scale
    sw = p.scale_w if p.has("scale_w") else p.scale
    if sh <= 0 or sw <= 0:
        _fail(layer, f"upsample scale must be positive, found {sh}x{sw}")
    oh = p.upsample_h if p.has("upsample_h") else h * sh - (1 if p.pad_out_h else 0)
    ow = p.upsample_w if p.has("upsample_w") else w * sw - (1 if p.pad_out_w else 0)
    return [(n, c, oh, ow)], []


def interp_size(layer, bottoms):
    p = layer.param("interp_param")
    _rank(layer, bottoms[0], 4)
    _n, _c, h, w = bottoms[0]
    he, we = h + p.pad_beg + p.pad_end, w + p.pad_beg + p.pad_end
    if p.shrink_factor < 1 or p.zoom_factor < 1:
        _fail(layer, f"shrink_factor ({p.shrink_factor}) and zoom_factor ({p.zoom_factor}) "
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
        _rank(layer, bottoms[1], 4, "second bottom")
        oh, ow = bottoms[1][2], bottoms[1][3]
    else:
        _fail(layer, "interp_param needs zoom_factor, shrink_factor, height+width, or a "
                     "second bottom")
    if oh <= 0 or ow <= 0 or he <= 0 or we <= 0:
        _fail(layer, f"output size {oh}x{ow} is empty")
    return oh, ow


@shape_function("Interp")
def _interp(layer, bottoms):
    _n_bottoms(layer, bottoms, 1, 2)
    _rank(layer, bottoms[0], 4)
    n, c = bottoms[0][:2]
    return [(n, c, *interp_size(layer, bottoms))], []


@shape_function("ShuffleChannel")
def _shuffle(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    g = layer.param("shuffle_channel_param").group
    if len(bottoms[0]) < 2:
        _fail(layer, f"ShuffleChannel needs an input with a channel axis, found "
                     f"{list(bottoms[0])}")
    if g <= 0 or bottoms[0][1] % g:
        _fail(layer, f"group {g} must divide the {bottoms[0][1]} channels")
    return [tuple(bottoms[0])], []


@shape_function("Embed")
def _embed(layer, bottoms):
    _n_bottoms(layer, bottoms, 1)
    p = layer.param("embed_param")
    params = [(p.input_dim, p.num_output)] + ([(p.num_output,)] if p.bias_term else [])
    return [tuple(bottoms[0]) + (p.num_output,)], params


@shape_function("Silence")
def _silence(layer, bottoms):
    return [], []


@shape_function("Parameter")
def _parameter(layer, bottoms):
    shape = tuple(int(d) for d in layer.param("parameter_param").shape.dim)
    return [shape], [shape]


def infer(layer, bottoms):
    """(top shapes, param shapes) of ``layer`` or None if its type is unknown here."""
    fn = SHAPE_FUNCTIONS.get(layer.type)
    if fn is None:
        return None
    for b in bottoms:
        if b is None or any(d is None for d in b):
            _fail(layer, f"input shape {b} depends on the data; {layer.type} cannot follow it")
    try:
        tops, params = fn(layer, [tuple(b) for b in bottoms])
    except CaffeFormatError:
        raise
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError) as e:
        # a shape function that did not foresee these settings (a custom one, or a
        # check missing here): still one clear error naming the layer, not a traceback
        _fail(layer, f"cannot work out the output shape of this {layer.type} layer from "
                     f"inputs {[list(b) for b in bottoms]}: {type(e).__name__}: {e}")
    if len(tops) != len(layer.tops) and layer.type not in ("Silence",):
        _fail(layer, f"{layer.type} gives {len(tops)} tops here, but the layer lists "
                     f"{len(layer.tops)}")
    return tops, params
