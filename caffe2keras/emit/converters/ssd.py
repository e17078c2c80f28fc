"""SSD (weiliu89/caffe) layers: Normalize, PriorBox, DetectionOutput.

(Permute, which SSD nets also use, lives in tensor.py.)
"""
from __future__ import annotations

import math

from ...shapes import (
    check_bottoms,
    check_rank,
    detection_rows,
    prior_aspect_ratios,
    shape_fail,
)
from ..registry import Fillers, register_converter

# ---------------------------------------------------------------- shapes (Caffe NCHW)

def normalize_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 1)
    shape = tuple(bottoms[0])
    if len(shape) < 2:
        shape_fail(layer, f"Normalize needs at least 2 axes, found {list(shape)}")
    shared = layer.param("norm_param").channel_shared
    return [shape], [(1,) if shared else (shape[1],)]


def prior_box_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 2)
    p = layer.param("prior_box_param")
    if not p.min_size:
        shape_fail(layer, "prior_box_param needs min_size")
    if p.max_size and len(p.max_size) != len(p.min_size):
        shape_fail(layer, f"{len(p.max_size)} max_size values for {len(p.min_size)} min_size")
    if any(not ar > 0 for ar in p.aspect_ratio):
        shape_fail(layer, f"aspect_ratio values must be positive, found {list(p.aspect_ratio)}")
    check_rank(layer, bottoms[0], 4, "feature map (first bottom)")
    num = len(prior_aspect_ratios(p)) * len(p.min_size) + len(p.max_size)
    h, w = bottoms[0][2], bottoms[0][3]
    return [(1, 2, h * w * num * 4)], []


def detection_output_shape(layer, bottoms):
    check_bottoms(layer, bottoms, 3, 4)
    p = layer.param("detection_output_param")
    if not p.has("num_classes"):
        shape_fail(layer, "detection_output_param needs num_classes")
    return [(bottoms[0][0], detection_rows(layer, bottoms), 7)], []


# ---------------------------------------------------------------------------- Normalize

def normalize_weights(ctx):
    p = ctx.param("norm_param")
    scale = ctx.blobs[0].reshape(-1)
    want = 1 if p.channel_shared else ctx.in_shapes[0][1]
    if scale.size != want:
        ctx.fail(f"Normalize scale has {scale.size} values, expected {want} "
                 f"(channel_shared: {str(p.channel_shared).lower()})")
    return {ctx.name: [scale]}


@register_converter(
    "Normalize", weights=normalize_weights, shape=normalize_shape, keras_classes="Normalize",
    fillers=Fillers("norm_param", ("scale_filler",), unset=("one",)))
def normalize(ctx):
    from ..layers.ssd import Normalize

    p = ctx.param("norm_param")
    shape = ctx.in_shapes[0]
    if len(shape) > 4:
        ctx.fail(f"Normalize takes at most 4-D inputs (Caffe's legacy channels/height/"
                 f"width), found {list(shape)}")
    # fresh values come from the prototxt's scale_filler (fillers.py)
    layer = Normalize(across_spatial=p.across_spatial, channel_shared=p.channel_shared,
                      eps=p.eps, axis=-1 if len(shape) == 4 else 1, name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


# ----------------------------------------------------------------------------- PriorBox

def _hw_setting(ctx, p, one, h, w):
    """(h, w) from ``one`` or from ``h`` and ``w`` (not both), positive; None if unset."""
    if p.has(h) or p.has(w):
        if p.has(one):
            ctx.fail(f"give either {one} or {h}/{w}, not both")
        hw = (getattr(p, h), getattr(p, w))
        if min(hw) <= 0:
            ctx.fail(f"{h} and {w} must be positive, found {list(hw)}")
        return hw
    if p.has(one):
        if getattr(p, one) <= 0:
            ctx.fail(f"{one} must be positive")
        return (getattr(p, one), getattr(p, one))
    return None


def _prior_box_config(ctx):
    """The PriorBox layer's settings, checked as prior_box_layer.cpp checks them."""
    p = ctx.param("prior_box_param")
    mins = [float(v) for v in p.min_size]
    maxs = [float(v) for v in p.max_size]
    if not mins or min(mins) <= 0:
        ctx.fail(f"prior_box_param needs positive min_size values, found {mins}")
    if maxs and (len(maxs) != len(mins) or any(b <= a for a, b in zip(mins, maxs))):
        ctx.fail(f"max_size {maxs} must give one value per min_size {mins}, each larger")
    var = [float(v) for v in p.variance]
    if len(var) not in (0, 1, 4) or any(v <= 0 for v in var):
        ctx.fail(f"variance takes 1 or 4 positive values, found {var}")
    image_hw = _hw_setting(ctx, p, "img_size", "img_h", "img_w")
    if image_hw is None:
        if len(ctx.in_shapes) < 2 or len(ctx.in_shapes[1]) < 4:
            ctx.fail("without img_size (or img_h/img_w) PriorBox takes the image size from "
                     "a second, 4-D bottom")
        image_hw = tuple(ctx.in_shapes[1][2:4])
    # no step: Caffe divides the image size by the feature map size
    step_hw = _hw_setting(ctx, p, "step", "step_h", "step_w") or (0.0, 0.0)
    feature = ctx.in_shapes[0]
    feature_hw = (feature[2] if len(feature) > 2 else 1, feature[3] if len(feature) > 3 else 1)
    return {"feature_hw": feature_hw, "image_hw": image_hw, "min_sizes": mins,
            "max_sizes": maxs, "aspect_ratios": [float(a) for a in p.aspect_ratio],
            "flip": p.flip, "clip": p.clip, "variance": var, "step_hw": step_hw,
            "offset": p.offset}


@register_converter("PriorBox", shape=prior_box_shape, keras_classes=())
def prior_box(ctx):
    from ..layers.ssd import PriorBox

    layer = PriorBox(**_prior_box_config(ctx), name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs))]


