"""caffe2keras predict DEPLOY WEIGHTS IMAGE... [--labels synset_words.txt] [--top 5]"""
from __future__ import annotations

import re

from .common import add_input_shape, input_shapes

BATCH = 16


def add_parser(sub):
    from .preprocess_options import add_arguments

    p = sub.add_parser(
        "predict", help="classify images with a Caffe net (converted on the fly)",
        description="Convert DEPLOY + WEIGHTS, preprocess each IMAGE as pycaffe's "
                    "Transformer would (resize, RGB -> BGR, raw scale 255, mean, scale), run "
                    "the net and print the top classes with their scores. Give the mean the "
                    "net was trained with (--mean or --mean-value): Caffe nets do not store "
                    "it.")
    p.add_argument("deploy", help="the net's .prototxt")
    p.add_argument("weights", help="its .caffemodel")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (read with Pillow)")
    p.add_argument("--labels", metavar="FILE",
                   help="class names, one per line (e.g. synset_words.txt)")
    p.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    p.add_argument("--output-blob", metavar="BLOB",
                   help="the blob holding the class scores (default: the net's only output)")
    add_input_shape(p)
    add_arguments(p)
    return p


def read_labels(path):
    """Class names, one per line; ImageNet's "n02123045 tabby, tabby cat" becomes
    "tabby, tabby cat (n02123045)"."""
    from ..files import read_text

    labels = []
    for line in read_text(path, what="labels file").splitlines():
        line = line.strip()
        m = re.match(r"^(n\d{8})\s+(.+)$", line)
        labels.append(f"{m.group(2)} ({m.group(1)})" if m else line)
    while labels and not labels[-1]:
        labels.pop()
    return labels


def run(args) -> int:
    import sys
    import warnings

    import numpy as np

    from ..errors import CaffeFormatError
    from ..graph import load_graph
    from .preprocess_options import from_args

    if args.top < 1:
        raise CaffeFormatError("--top must be at least 1")
    shapes = input_shapes(args)
    pre = from_args(args, args.deploy, shapes)
    graph = load_graph(args.deploy, args.weights, input_shapes=shapes)
    blob = args.output_blob
    if blob is None:
        if len(graph.outputs) != 1:
            raise CaffeFormatError(f"the net has {len(graph.outputs)} outputs "
                                   f"({', '.join(graph.outputs)}); pick one with "
                                   f"--output-blob", path=args.deploy)
        blob = graph.outputs[0]
    elif blob not in graph.versions:
        raise CaffeFormatError(f"no blob named '{blob}'", path=args.deploy)
    producer = graph.values[graph.final(blob)].producer
    kind = "probability" if producer is not None and producer.type == "Softmax" else "score"
    labels = read_labels(args.labels) if args.labels else None

    from ..emit.builder import build_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(graph, outputs=[blob], with_weights=True)

    print("preprocessing: " + "; ".join(pre.describe()))
    if pre.mean is None and pre.channels == 3:
        print("note: no mean subtracted; most Caffe ImageNet nets need one (e.g. "
              "--mean-value 104,117,123 or --mean ilsvrc_2012_mean.binaryproto)",
              file=sys.stderr)
    warned = False
    for start in range(0, len(args.images), BATCH):
        paths = args.images[start:start + BATCH]
        x = pre(paths)
        out = np.asarray(model.predict({pre.input_name: x}, verbose=0)[blob])
        scores = out.reshape(len(paths), -1)
        if out.ndim == 4 and out.shape[1] * out.shape[2] > 1:
            raise CaffeFormatError(f"blob '{blob}' is a {out.shape[1]}x{out.shape[2]} map per "
                                   f"image, not one score per class", path=args.deploy)
        if labels is not None and len(labels) != scores.shape[1] and not warned:
            print(f"warning: {args.labels} has {len(labels)} labels, the net gives "
                  f"{scores.shape[1]} scores", file=sys.stderr)
            warned = True
        for path, s in zip(paths, scores):
            print(path)
            for i in np.argsort(-s, kind="stable")[:args.top]:
                name = labels[i] if labels is not None and i < len(labels) else f"class {i}"
                print(f"  {s[i]:.4f}  {name}" + (f"  [{i}]" if labels is not None else ""))
    if kind == "score":
        print(f"(scores are blob '{blob}', not probabilities: its layer is "
              f"{producer.type if producer else 'an input'})", file=sys.stderr)
    return 0
