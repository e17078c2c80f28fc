"""Axis and tensor operations: Eltwise, Concat, Slice, Split, Crop, Flatten, Reshape,
Permute, Softmax, ArgMax, Reduction, Tile, Silence.

Layout: a 4-D Caffe blob (NCHW) is NHWC in Keras; other ranks keep Caffe's axis order.
Ops that stay 4-D map Caffe's axis to Keras's (``keras_axis``). Ops whose result depends
on Caffe's memory order across the 4-D boundary (Flatten, Reshape, ArgMax without an
axis) see the tensor in NCHW order first and go back to NHWC after, with a transpose
only where the two orders differ. Permute folds both layout changes into its own
transpose.
"""
from __future__ import annotations

import math

from ...layout import NCHW_TO_NHWC, NHWC_TO_NCHW, keras_axis, keras_shape, same_memory_order
from ...proto.schema import ENUMS
from ...shapes import (
    canonical_axis,
    check_bottoms,
    crop_offsets,
    permute_order,
    reshape_target,
    shape_fail,
    slice_points,
)
from ..registry import register_converter

# ---------------------------------------------------------------- shapes (Caffe NCHW)

def softmax_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    canonical_axis(layer, layer.param("softmax_param").axis, len(bottoms[0]))
    return [tuple(bottoms[0])], []


def eltwise_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 2, 1 << 30)
    p = layer.param("eltwise_param")
    for b in bottoms[1:]:
        if tuple(b) != tuple(bottoms[0]):
            shape_fail(layer, f"Eltwise inputs must share one shape; found {list(bottoms[0])} "
                         f"and {list(b)}")
    if p.coeff and (p.operation != "SUM" or len(p.coeff) != len(bottoms)):
        shape_fail(layer, f"Eltwise coeff needs operation SUM and one value per bottom "
                     f"({len(bottoms)}), found {len(p.coeff)}")
    return [tuple(bottoms[0])], []


def concat_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1, 1 << 30)
    p = layer.param("concat_param")
    ref = tuple(bottoms[0])
    axis = p.concat_dim if p.has("concat_dim") and not p.has("axis") else p.axis
    axis = canonical_axis(layer, axis, len(ref))
    total = 0
    for b in bottoms:
        if len(b) != len(ref) or any(x != y for i, (x, y) in enumerate(zip(b, ref)) if i != axis):
            shape_fail(layer, f"Concat inputs must match except on axis {axis}; found "
                         f"{list(ref)} and {list(b)}")
        total += b[axis]
    return [ref[:axis] + (total,) + ref[axis + 1:]], []


def slice_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    axis, ranges = slice_points(layer, shape)
    return [shape[:axis] + (b - a,) + shape[axis + 1:] for a, b in ranges], []


def split_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    return [tuple(bottoms[0])] * len(layer.tops), []


def crop_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 2)
    shape, ref = tuple(bottoms[0]), tuple(bottoms[1])
    if len(shape) != len(ref):
        shape_fail(layer, f"Crop inputs differ in rank: {list(shape)} and {list(ref)}")
    axis, _ = crop_offsets(layer, shape, ref)
    return [shape[:axis] + ref[axis:]], []


def flatten_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    p = layer.param("flatten_param")
    shape = tuple(bottoms[0])
    a = canonical_axis(layer, p.axis, len(shape))
    e = canonical_axis(layer, p.end_axis, len(shape), "end_axis")
    if e < a:
        shape_fail(layer, f"end_axis {p.end_axis} comes before axis {p.axis}")
    return [shape[:a] + (math.prod(shape[a:e + 1]),) + shape[e + 1:]], []


def reshape_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    return [reshape_target(layer, tuple(bottoms[0]))], []


def permute_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    return [tuple(shape[i] for i in permute_order(layer, len(shape)))], []


def argmax_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    p = layer.param("argmax_param")
    shape = tuple(bottoms[0])
    if not shape:
        shape_fail(layer, "ArgMax needs an input with at least one axis")
    if p.has("axis"):
        axis = canonical_axis(layer, p.axis, len(shape))
        if p.top_k > shape[axis]:
            shape_fail(layer, f"top_k {p.top_k} exceeds axis {axis} of size {shape[axis]}")
        out = list(shape)
        out[axis] = p.top_k
        return [tuple(out)], []
    if p.top_k > math.prod(shape[1:]):
        shape_fail(layer, f"top_k {p.top_k} exceeds the {math.prod(shape[1:])} values per item")
    out = [1] * max(3, len(shape))
    out[0] = shape[0]
    out[2] = p.top_k
    if p.out_max_val:
        out[1] = 2
    return [tuple(out)], []


