"""Caffe input preprocessing: pycaffe's ``caffe.io.Transformer`` in numpy, and the same
steps as Keras layers in front of a converted model.

pycaffe feeds a net like this (Transformer.preprocess): the image as float in [0, 1]
(caffe.io.load_image), resized to the input size, HWC -> CHW, channels swapped (RGB ->
BGR), times ``raw_scale``, minus the mean, times ``input_scale``. Caffe's own data layers
(``transform_param``) do the same with raw_scale 255: ``(pixels - mean) * scale``.

    pre = Preprocessor.from_net("deploy.prototxt", mean="mean.binaryproto")
    x = pre("cat.jpg")                 # (1, H, W, C) float32, for the converted model
    model = pre.wrap(caffe2keras.convert("deploy.prototxt", "net.caffemodel"))
    model({"data": pre.load_batch(["cat.jpg"])})   # RGB pixels in, same result

No Keras here unless you call ``wrap``; images are read with Pillow.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import CaffeFormatError, NameNotFoundError, UserInputError
from .images import (
    CHANNEL_ORDERS,
    RESIZE_METHODS,
    center_crop,
    load_image,
    resize_image,
)


def parse_mean(mean):
    """A mean as float32: a .binaryproto/.npy path, an array ((C,), (C, H, W) or (H, W)),
    or numbers. Caffe's channel order (BGR for colour nets), as Caffe stores it."""
    if mean is None:
        return None
    if isinstance(mean, (str, os.PathLike)):
        from .mean import read_mean
        arr = read_mean(mean)
    else:
        arr = np.asarray(mean, dtype=np.float32)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (1, 3):
        raise CaffeFormatError(f"mean has shape {list(arr.shape)}; expected per-channel "
                               f"values (C,) or a mean image (C, H, W)",
                               path=mean if isinstance(mean, (str, os.PathLike)) else None)
    return arr.astype(np.float32)


def _in_test_phase(entry):
    """Caffe's NetState rule for phase TEST, level 0, no stages."""
    def meets(rule):
        return (not rule.has("phase") or rule.phase in ("TEST", 1)) and not rule.stage \
            and (not rule.has("min_level") or rule.min_level <= 0) \
            and (not rule.has("max_level") or rule.max_level >= 0)
    if entry.include:
        return any(meets(r) for r in entry.include)
    return not any(meets(r) for r in entry.exclude)


def _test_data_layer(proto, input_name, path):
    from .net import DATA_TYPES
    from .proto.schema import V1_TYPE_NAMES

    data = []
    for e in proto.layers or proto.layer:
        type_ = V1_TYPE_NAMES.get(e.type, str(e.type)) if proto.layers else e.type
        if type_ in DATA_TYPES and _in_test_phase(e):
            data.append((e, type_))
    if not data:
        raise CaffeFormatError("has no TEST-phase data layer with a transform_param to "
                               "read preprocessing from", path=path)
    for e, type_ in data:
        if input_name in list(e.top):
            return e, type_
    return data[0]


