"""The preprocessing options shared by convert, predict, verify, codegen and
dump-reference, and the Preprocessor they describe."""
from __future__ import annotations

import argparse

from ..errors import CaffeFormatError
from ..images import CHANNEL_ORDERS, RESIZE_METHODS
from ..preprocess import Preprocessor


def _floats(text):
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def _size(text):
    try:
        dims = [int(v) for v in text.lower().replace("x", ",").split(",") if v]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size like 256 or 256,256, got {text!r}")
    return tuple(dims)


def add_arguments(parser, title="preprocessing (pycaffe's Transformer order)"):
    """The preprocessing options shared by convert, predict, verify and codegen."""
    g = parser.add_argument_group(title)
    g.add_argument("--mean", metavar="FILE", help="mean image to subtract: .binaryproto or "
                   ".npy, (C, H, W) in the net's channel order; larger than the input -> "
                   "centre-cropped")
    g.add_argument("--mean-value", metavar="B,G,R", type=_floats,
                   help="per-channel mean in the net's channel order, e.g. 104,117,123")
    g.add_argument("--mean-per-channel", action="store_true",
                   help="subtract the mean image's per-channel average instead")
    g.add_argument("--channel-order", choices=CHANNEL_ORDERS, type=str.upper,
                   help="channel order the net was trained on (default BGR, Caffe's); "
                        "images are read as RGB")
    g.add_argument("--raw-scale", type=float, metavar="S",
                   help="pixels are scaled to [0, S] before the mean (default 255)")
    g.add_argument("--scale", type=float, metavar="S", dest="input_scale",
                   help="multiply after the mean subtraction (transform_param scale, "
                        "e.g. 0.017 or 0.00390625)")
    g.add_argument("--resize", type=_size, metavar="H[,W]", dest="resize_to",
                   help="resize images to this first, then centre-crop the input size "
                        "(Caffe's 256 -> 227 test crop)")
    g.add_argument("--resize-method", choices=list(RESIZE_METHODS),
                   help="default skimage: " + RESIZE_METHODS["skimage"])
    g.add_argument("--transform-from", metavar="TRAIN_VAL",
                   help="read mean/scale/crop from this train_val prototxt's TEST data layer")
    g.add_argument("--image-input", metavar="BLOB",
                   help="the input blob the images go to (default: the first 4-D input)")
    return g


PREPROCESS_OPTIONS = ("mean", "mean_value", "mean_per_channel", "channel_order", "raw_scale",
                      "input_scale", "resize_to", "resize_method", "transform_from",
                      "image_input")


def any_given(args):
    """Whether any preprocessing option was given on the command line."""
    return any(getattr(args, k, None) not in (None, False) for k in PREPROCESS_OPTIONS)


def from_args(args, prototxt, input_shapes=None):
    """A Preprocessor from the add_arguments options."""
    if args.mean and args.mean_value:
        raise CaffeFormatError("give --mean or --mean-value, not both", path=args.mean)
    return Preprocessor.from_net(
        prototxt, input_name=args.image_input, transform_from=args.transform_from,
        input_shapes=input_shapes, mean=args.mean or args.mean_value,
        mean_per_channel=args.mean_per_channel or None, channel_order=args.channel_order,
        raw_scale=args.raw_scale, input_scale=args.input_scale, resize_to=args.resize_to,
        resize_method=args.resize_method)