def reduction_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    axis = canonical_axis(layer, layer.param("reduction_param").axis, len(shape))
    return [shape[:axis]], []


def tile_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    p = layer.param("tile_param")
    shape = list(bottoms[0])
    axis = canonical_axis(layer, p.axis, len(shape))
    if p.tiles <= 0:
        shape_fail(layer, f"tiles must be positive, found {p.tiles}")
    shape[axis] *= p.tiles
    return [tuple(shape)], []


def silence_shape(layer, bottoms):
    return [], []


def _enum(ctx, value, enum):
    if isinstance(value, int):
        names = {v: k for k, v in ENUMS[enum].items()}
        if value not in names:
            ctx.fail(f"unknown {enum} value {value}")
        return names[value]
    return value


def _run(ctx, x, makers):
    """Apply ``makers`` [(suffix, make(name) -> layer[, perm])] in order; the last layer
    gets the step's name, the others ``<name>_<suffix>``. No makers: ``x`` itself. A
    transpose that undoes the one which made ``x`` (Caffe's Permute to NHWC order before
    a Flatten or Reshape, as SSD heads do) takes the tensor before it instead."""
    for i, (suffix, make, *perm) in enumerate(makers):
        before = _undone(x, perm[0]) if perm else None
        if before is not None:
            x = before
            continue
        name = ctx.name if i == len(makers) - 1 else ctx.sub_name(suffix)
        x = ctx.add(make(name), x)
    return x


def _undone(x, perm):
    """The input of the transpose that made ``x`` if transposing ``x`` by ``perm``
    restores it, else None."""
    import keras

    from ...keras_compat import producer, producing_node
    from ..layers.tensor import Transpose

    try:
        layer = producer(x)
        inputs = producing_node(x).input_tensors
    except (AttributeError, IndexError, TypeError):
        return None
    if type(layer) is keras.layers.Permute:
        made = (0,) + tuple(layer.dims)
    elif type(layer) is Transpose:
        made = tuple(layer.perm)
    else:
        return None
    if len(inputs) != 1 or len(made) != len(perm):
        return None
    return inputs[0] if all(made[p] == i for i, p in enumerate(perm)) else None


def _transpose_maker(perm, suffix):
    """A maker for ``transpose(x, perm)``, or None for the identity."""
    import keras

    from ..layers.tensor import Transpose

    perm = tuple(int(p) for p in perm)
    if perm == tuple(range(len(perm))):
        return None
    if perm[0] == 0:
        return suffix, lambda name: keras.layers.Permute(perm[1:], name=name), perm
    return suffix, lambda name: Transpose(perm, name=name), perm


def _reshape_makers(src, dst, spec=None):
    """Makers turning a Keras tensor of Caffe shape ``src`` into Caffe's reshape of it to
    ``dst`` (both Caffe shapes). ``spec`` (dims, axis, num_axes): the reshape moves values
    across the batch axis, so it runs on the whole tensor with Caffe's rules (the batch
    size comes from the data); otherwise the batch axis stays the batch axis."""
    import keras

    from ..layers.tensor import BatchReshape

    src, dst = tuple(src), tuple(dst)
    if spec is None and len(src) == 4 and len(dst) == 4 and src[1] == dst[1]:
        # channels stay the fastest axis: NHWC reshapes its H, W like NCHW does
        if src == dst:
            return []
        return [("reshape", lambda name: keras.layers.Reshape(keras_shape(dst)[1:],
                                                               name=name))]
    makers = []
    to_nchw = not same_memory_order(src)
    if to_nchw:
        makers.append(_transpose_maker(NHWC_TO_NCHW, "nchw"))
    if spec is not None:
        if len(src) == 4 and not to_nchw:  # BatchReshape reads Caffe's axis sizes
            makers.append(("nchw", lambda name: keras.layers.Reshape(src[1:], name=name)))
        makers.append(("reshape", lambda name: BatchReshape(*spec, name=name)))
        if len(dst) == 4:
            makers.append(_transpose_maker(NCHW_TO_NHWC, "nhwc"))
        return makers
    to_nhwc = not same_memory_order(dst)
    now = src if to_nchw else keras_shape(src)
    target = dst if to_nhwc else keras_shape(dst)
    if tuple(now[1:]) != tuple(target[1:]):
        makers.append(("reshape", lambda name: keras.layers.Reshape(target[1:], name=name)))
    if to_nhwc:
        makers.append(_transpose_maker(NCHW_TO_NHWC, "nhwc"))
    return makers


