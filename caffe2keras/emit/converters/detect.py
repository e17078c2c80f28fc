"""Detection heads of Caffe forks: ROIPooling (Fast/Faster R-CNN), PSROIPooling (R-FCN),
Reorg and Region (YOLOv2 ports), Proposal (RPN) and Yolov3DetectionOutput (MobileNet-YOLO).

Each type's shape function (Caffe NCHW, for `inspect` and weight checks) sits beside its
converter; the Keras layers are in emit/layers/detect.py and detect_nms.py.
"""
from __future__ import annotations

import math

from ...shapes import check_bottoms, check_rank, shape_fail
from ..registry import register_converter


def _feature_and_rois(layer, bottoms):
    """(N, C, H, W) features and the number of ROIs of a (R, 5[, 1, 1]) rois bottom."""
    check_bottoms(layer, bottoms, 2)
    feat, rois = bottoms
    check_rank(layer, feat, 4, "feature map (first bottom)")
    if len(rois) < 2 or math.prod(rois[1:]) != 5:
        shape_fail(layer, f"{layer.type}'s second bottom holds ROIs as (R, 5) rows "
                          f"(image index, x1, y1, x2, y2), found {list(rois)}")
    return feat, rois[0]


def _rois_input(ctx):
    """The rois bottom as (R, 5), whatever rank Caffe gave it."""
    import keras

    rois, shape = ctx.inputs[1], ctx.in_shapes[1]
    if len(shape) != 2:
        rois = ctx.add(keras.layers.Reshape((5,), name=ctx.sub_name("rois")), rois)
    return rois


# --------------------------------------------------------------------------- ROIPooling

def _roi_pooling_shape(layer, bottoms):
    feat, rois = _feature_and_rois(layer, bottoms)
    p = layer.param("roi_pooling_param")
    if p.pooled_h <= 0 or p.pooled_w <= 0:
        shape_fail(layer, f"roi_pooling_param needs pooled_h and pooled_w > 0, found "
                          f"{p.pooled_h} x {p.pooled_w}")
    return [(rois, feat[1], p.pooled_h, p.pooled_w)], []


@register_converter("ROIPooling", shape=_roi_pooling_shape, keras_classes=())
def roi_pooling(ctx):
    """Output (R, pooled_h, pooled_w, C): Caffe's (R, C, pooled_h, pooled_w) in NHWC."""
    from ..layers.detect import ROIPooling

    p = ctx.param("roi_pooling_param")
    layer = ROIPooling(p.pooled_h, p.pooled_w, spatial_scale=p.spatial_scale, name=ctx.name)
    return [ctx.add(layer, [ctx.inputs[0], _rois_input(ctx)])]


# ------------------------------------------------------------------------- PSROIPooling

def _psroi_pooling_shape(layer, bottoms):
    feat, rois = _feature_and_rois(layer, bottoms)
    p = layer.param("psroi_pooling_param")
    for field in ("spatial_scale", "output_dim", "group_size"):
        if not p.has(field):
            shape_fail(layer, f"psroi_pooling_param needs {field} (a required field)")
    if p.output_dim <= 0 or p.group_size <= 0:
        shape_fail(layer, f"output_dim and group_size must be > 0, found {p.output_dim}, "
                          f"{p.group_size}")
    want = p.output_dim * p.group_size ** 2
    if feat[1] != want:
        shape_fail(layer, f"the feature map needs output_dim x group_size^2 = {want} "
                          f"channels, found {feat[1]}")
    return [(rois, p.output_dim, p.group_size, p.group_size)], []


@register_converter("PSROIPooling", shape=_psroi_pooling_shape, keras_classes=())
def psroi_pooling(ctx):
    """Output (R, group, group, output_dim): Caffe's (R, output_dim, group, group) NHWC."""
    from ..layers.detect import PSROIPooling

    p = ctx.param("psroi_pooling_param")
    layer = PSROIPooling(p.output_dim, p.group_size, spatial_scale=p.spatial_scale,
                         name=ctx.name)
    return [ctx.add(layer, [ctx.inputs[0], _rois_input(ctx)])]


# -------------------------------------------------------------------------------- Reorg

