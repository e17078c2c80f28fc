"""Options shared by subcommands."""
from __future__ import annotations

import argparse


def parse_input_shape(text):
    """NAME=N,C,H,W -> (name, shape)."""
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"expected NAME=DIM,DIM,... with positive dims (e.g. data=1,3,224,224), got {text!r}")
    return name, shape


def add_input_shape(parser):
    parser.add_argument(
        "--input-shape", metavar="NAME=N,C,H,W", type=parse_input_shape, action="append",
        default=[], help="set or override an input blob's Caffe (NCHW) shape; repeatable")


def input_shapes(args):
    return dict(args.input_shape) or None
