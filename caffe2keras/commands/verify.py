"""caffe2keras verify DEPLOY WEIGHTS [--input IMAGE|NPZ] [--reference opencv|pycaffe|FILE]"""
from __future__ import annotations

from .common import add_input_shape, input_shapes


def add_parser(sub):
    from .preprocess_options import add_arguments

    p = sub.add_parser(
        "verify", help="compare the converted model with a Caffe runtime, blob by blob",
        description="Run the converted model and a reference on the same input and print "
                    "every blob's shape and error, pass/fail by the project's criterion "
                    "(|ours - ref| <= 1e-4 * max(1, |ref|max) + 1e-4 * |ref|). References: "
                    "OpenCV's dnn module (pip install 'caffe2keras[opencv]'), pycaffe, or a "
                    ".npz of Caffe blobs (see dump-reference). Where OpenCV is known to "
                    "deviate from Caffe (LRN k, InnerProduct transpose) the blobs it reaches "
                    "are marked as such. Exit status 0: all agree; 1: a blob differs; "
                    "2: the reference cannot run this net.")
    p.add_argument("deploy", help="the net's .prototxt")
    p.add_argument("weights", help="its .caffemodel")
    p.add_argument("--input", metavar="IMAGE|NPZ",
                   help="an image (preprocessed with the options below) or a .npz of input "
                        "blobs (NCHW); default: random normal, or the inputs a reference "
                        "file holds")
    p.add_argument("--reference", default="opencv", metavar="opencv|pycaffe|FILE.npz",
                   help="what to compare with (default opencv)")
    p.add_argument("--caffe-python", metavar="PYTHON",
                   help="for --reference pycaffe: a Python that can `import caffe`")
    p.add_argument("--report", metavar="FILE.html|FILE.png",
                   help="also write the table and a plot of the error per blob")
    p.add_argument("--against", metavar="MODEL.onnx|MODEL.tflite|DIR",
                   help="check an exported artifact (from convert -o ...) in its own runtime "
                        "(onnxruntime, LiteRT, TensorFlow) instead of the Keras model; the "
                        "blobs it outputs are compared")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    p.add_argument("--preprocess", action="store_true",
                   help="check the model with its preprocessing layers (as convert "
                        "--preprocess makes it) on the raw image")
    add_input_shape(p)
    add_arguments(p)
    return p


def run(args) -> int:
    import sys

    from ..verify import ReferenceUnavailable, format_table, verify, write_report
    from .preprocess_options import any_given, from_args

    shapes = input_shapes(args)
    pre = None
    image = args.input is not None and not args.input.endswith(".npz")
    if image or any_given(args) or args.preprocess:
        pre = from_args(args, args.deploy, shapes)
    model = None
    if args.preprocess and image and not args.against:
        import warnings

        from ..api import convert
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = pre.wrap(convert(args.deploy, args.weights, outputs="all",
                                     input_shapes=shapes))
    try:
        report = verify(args.deploy, args.weights, input=args.input, reference=args.reference,
                        preprocessor=pre, input_shapes=shapes, seed=args.seed, model=model,
                        caffe_python=args.caffe_python, against=args.against,
                        against_takes_image=bool(args.preprocess and image))
    except ReferenceUnavailable as e:
        print(f"caffe2keras verify: reference unavailable: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.report:
        print(f"wrote {write_report(report, args.report)}")
    return 0 if report.ok else 1
