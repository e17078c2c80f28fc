"""SSD (weiliu89/caffe) layers: Normalize, PriorBox, DetectionOutput.

(Permute, which SSD nets also use, lives in tensor.py.)
"""
from __future__ import annotations

import math

from ...errors import CaffeFormatError
from ..registry import register_converter, register_weights


def _fail(ctx, msg):
    raise CaffeFormatError(msg, path=ctx.graph.net.path, position=ctx.layer.position or None,
                           layer=ctx.layer.name)


# ---------------------------------------------------------------------------- Normalize

@register_weights("Normalize")
def normalize_weights(ctx):
    p = ctx.param("norm_param")
    scale = ctx.blobs[0].reshape(-1)
    want = 1 if p.channel_shared else ctx.in_shapes[0][1]
    if scale.size != want:
        _fail(ctx, f"Normalize scale has {scale.size} values, expected {want} "
                   f"(channel_shared: {str(p.channel_shared).lower()})")
    return {ctx.name: [scale]}


@register_converter("Normalize")
def normalize(ctx):
    from ..layers.ssd import Normalize

    p = ctx.param("norm_param")
    shape = ctx.in_shapes[0]
    if len(shape) > 4:
        _fail(ctx, f"Normalize takes at most 4-D inputs (Caffe's legacy channels/height/"
                   f"width), found {list(shape)}")
    # fresh values come from the prototxt's scale_filler (fillers.py)
    layer = Normalize(across_spatial=p.across_spatial, channel_shared=p.channel_shared,
                      eps=p.eps, axis=-1 if len(shape) == 4 else 1, name=ctx.name)
    return [ctx.add(layer, ctx.inputs[0])]


# ----------------------------------------------------------------------------- PriorBox

def _prior_box_config(ctx):
    """The PriorBox layer's settings, checked as prior_box_layer.cpp checks them."""
    p = ctx.param("prior_box_param")
    mins = [float(v) for v in p.min_size]
    maxs = [float(v) for v in p.max_size]
    if not mins or min(mins) <= 0:
        _fail(ctx, f"prior_box_param needs positive min_size values, found {mins}")
    if maxs and (len(maxs) != len(mins) or any(b <= a for a, b in zip(mins, maxs))):
        _fail(ctx, f"max_size {maxs} must give one value per min_size {mins}, each larger")
    var = [float(v) for v in p.variance]
    if len(var) not in (0, 1, 4) or any(v <= 0 for v in var):
        _fail(ctx, f"variance takes 1 or 4 positive values, found {var}")
    if p.has("img_h") or p.has("img_w"):
        if p.has("img_size"):
            _fail(ctx, "give either img_size or img_h/img_w, not both")
        image_hw = (p.img_h, p.img_w)
        if min(image_hw) <= 0:
            _fail(ctx, f"img_h and img_w must be positive, found {list(image_hw)}")
    elif p.has("img_size"):
        if p.img_size <= 0:
            _fail(ctx, "img_size must be positive")
        image_hw = (p.img_size, p.img_size)
    else:
        if len(ctx.in_shapes) < 2 or len(ctx.in_shapes[1]) < 4:
            _fail(ctx, "without img_size (or img_h/img_w) PriorBox takes the image size from "
                       "a second, 4-D bottom")
        image_hw = tuple(ctx.in_shapes[1][2:4])
    if p.has("step_h") or p.has("step_w"):
        if p.has("step"):
            _fail(ctx, "give either step or step_h/step_w, not both")
        step_hw = (p.step_h, p.step_w)
        if min(step_hw) <= 0:
            _fail(ctx, f"step_h and step_w must be positive, found {list(step_hw)}")
    elif p.has("step"):
        if p.step <= 0:
            _fail(ctx, "step must be positive")
        step_hw = (p.step, p.step)
    else:
        step_hw = (0.0, 0.0)  # Caffe: image size / feature map size
    feature = ctx.in_shapes[0]
    feature_hw = (feature[2] if len(feature) > 2 else 1, feature[3] if len(feature) > 3 else 1)
    return {"feature_hw": feature_hw, "image_hw": image_hw, "min_sizes": mins,
            "max_sizes": maxs, "aspect_ratios": [float(a) for a in p.aspect_ratio],
            "flip": p.flip, "clip": p.clip, "variance": var, "step_hw": step_hw,
            "offset": p.offset}


@register_converter("PriorBox")
def prior_box(ctx):
    from ..layers.ssd import PriorBox

    layer = PriorBox(**_prior_box_config(ctx), name=ctx.name)
    return [ctx.add(layer, list(ctx.inputs))]


# ---------------------------------------------------------------------- DetectionOutput

def _detection_output_config(ctx):
    p = ctx.param("detection_output_param")
    if not p.has("num_classes") or p.num_classes <= 0:
        _fail(ctx, "detection_output_param needs num_classes > 0")
    c = p.num_classes
    num_loc = 1 if p.share_location else c
    loc_shape, conf_shape, prior_shape = ctx.in_shapes[:3]
    if len(prior_shape) < 3 or prior_shape[2] % 4:
        _fail(ctx, f"the prior bottom must be (1, 2, num_priors*4) as PriorBox makes it, "
                   f"found {list(prior_shape)}")
    priors = prior_shape[2] // 4
    if math.prod(loc_shape[1:]) != priors * num_loc * 4:
        _fail(ctx, f"{priors} priors x {num_loc} location classes x 4 = "
                   f"{priors * num_loc * 4} location values expected, the loc bottom "
                   f"{list(loc_shape)} has {math.prod(loc_shape[1:])}")
    if math.prod(conf_shape[1:]) != priors * c:
        _fail(ctx, f"{priors} priors x {c} classes = {priors * c} confidences expected, the "
                   f"conf bottom {list(conf_shape)} has {math.prod(conf_shape[1:])}")
    nms = p.nms_param  # weiliu89's Caffe applies NMS with these defaults when it is unset
    if nms.nms_threshold < 0:
        _fail(ctx, f"nms_threshold must be non-negative, found {nms.nms_threshold}")
    if not 0 < nms.eta <= 1:
        _fail(ctx, f"nms eta must be in (0, 1], found {nms.eta}")
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


@register_converter("DetectionOutput")
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