# -- merging and splitting ------------------------------------------------------------

@register_converter("Eltwise", shape=eltwise_shape, keras_classes=())
def eltwise(ctx):
    import keras

    from ..layers.tensor import WeightedSum

    p = ctx.param("eltwise_param")
    op = _enum(ctx, p.operation, "EltwiseOp")
    coeff = [float(c) for c in p.coeff]
    if coeff and op != "SUM":
        ctx.fail(f"Eltwise coeff applies to SUM only, found operation {op}")
    if op == "SUM" and coeff and any(c != 1 for c in coeff):
        layer = WeightedSum(coeff, name=ctx.name)
    elif op == "SUM":
        layer = keras.layers.Add(name=ctx.name)
    elif op == "PROD":
        layer = keras.layers.Multiply(name=ctx.name)
    elif op == "MAX":
        layer = keras.layers.Maximum(name=ctx.name)
    else:
        ctx.fail(f"unknown Eltwise operation {op}")
    return [ctx.add(layer, list(ctx.inputs))]


@register_converter("Concat", shape=concat_shape, keras_classes=())
def concat(ctx):
    import keras

    p = ctx.param("concat_param")
    ndim = len(ctx.in_shapes[0])
    axis = p.concat_dim if p.has("concat_dim") and not p.has("axis") else p.axis
    axis = canonical_axis(ctx.layer, axis, ndim)
    if len(ctx.inputs) == 1:
        return [ctx.inputs[0]]  # Caffe shares the bottom's data
    layer = keras.layers.Concatenate(axis=keras_axis(axis, ndim), name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs))]


@register_converter("Slice", shape=slice_shape, keras_classes=())
def slice_(ctx):
    from ..layers.tensor import Slice

    shape = ctx.in_shapes[0]
    axis, _ = slice_points(ctx.layer, shape)  # validates the points against the shape
    points = [int(x) for x in ctx.param("slice_param").slice_point]
    layer = Slice(keras_axis(axis, len(shape)), len(ctx.layer.tops), points, name=ctx.name)
    outs = ctx.add(layer, ctx.inputs[0])
    return list(outs)


@register_converter("Split", shape=split_shape, keras_classes=())
def split(ctx):
    return [ctx.inputs[0]] * len(ctx.step.outputs)


@register_converter("Silence", shape=silence_shape, keras_classes=())
def silence(ctx):
    return []


@register_converter("Crop", shape=crop_shape, keras_classes=())
def crop(ctx):
    import keras

    from ..layers.tensor import Crop

    shape, ref = ctx.in_shapes
    axis, offsets = crop_offsets(ctx.layer, shape, ref)
    x, reference = ctx.inputs
    if len(shape) == 4 and axis >= 2:
        rows = (0, 0) if axis > 2 else (offsets[0], shape[2] - offsets[0] - ref[2])
        o = offsets[-1]
        cols = (o, shape[3] - o - ref[3])
        return [ctx.add(keras.layers.Cropping2D((rows, cols), name=ctx.name), x)]
    axes = [keras_axis(a, len(shape)) for a in range(axis, len(shape))]
    return [ctx.add(Crop(axes, offsets, name=ctx.name), [x, reference])]


# -- reshaping ------------------------------------------------------------------------

@register_converter("Flatten", shape=flatten_shape, keras_classes=())
def flatten(ctx):
    p = ctx.param("flatten_param")
    src, dst = ctx.in_shapes[0], ctx.out_shapes[0]
    a = canonical_axis(ctx.layer, p.axis, len(src))
    e = canonical_axis(ctx.layer, p.end_axis, len(src), "end_axis")
    spec = None if a > 0 else ([-1], 0, e + 1)  # folds the batch into the result
    return [_run(ctx, ctx.inputs[0], _reshape_makers(src, dst, spec))]