# ---------------------------------------------------------------------- DetectionOutput

def _detection_output_config(ctx):
    p = ctx.param("detection_output_param")
    if not p.has("num_classes") or p.num_classes <= 0:
        ctx.fail("detection_output_param needs num_classes > 0")
    c = p.num_classes
    num_loc = 1 if p.share_location else c
    loc_shape, conf_shape, prior_shape = ctx.in_shapes[:3]
    if len(prior_shape) < 3 or prior_shape[2] % 4:
        ctx.fail(f"the prior bottom must be (1, 2, num_priors*4) as PriorBox makes it, "
                 f"found {list(prior_shape)}")
    priors = prior_shape[2] // 4
    if math.prod(loc_shape[1:]) != priors * num_loc * 4:
        ctx.fail(f"{priors} priors x {num_loc} location classes x 4 = "
                 f"{priors * num_loc * 4} location values expected, the loc bottom "
                 f"{list(loc_shape)} has {math.prod(loc_shape[1:])}")
    if math.prod(conf_shape[1:]) != priors * c:
        ctx.fail(f"{priors} priors x {c} classes = {priors * c} confidences expected, the "
                 f"conf bottom {list(conf_shape)} has {math.prod(conf_shape[1:])}")
    nms = p.nms_param  # weiliu89's Caffe applies NMS with these defaults when it is unset
    if nms.nms_threshold < 0:
        ctx.fail(f"nms_threshold must be non-negative, found {nms.nms_threshold}")
    if not 0 < nms.eta <= 1:
        ctx.fail(f"nms eta must be in (0, 1], found {nms.eta}")
    return {"num_classes": c, "num_priors": priors, "share_location": p.share_location,
            "background_label_id": p.background_label_id, "code_type": p.code_type,
            "variance_encoded_in_target": p.variance_encoded_in_target,
            "keep_top_k": p.keep_top_k,
            "confidence_threshold": (p.confidence_threshold
                                     if p.has("confidence_threshold") else None),
            "nms_threshold": nms.nms_threshold,
            "top_k": nms.top_k if nms.has("top_k") else -1, "eta": nms.eta}


def _caffe_flat(ctx, tensor, shape, what):
    """A bottom as (batch, count) in Caffe's NCHW value order."""
    import keras

    if len(shape) == 4 and (shape[2] != 1 or shape[3] != 1):
        tensor = ctx.add(keras.layers.Permute((3, 1, 2), name=ctx.sub_name(f"{what}_nchw")),
                         tensor)
    if len(shape) != 2:
        tensor = ctx.add(keras.layers.Reshape((math.prod(shape[1:]),),
                                              name=ctx.sub_name(f"{what}_flat")), tensor)
    return tensor


@register_converter("DetectionOutput", shape=detection_output_shape,
                    keras_classes=())
def detection_output(ctx):
    from ..layers.ssd import DetectionOutput

    cfg = _detection_output_config(ctx)
    loc = _caffe_flat(ctx, ctx.inputs[0], ctx.in_shapes[0], "loc")
    conf = _caffe_flat(ctx, ctx.inputs[1], ctx.in_shapes[1], "conf")
    prior = ctx.inputs[2]
    if len(ctx.in_shapes[2]) == 4:  # NHWC in Keras; back to Caffe's order
        import keras
        prior = ctx.add(keras.layers.Permute((3, 1, 2), name=ctx.sub_name("prior_nchw")),
                        prior)
    layer = DetectionOutput(**cfg, name=ctx.name)
    return [ctx.add(layer, [loc, conf, prior])]