def read_transform_param(prototxt, input_name="data"):
    """Preprocessing a train_val prototxt's TEST-phase data layer applies, as Preprocessor
    keyword arguments: mean (file or values), input_scale, and resize_to for nets whose
    database images are bigger than the crop (mean image size, or ImageData's
    new_height/new_width)."""
    from .files import read_text
    from .proto.text import parse_text
    proto = parse_text(read_text(prototxt), "NetParameter", path=prototxt)
    entry, type_ = _test_data_layer(proto, input_name, prototxt)
    tp = entry.transform_param
    out = {"source": f"transform_param of {type_} layer '{entry.name}' in {prototxt}"}
    if tp.has("scale") and tp.scale != 1:
        out["input_scale"] = float(tp.scale)
    if tp.has("mean_file") and len(tp.mean_value):
        raise CaffeFormatError("transform_param has both mean_file and mean_value; Caffe "
                               "accepts only one", path=prototxt, layer=entry.name)
    crop = (tp.crop_h or tp.crop_size, tp.crop_w or tp.crop_size)
    if tp.has("mean_file"):
        mean_path = Path(tp.mean_file)
        candidates = [mean_path] if mean_path.is_absolute() else \
            [mean_path, Path(prototxt).resolve().parent / mean_path,
             Path(prototxt).resolve().parent / mean_path.name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CaffeFormatError(
                f"transform_param names mean_file '{tp.mean_file}', which is not here "
                f"(looked in the current folder and beside the prototxt); pass it with "
                f"--mean", path=prototxt, layer=entry.name)
        out["mean"] = str(found)
        if all(crop):
            mean = parse_mean(found)
            if mean.ndim == 3 and mean.shape[1:] != crop:
                out["resize_to"] = mean.shape[1:]
    elif len(tp.mean_value):
        out["mean"] = [float(v) for v in tp.mean_value]
    if type_ == "ImageData":
        p = entry.image_data_param
        if p.new_height and p.new_width:
            out["resize_to"] = (int(p.new_height), int(p.new_width))
        if not p.is_color:
            out["channels"] = 1
    if tp.force_gray:
        out["channels"] = 1
    if all(crop):
        out["crop"] = crop
    return out


# --- the preprocessor -----------------------------------------------------------------

class Preprocessor:
    """pycaffe's Transformer for one net input, in numpy, plus the same steps as Keras
    layers (``wrap``).

    size:           the net's input (height, width).
    channels:       3 (colour; images are read as RGB) or 1 (intensity).
    mean:           None, per-channel values, a (C, H, W) mean image, or a .binaryproto /
                    .npy path; in the net's channel order. A mean image larger than the
                    input is centre-cropped, as Caffe's data layer crops it.
    mean_per_channel: average a mean image per channel (as Caffe's classification
                    example does) instead of subtracting it pixel by pixel.
    channel_order:  "BGR" (Caffe's usual: images are swapped from RGB), "RGB", or a
                    channel_swap tuple as pycaffe takes it.
    raw_scale:      the net sees pixels scaled to [0, raw_scale] (255 for most nets).
    input_scale:    factor after the mean subtraction (transform_param's ``scale``).
    resize_to:      resize images to this (height, width) first, then centre-crop the input
                    size (Caffe's 256 -> 227 test crop); default: resize straight to size.
    resize_method:  "skimage" (default), "pycaffe" or "pillow"; see RESIZE_METHODS.
    pixel_range:    the value of a full-intensity pixel in the images you pass: 255 for
                    uint8-style images (default), 1.0 for caffe.io.load_image's floats.
    """

    def __init__(self, size, channels=3, mean=None, mean_per_channel=False,
                 channel_order="BGR", raw_scale=255.0, input_scale=None, resize_to=None,
                 resize_method="skimage", pixel_range=255.0, input_name="data", source=None):
        self.size = (int(size[0]), int(size[1]))
        self.channels = int(channels)
        self.input_name = input_name
        self.source = source
        if resize_method not in RESIZE_METHODS:
            raise UserInputError(f"unknown resize method {resize_method!r}; use one of "
                                  f"{', '.join(RESIZE_METHODS)}")
        self.resize_method = resize_method
        self.resize_to = None if resize_to is None else (int(resize_to[0]), int(resize_to[1]))
        if self.resize_to and (self.resize_to[0] < self.size[0] or
                               self.resize_to[1] < self.size[1]):
            raise UserInputError(f"resize_to {self.resize_to} is smaller than the input size "
                                  f"{self.size}; it is the size to crop from")
        self.channel_swap = self._channel_swap(channel_order)
        self.raw_scale = float(raw_scale)
        self.input_scale = None if input_scale is None else float(input_scale)
        self.pixel_range = float(pixel_range)
        self.mean_source = mean if isinstance(mean, (str, os.PathLike)) else None
        self.mean = self._fit_mean(parse_mean(mean), mean_per_channel)

    # construction helpers

    def _channel_swap(self, order):
        if self.channels == 1 or order is None:
            return None
        if isinstance(order, str):
            key = order.upper()
            if key not in CHANNEL_ORDERS:
                raise UserInputError(f"channel order must be BGR or RGB, got {order!r}")
            return (2, 1, 0) if key == "BGR" else None
        swap = tuple(int(i) for i in order)
        if sorted(swap) != list(range(self.channels)):
            raise UserInputError(f"channel swap {swap} is not a permutation of the "
                                  f"{self.channels} channels")
        return None if swap == tuple(range(self.channels)) else swap

    def _fit_mean(self, mean, per_channel):
        if mean is None:
            return None
        where = {"path": self.mean_source} if self.mean_source else {}
        if mean.shape[0] != self.channels:
            if mean.ndim == 1 and mean.shape[0] == 1:
                return np.repeat(mean, self.channels)   # Caffe: one mean_value for all
            raise CaffeFormatError(f"mean has {mean.shape[0]} channels, the net input "
                                   f"'{self.input_name}' has {self.channels}", **where)
        if mean.ndim == 3 and per_channel:
            return mean.reshape(self.channels, -1).mean(axis=1).astype(np.float32)
        if mean.ndim == 3 and mean.shape[1:] != self.size:
            mh, mw = mean.shape[1:]
            if mh < self.size[0] or mw < self.size[1]:
                raise CaffeFormatError(
                    f"mean image is {mh}x{mw}, smaller than the input "
                    f"{self.size[0]}x{self.size[1]}; use its per-channel average "
                    f"(--mean-per-channel) or --mean-value", **where)
            mean = np.ascontiguousarray(center_crop(mean.transpose(1, 2, 0), self.size)
                                        .transpose(2, 0, 1))
        return mean

    @classmethod
    def from_net(cls, prototxt, input_name=None, transform_from=None, input_shapes=None,
                 **kwargs):
        """A Preprocessor for ``prototxt``'s image input (the first 4-D input unless
        ``input_name``): size and channels from the net, preprocessing from a train_val
        prototxt's transform_param (``transform_from``), then ``kwargs`` (Preprocessor
        arguments; None values are ignored)."""
        from .net import load_net
        net = load_net(prototxt, input_shapes=input_shapes)
        four_d = [b for b, s in net.inputs.items() if len(s) == 4]
        if input_name is None:
            if not four_d:
                raise CaffeFormatError(
                    f"has no 4-D (image) input to preprocess; inputs: "
                    f"{ {b: list(s) for b, s in net.inputs.items()} }", path=prototxt)
            input_name = four_d[0]
        elif input_name not in four_d:
            raise CaffeFormatError(f"'{input_name}' is not a 4-D input of this net (4-D "
                                   f"inputs: {four_d or 'none'})", path=prototxt)
        shape = net.inputs[input_name]
        args = {"size": shape[2:], "channels": shape[1], "input_name": input_name,
                "source": str(prototxt)}
        if transform_from is not None:
            tp = read_transform_param(transform_from, input_name)
            crop = tp.pop("crop", None)
            if crop and tuple(crop) != tuple(shape[2:]):
                raise CaffeFormatError(
                    f"transform_param crops {crop[0]}x{crop[1]}, but the net input "
                    f"'{input_name}' is {shape[2]}x{shape[3]}", path=transform_from)
            args.update(tp)
        args.update({k: v for k, v in kwargs.items() if v is not None})
        return cls(**args)

    # numpy pipeline

    def load(self, src):
        """An image (path, PIL image or array) at the net's input size, RGB, in pixel
        units (0..pixel_range), float32, (H, W, C): resized (and centre-cropped when
        resize_to is set), not yet normalised. Feed these to a ``wrap``-ped model."""
        img = load_image(src, self.channels)
        target = self.resize_to or self.size
        if img.shape[:2] != target:
            if self.resize_method == "pillow":
                img = resize_image(img, target, "pillow")
            else:   # pycaffe resizes load_image's [0, 1] floats; linear, so same result
                img = resize_image(img.astype(np.float32) / np.float32(self.pixel_range),
                                   target, self.resize_method) * np.float32(self.pixel_range)
        if self.resize_to:
            img = center_crop(img, self.size)
        return np.ascontiguousarray(img, dtype=np.float32)

    def load_batch(self, srcs):
        """``load`` for several images: (N, H, W, C) float32."""
        if not isinstance(srcs, (list, tuple)) and not (
                isinstance(srcs, np.ndarray) and srcs.ndim == 4):
            srcs = [srcs]   # one path, PIL image or (H, W[, C]) array
        return np.stack([self.load(s) for s in srcs])

    def normalize(self, image):
        """pycaffe's Transformer steps after the resize, on an (H, W, C) RGB image in pixel
        units at the input size: -> (C, H, W) float32, the Caffe input blob."""
        x = np.asarray(image, dtype=np.float32)
        if x.shape[:2] != self.size or x.ndim != 3 or x.shape[2] != self.channels:
            raise UserInputError(f"expected ({self.size[0]}, {self.size[1]}, {self.channels}), "
                                  f"got {x.shape}; use load() or preprocess() to resize")
        x = x / np.float32(self.pixel_range)    # caffe.io.load_image's [0, 1]
        x = x.transpose(2, 0, 1)
        if self.channel_swap is not None:
            x = x[list(self.channel_swap)]
        x = x * np.float32(self.raw_scale)
        if self.mean is not None:
            x = x - (self.mean[:, None, None] if self.mean.ndim == 1 else self.mean)
        if self.input_scale is not None:
            x = x * np.float32(self.input_scale)
        return np.ascontiguousarray(x, dtype=np.float32)

    def preprocess(self, src):
        """One image -> (C, H, W) float32, what pycaffe's Transformer.preprocess gives."""
        return self.normalize(self.load(src))

    def caffe(self, srcs):
        """Images -> (N, C, H, W) float32 Caffe input blob."""
        return np.stack([self.normalize(x) for x in self.load_batch(srcs)])

    def __call__(self, srcs):
        """Images -> (N, H, W, C) float32, the converted model's input (Keras layout)."""
        return self.caffe(srcs).transpose(0, 2, 3, 1)

    # Keras

    def keras_steps(self):
        """[(suffix, layer class name, kwargs)] for the steps after the resize, identities
        left out: "ChannelReorder"/"MeanSubtraction" (caffe2keras) or "Rescaling" (Keras)."""
        steps = []
        if self.channel_swap is not None:
            steps.append(("rgb_to_bgr" if self.channel_swap == (2, 1, 0) else "channel_swap",
                          "ChannelReorder", {"order": list(self.channel_swap)}))
        factor = self.raw_scale / self.pixel_range
        if factor != 1.0:
            steps.append(("raw_scale", "Rescaling", {"scale": factor}))
        if self.mean is not None:
            kwargs = {"mean": self.mean.tolist()} if self.mean.ndim == 1 else \
                {"shape": (*self.size, self.channels)}
            steps.append(("mean", "MeanSubtraction", kwargs))
        if self.input_scale is not None and self.input_scale != 1.0:
            steps.append(("input_scale", "Rescaling", {"scale": self.input_scale}))
        return steps

    def wrap(self, model):
        """``model`` (from convert()) with these preprocessing layers in front of its
        input ``input_name``: it then takes RGB images at the input size, NHWC, pixel
        units (uint8 or float), e.g. from ``load_batch``. Same layers, one flat model."""
        import keras

        from .emit.layers import preprocess as layers
        from .keras_compat import producer
        from .keras_graph import replay

        inputs = model.input
        single = not isinstance(inputs, dict)
        named = {self.input_name: inputs} if single else dict(inputs)
        if self.input_name not in named:
            raise NameNotFoundError(f"the model has no input '{self.input_name}' (inputs: "
                           f"{', '.join(named)})")
        want = (*self.size, self.channels)
        got = tuple(named[self.input_name].shape[1:])
        if got != want:
            raise UserInputError(f"input '{self.input_name}' of the model has shape {got}, "
                                  f"preprocessing makes {want}")
        used = {layer.name for layer in model.layers}
        new_inputs = {}
        for key, tensor in named.items():
            layer_name = producer(tensor).name
            new_inputs[key] = keras.Input(shape=tensor.shape[1:], name=layer_name,
                                          dtype=tensor.dtype)
        fed = dict(new_inputs)
        x = new_inputs[self.input_name]
        base = producer(x).name
        mean_layer = None
        for suffix, cls_name, kwargs in self.keras_steps():
            name, k = f"{base}_{suffix}", 1
            while name in used:
                name, k = f"{base}_{suffix}_{k}", k + 1
            used.add(name)
            cls = keras.layers.Rescaling if cls_name == "Rescaling" else getattr(layers,
                                                                               cls_name)
            layer = cls(**kwargs, name=name)
            x = layer(x)
            if "shape" in kwargs:
                mean_layer = layer
        fed[self.input_name] = x
        outputs = replay(model, x if single else fed)
        wrapped = keras.Model(inputs=new_inputs[self.input_name] if single else new_inputs,
                              outputs=outputs, name=model.name)
        if mean_layer is not None:
            mean_layer.set_weights([self.mean.transpose(1, 2, 0)])
        return wrapped

    def describe(self):
        """One line per step, for CLI output."""
        size = f"{self.size[0]}x{self.size[1]}"
        resize = (f"resize to {self.resize_to[0]}x{self.resize_to[1]} ({self.resize_method}), "
                  f"centre-crop {size}" if self.resize_to else
                  f"resize to {size} ({self.resize_method})")
        colour = "RGB" if self.channels == 3 else "gray"
        first = (f"input '{self.input_name}': {colour} images, pixels "
                 f"0..{self.pixel_range:g}; {resize}")
        lines = [first]
        if self.channel_swap is not None:
            lines.append("RGB -> BGR" if self.channel_swap == (2, 1, 0)
                         else f"channel swap {list(self.channel_swap)}")
        lines.append(f"x {self.raw_scale / self.pixel_range:g} (raw_scale {self.raw_scale:g})")
        if self.mean is None:
            lines.append("no mean subtraction")
        elif self.mean.ndim == 1:
            lines.append(f"minus mean {_fmt_values(self.mean)}")
        else:
            src = f" from {self.mean_source}" if self.mean_source else ""
            lines.append(f"minus mean image {self.mean.shape[1]}x{self.mean.shape[2]}{src} "
                         f"(per channel ~{_fmt_values(self.mean.reshape(self.channels, -1).mean(1))})")
        if self.input_scale is not None and self.input_scale != 1:
            lines.append(f"x {self.input_scale:g} (input scale)")
        if self.source and "transform_param" in str(self.source):
            lines.append(f"from {self.source}")
        return lines

    def __repr__(self):
        return f"Preprocessor({'; '.join(self.describe())})"


def _fmt_values(values):
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"