def _reorg_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    (shape,) = bottoms
    if len(shape) != 4:
        shape_fail(layer, f"Reorg needs a 4-D input, found {list(shape)}")
    p = layer.param("reorg_param")
    if not p.has("stride") or p.stride <= 0:
        shape_fail(layer, "reorg_param needs a stride > 0")
    n, c, h, w = shape
    s = p.stride
    # the darknet permutation reads the buffer as (C / s^2, H * s, W * s): every division
    # must be exact or Caffe writes past its top
    if c % (s * s) or (not p.reverse and (h % s or w % s)):
        shape_fail(layer, f"Reorg with stride {s} needs channels divisible by {s * s}"
                          f"{'' if p.reverse else f' and height, width by {s}'}, found "
                          f"{list(shape)}")
    if p.reverse:
        return [(n, c // (s * s), h * s, w * s)], []
    return [(n, c * s * s, h // s, w // s)], []


@register_converter("Reorg", shape=_reorg_shape, keras_classes=())
def reorg(ctx):
    from ..layers.detect import Reorg

    p = ctx.param("reorg_param")
    return [ctx.add(Reorg(p.stride, reverse=p.reverse, name=ctx.name), ctx.inputs[0])]


# ------------------------------------------------------------------------------- Region

def _region_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    (shape,) = bottoms
    p = layer.param("region_param")
    if len(shape) != 4:
        shape_fail(layer, f"Region needs a 4-D input, found {list(shape)}")
    if p.coords < 2:
        shape_fail(layer, f"region coords must be at least 2 (x, y), found {p.coords}")
    want = p.num * (p.coords + 1 + p.classes)
    if shape[1] != want:
        shape_fail(layer, f"Region needs num x (coords + 1 + classes) = {p.num} x "
                          f"({p.coords} + 1 + {p.classes}) = {want} channels, found "
                          f"{shape[1]}")
    return [tuple(shape)], []


@register_converter("Region", shape=_region_shape, keras_classes=())
def region(ctx):
    from ..layers.detect import Region

    p = ctx.param("region_param")
    layer = Region(p.classes, coords=p.coords, num=p.num, name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


# ----------------------------------------------------------------------------- Proposal

def _proposal_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 3)
    scores, deltas, info = bottoms
    p = layer.param("proposal_param")
    if not p.ratio or not p.scale:
        shape_fail(layer, "proposal_param needs at least one ratio and one scale")
    a = len(p.ratio) * len(p.scale)
    if len(scores) != 4 or scores[1] != 2 * a:
        shape_fail(layer, f"the scores bottom must be (N, 2 x {a} anchors, H, W), found "
                          f"{list(scores)}")
    if tuple(deltas) != (scores[0], 4 * a, *scores[2:]):
        shape_fail(layer, f"the deltas bottom must be (N, 4 x {a} anchors, H, W) = "
                          f"{[scores[0], 4 * a, *scores[2:]]}, found {list(deltas)}")
    if math.prod(info[1:]) < 2:
        shape_fail(layer, f"im_info must hold (height, width, ...), found {list(info)}")
    if p.post_nms_topn <= 0:
        shape_fail(layer, "post_nms_topn must be > 0")
    rows = scores[0] * p.post_nms_topn
    return [(rows, 5), (rows,)][:len(layer.tops)], []


@register_converter("Proposal", shape=_proposal_shape, keras_classes=())
def proposal(ctx):
    """rois (N * post_nms_topn, 5) and scores, one block of rows per image, unused rows
    -1 (Caffe stacks the valid rows of all images)."""
    import keras

    from ..layers.detect_nms import Proposal

    p = ctx.param("proposal_param")
    info = ctx.inputs[2]
    if len(ctx.in_shapes[2]) != 2:
        info = ctx.add(keras.layers.Reshape((math.prod(ctx.in_shapes[2][1:]),),
                                            name=ctx.sub_name("im_info")), info)
    layer = Proposal(feat_stride=p.feat_stride, base_size=p.base_size,
                     min_size=p.min_size, ratios=list(p.ratio), scales=list(p.scale),
                     pre_nms_topn=p.pre_nms_topn, post_nms_topn=p.post_nms_topn,
                     nms_thresh=p.nms_thresh, name=ctx.name)
    rois, scores = ctx.add(layer, [ctx.inputs[0], ctx.inputs[1], info])
    return [rois, scores][:len(ctx.step.outputs)]


# ---------------------------------------------------------------- Yolov3DetectionOutput

def _yolov3_config(layer, bottoms):
    """The layer's settings checked against its bottoms as the fork reads them."""
    p = layer.param("yolov3_detection_output_param")
    if not p.has("num_classes") or p.num_classes <= 0:
        shape_fail(layer, "yolov3_detection_output_param needs num_classes > 0")
    if p.mask_group_num <= 0 or len(bottoms) != p.mask_group_num:
        shape_fail(layer, f"mask_group_num ({p.mask_group_num}) must equal the number of "
                          f"bottoms ({len(bottoms)})")
    groups = len(p.mask) // p.mask_group_num
    length = 5 + p.num_classes
    sides = []
    for t, shape in enumerate(bottoms):
        if len(shape) != 4 or shape[2] != shape[3]:
            shape_fail(layer, f"bottom {t} must be a square 4-D map (the fork reads its "
                              f"width as both sides), found {list(shape)}")
        if shape[1] != p.num_box * length:
            shape_fail(layer, f"bottom {t} needs num_box x (5 + num_classes) = "
                              f"{p.num_box * length} channels, found {shape[1]}")
        sides.append(shape[3])
        for n in range(p.num_box):
            if n + t * groups >= len(p.mask):
                shape_fail(layer, f"bottom {t} anchor {n} reads mask[{n + t * groups}]; "
                                  f"mask has {len(p.mask)} values")
            m = p.mask[n + t * groups]
            if 2 * m + 1 >= len(p.biases):
                shape_fail(layer, f"mask value {m} needs biases[{2 * m + 1}]; biases has "
                                  f"{len(p.biases)} values")
    if len(p.anchors_scale) < len(bottoms):
        shape_fail(layer, f"anchors_scale needs one value per bottom ({len(bottoms)}), "
                          f"found {len(p.anchors_scale)}")
    return {"num_classes": p.num_classes, "num_box": p.num_box, "biases": list(p.biases),
            "anchors_scale": list(p.anchors_scale)[:len(bottoms)], "mask": list(p.mask),
            "sides": sides, "mask_group_num": p.mask_group_num,
            "confidence_threshold": p.confidence_threshold,
            "nms_threshold": p.nms_threshold}


def _nms_check(param):
    def check(layer):
        thr = layer.param(param).nms_threshold
        if thr > 1:
            return (f"nms_threshold {thr} > 1 switches NMS off (every class of every box "
                    f"becomes a row): not supported")
        return None
    return check


def _yolov3_shape(layer, bottoms):
    cfg = _yolov3_config(layer, bottoms)
    rows = sum(s * s for s in cfg["sides"]) * cfg["num_box"]
    return [(bottoms[0][0], rows, 7)], []


@register_converter("Yolov3DetectionOutput", shape=_yolov3_shape, keras_classes=(),
                    check=_nms_check("yolov3_detection_output_param"))
def yolov3_detection_output(ctx):
    """(batch, rows, 7) per image, rows as SSD's DetectionOutput; unused rows -1."""
    from ..layers.detect_nms import Yolov3DetectionOutput

    cfg = _yolov3_config(ctx.layer, ctx.in_shapes)
    layer = Yolov3DetectionOutput(**cfg, name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs))]


# ------------------------------------------------------------------ YoloDetectionOutput

def _yolo_config(layer, bottoms):
    p = layer.param("yolo_detection_output_param")
    if not p.has("num_classes") or p.num_classes <= 0:
        shape_fail(layer, "yolo_detection_output_param needs num_classes > 0")
    if len(bottoms) not in (1, 2):
        shape_fail(layer, f"YoloDetectionOutput reads one or two maps, found {len(bottoms)}")
    if len(p.biases) < 2 * p.num_box:
        shape_fail(layer, f"{p.num_box} boxes need {2 * p.num_box} biases, found "
                          f"{len(p.biases)}")
    sides = []
    for t, shape in enumerate(bottoms):
        if len(shape) != 4 or shape[2] != shape[3]:
            shape_fail(layer, f"bottom {t} must be a square 4-D map (the fork reads its "
                              f"width as both sides), found {list(shape)}")
        if p.num_box <= 0 or shape[1] % p.num_box or shape[1] // p.num_box < 5 + p.num_classes:
            shape_fail(layer, f"bottom {t} needs num_box x (>= 5 + num_classes) channels, "
                              f"found {shape[1]} for {p.num_box} boxes")
        sides.append(shape[3])
    return {"num_classes": p.num_classes, "num_box": p.num_box, "biases": list(p.biases),
            "sides": sides, "confidence_threshold": p.confidence_threshold,
            "nms_threshold": p.nms_threshold}


def _yolo_shape(layer, bottoms):
    cfg = _yolo_config(layer, bottoms)
    return [(bottoms[0][0], sum(s * s for s in cfg["sides"]) * cfg["num_box"], 7)], []


@register_converter("YoloDetectionOutput", shape=_yolo_shape, keras_classes=(),
                    check=_nms_check("yolo_detection_output_param"))
def yolo_detection_output(ctx):
    """(batch, rows, 7) per image, as Yolov3DetectionOutput."""
    from ..layers.detect_nms import YoloDetectionOutput

    layer = YoloDetectionOutput(**_yolo_config(ctx.layer, ctx.in_shapes), name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs))]
