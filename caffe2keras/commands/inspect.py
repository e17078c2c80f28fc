"""caffe2keras inspect DEPLOY [WEIGHTS]"""
from __future__ import annotations

from .common import add_input_shape, input_shapes


def add_parser(sub):
    p = sub.add_parser(
        "inspect", help="show a Caffe net's layers, shapes and parameters",
        description="Print every layer of a Caffe net: type, bottoms -> tops, output shape "
                    "(Caffe NCHW), parameter shapes and counts, totals, and up front every "
                    "layer type the converter cannot handle yet.")
    p.add_argument("deploy", help="the net's .prototxt")
    p.add_argument("weights", nargs="?", help="its .caffemodel (checks the weights too)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_input_shape(p)
    return p


def run(args) -> int:
    from ..graph import load_graph
    from ..inspect import describe, format_table, to_json

    info = describe(load_graph(args.deploy, args.weights, input_shapes=input_shapes(args)))
    print(to_json(info) if args.json else format_table(info))
    return 0