@register_converter("Reshape", shape=reshape_shape, keras_classes=())
def reshape(ctx):
    """A reshape that keeps the input's size on axis 0 keeps the batch axis (at the
    declared batch size it is exactly Caffe's; at other sizes it is what a net declared
    with batch 1, as exported ones are, means). Otherwise the batch is folded as Caffe
    folds it, at the size the model is run with."""
    p = ctx.param("reshape_param")
    src = tuple(ctx.in_shapes[0])
    dst = reshape_target(ctx.layer, src)
    spec = None
    if dst[0] != src[0]:
        spec = ([int(d) for d in p.shape.dim], int(p.axis), int(p.num_axes))
    return [_run(ctx, ctx.inputs[0], _reshape_makers(src, dst, spec))]


@register_converter("Permute", shape=permute_shape, keras_classes=())
def permute(ctx):
    src = ctx.in_shapes[0]
    nd = len(src)
    order = permute_order(ctx.layer, nd)
    into = NHWC_TO_NCHW if nd == 4 else tuple(range(nd))
    back = NCHW_TO_NHWC if nd == 4 else tuple(range(nd))
    # Keras in -> Caffe in -> Caffe's permute -> Keras out, as one transpose
    perm = [into[order[back[i]]] for i in range(nd)]
    maker = _transpose_maker(perm, "transpose")
    return [_run(ctx, ctx.inputs[0], [maker] if maker else [])]


# -- per-axis computations ------------------------------------------------------------

@register_converter("Softmax", shape=softmax_shape, keras_classes=())
def softmax(ctx):
    import keras

    nd = len(ctx.in_shapes[0])
    axis = canonical_axis(ctx.layer, ctx.param("softmax_param").axis, nd)
    return [ctx.add(keras.layers.Softmax(axis=keras_axis(axis, nd), name=ctx.name),
                    ctx.inputs[0])]


@register_converter("ArgMax", shape=argmax_shape, keras_classes=())
def argmax(ctx):
    from ..layers.tensor import ArgMax

    p = ctx.param("argmax_param")
    src, dst = ctx.in_shapes[0], ctx.out_shapes[0]
    nd = len(src)
    x = ctx.inputs[0]
    if p.has("axis"):
        axis = canonical_axis(ctx.layer, p.axis, nd)
        layer = ArgMax(keras_axis(axis, nd), p.top_k, p.out_max_val, name=ctx.name)
        return [ctx.add(layer, x)]
    # over each item's values in Caffe's (C, H, W) order
    before = [] if same_memory_order(src) else [_transpose_maker(NHWC_TO_NCHW, "nchw")]
    flat = (src[0], 2 if p.out_max_val else 1, int(p.top_k))
    after = _reshape_makers(flat, dst)
    makers = before + [("argmax", lambda name: ArgMax(None, p.top_k, p.out_max_val,
                                                       name=name))] + after
    return [_run(ctx, x, makers)]


@register_converter("Reduction", shape=reduction_shape, keras_classes=())
def reduction(ctx):
    from ..layers.tensor import Reduction

    p = ctx.param("reduction_param")
    src = ctx.in_shapes[0]
    nd = len(src)
    axis = canonical_axis(ctx.layer, p.axis, nd)
    op = _enum(ctx, p.operation, "ReductionOp")
    axes = sorted(keras_axis(a, nd) for a in range(axis, nd))
    makers = [("reduce", lambda name: Reduction(op, axes, p.coeff, name=name))]
    # the axes left, in Keras order, named by their Caffe axis, and the output's layout
    kept = [c for k, c in sorted((keras_axis(c, nd), c) for c in range(axis))]
    want = [c for k, c in sorted((keras_axis(c, axis), c) for c in range(axis))]
    perm = [kept.index(c) for c in want]
    maker = _transpose_maker(perm, "transpose") if perm else None
    if maker:
        makers.append(maker)
    return [_run(ctx, ctx.inputs[0], makers)]


@register_converter("Tile", shape=tile_shape, keras_classes=())
def tile(ctx):
    from ..layers.tensor import Tile

    p = ctx.param("tile_param")
    nd = len(ctx.in_shapes[0])
    axis = canonical_axis(ctx.layer, p.axis, nd)
    if p.tiles <= 0:
        ctx.fail(f"tile_param tiles must be positive, found {p.tiles}")
    return [ctx.add(Tile(keras_axis(axis, nd), p.tiles, name=ctx.name), ctx.inputs[0])]
