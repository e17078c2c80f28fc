"""caffe2keras codegen DEPLOY [--weights W] -o model.py"""
from __future__ import annotations

from .common import add_input_shape, input_shapes


def add_parser(sub):
    from .preprocess_options import add_arguments

    p = sub.add_parser(
        "codegen", help="write the converted model as plain Keras 3 Python code",
        description="Write DEPLOY as idiomatic Keras 3 functional code (one statement per "
                    "layer, Caffe names in comments where the Keras name differs) plus, with "
                    "--weights, a .weights.h5 file beside it. `python model.py` builds the "
                    "model; `from model import build_model` gives the same model as "
                    "caffe2keras.convert().")
    p.add_argument("deploy", help="the net's .prototxt")
    p.add_argument("weights_pos", nargs="?", metavar="WEIGHTS",
                   help="its .caffemodel (same as --weights)")
    p.add_argument("--weights", help="the .caffemodel whose weights to save beside the code")
    p.add_argument("-o", "--output", required=True, help="the .py file to write")
    p.add_argument("--weights-output", metavar="FILE.weights.h5",
                   help="where to write the weights (default: beside the .py, "
                        "<name>.weights.h5)")
    p.add_argument("--outputs", help="comma-separated blob names to expose (default: the "
                                     "net's outputs; 'all' for every blob)")
    add_input_shape(p)
    p.add_argument("--preprocess", action="store_true",
                   help="put the preprocessing layers in the code too (see convert)")
    add_arguments(p)
    return p


def run(args) -> int:
    from ..codegen import write_python
    from ..errors import CaffeFormatError
    from .preprocess_options import any_given, from_args

    if args.weights and args.weights_pos and args.weights != args.weights_pos:
        raise CaffeFormatError("two different weights files given (positional and "
                               "--weights)", path=args.weights_pos)
    weights = args.weights or args.weights_pos
    shapes = input_shapes(args)
    pre = from_args(args, args.deploy, shapes) if args.preprocess or any_given(args) else None
    model, weights_path = write_python(args.deploy, args.output, caffemodel=weights,
                                       outputs=args.outputs, input_shapes=shapes,
                                       preprocessor=pre, weights_output=args.weights_output)
    print(f"wrote {args.output}: {len(model.layers)} Keras layers, "
          f"{model.count_params():,} parameters" +
          (f"; weights in {weights_path}" if weights_path else "; no weights (fresh init)"))
    print(f"build it with `python {args.output}`, or `from "
          f"{args.output.rsplit('/', 1)[-1][:-3]} import build_model`")
    return 0
