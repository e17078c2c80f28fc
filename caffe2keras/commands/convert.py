"""caffe2keras convert DEPLOY WEIGHTS -o model.keras"""
from __future__ import annotations

import time

from ..errors import CaffeFormatError
from .common import add_input_shape, input_shapes


def add_parser(sub):
    p = sub.add_parser(
        "convert", help="convert a Caffe net to a Keras 3 .keras model",
        description="Convert DEPLOY (+ WEIGHTS) to a .keras file that "
                    "keras.saving.load_model() reads after `import caffe2keras`. Inputs and "
                    "outputs are named after the Caffe blobs; 4-D blobs are NHWC.")
    p.add_argument("deploy", help="the net's .prototxt")
    p.add_argument("weights", nargs="?", help="its .caffemodel (omit for fresh weights)")
    p.add_argument("-o", "--output", required=True, help="the .keras file to write")
    p.add_argument("--outputs", help="comma-separated blob names to expose (default: the "
                                     "net's outputs; 'all' for every blob)")
    add_input_shape(p)
    return p


def run(args) -> int:
    import keras

    from ..emit.builder import build_model
    from ..files import atomic_output
    from ..graph import load_graph

    if not args.output.endswith(".keras"):
        raise CaffeFormatError("output must end in .keras (Keras 3's model format)",
                               path=args.output)
    t0 = time.perf_counter()
    graph = load_graph(args.deploy, args.weights, input_shapes=input_shapes(args))
    outputs = args.outputs if args.outputs != "all" else "all"
    model = build_model(graph, outputs=outputs, with_weights=args.weights is not None)
    t1 = time.perf_counter()
    with atomic_output(args.output, suffix=".keras") as tmp:
        model.save(tmp)
    t2 = time.perf_counter()
    params = model.count_params()
    print(f"wrote {args.output}: {len(graph.nodes)} Caffe layers -> {len(model.layers)} Keras "
          f"layers, {params:,} parameters; outputs {', '.join(model.output_names)}; "
          f"converted in {t1 - t0:.2f} s, saved in {t2 - t1:.2f} s")
    return 0
