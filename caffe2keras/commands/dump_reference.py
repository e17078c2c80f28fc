"""caffe2keras dump-reference DEPLOY WEIGHTS -o blobs.npz [--input ...]"""
from __future__ import annotations

from .common import add_input_shape, input_shapes

ONE_LINER = (
    "python -c \"import sys, numpy as np, caffe; d, w, i, o = sys.argv[1:]; "
    "n = caffe.Net(d, caffe.TEST, weights=w); f = np.load(i); "
    "[n.blobs[k].reshape(*f[k].shape) for k in f.files]; "
    "[n.blobs[k].data.__setitem__(Ellipsis, f[k]) for k in f.files]; n.forward(); "
    "np.savez(o, **{k: v.data for k, v in n.blobs.items()})\" "
    "DEPLOY WEIGHTS inputs.npz blobs.npz")


def add_parser(sub):
    from .preprocess_options import add_arguments

    p = sub.add_parser(
        "dump-reference", help="save every blob real Caffe computes (pycaffe) to a .npz",
        description="Run the net in pycaffe on an input and save its input and every blob "
                    "after net.forward() (NCHW, keyed by blob name; Caffe's *_split_N blobs "
                    "left out) for `caffe2keras verify --reference FILE.npz`. Needs a Python "
                    "that can `import caffe`: this one, or --caffe-python. Where Caffe lives "
                    "on another machine, save the input here (--save-input) and run there: "
                    + ONE_LINER)
    p.add_argument("deploy", help="the net's .prototxt")
    p.add_argument("weights", help="its .caffemodel")
    p.add_argument("-o", "--output", required=True, help="the .npz file to write")
    p.add_argument("--input", metavar="IMAGE|NPZ",
                   help="an image (preprocessed with the options below) or a .npz of input "
                        "blobs; default: random normal (--seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    p.add_argument("--caffe-python", metavar="PYTHON",
                   help="a Python that can `import caffe` (its PYTHONPATH and "
                        "LD_LIBRARY_PATH come from this environment)")
    p.add_argument("--save-input", action="store_true",
                   help="only write the (preprocessed) input blobs to -o and print the "
                        "pycaffe one-liner to run where Caffe is")
    add_input_shape(p)
    add_arguments(p)
    return p


def run(args) -> int:
    import numpy as np

    from ..files import atomic_output
    from ..graph import load_graph
    from ..verify import ReferenceUnavailable, make_feed, run_pycaffe
    from .preprocess_options import any_given, from_args

    shapes = input_shapes(args)
    graph = load_graph(args.deploy, None, input_shapes=shapes)
    image = args.input is not None and not args.input.endswith(".npz")
    pre = from_args(args, args.deploy, shapes) if image or any_given(args) else None
    feed, desc, _ = make_feed(graph, args.input, pre, args.seed)
    if args.save_input:
        with atomic_output(args.output, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **feed)
        print(f"wrote {args.output}: input blobs {', '.join(feed)} ({desc})")
        print("run where pycaffe is installed:\n  " + ONE_LINER.replace(
            "DEPLOY", args.deploy).replace("WEIGHTS", args.weights).replace(
            "inputs.npz", args.output))
        return 0
    try:
        blobs = run_pycaffe(args.deploy, args.weights, feed, args.caffe_python)
    except ReferenceUnavailable as e:
        import sys
        print(f"caffe2keras dump-reference: {e}\nor, where Caffe is installed: {ONE_LINER}",
              file=sys.stderr)
        return 2
    with atomic_output(args.output, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **blobs)
    print(f"wrote {args.output}: {len(blobs)} blobs from pycaffe; input: {desc}")
    return 0
