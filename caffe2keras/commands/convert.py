"""caffe2keras convert DEPLOY WEIGHTS -o model.keras [--preprocess ...]"""
from __future__ import annotations

import time

from .common import add_input_shape, input_shapes


def add_parser(sub):
    from .preprocess_options import add_arguments

    p = sub.add_parser(
        "convert", help="convert a Caffe net to a Keras 3 .keras model, ONNX, TFLite or a "
                        "SavedModel",
        description="Convert DEPLOY (+ WEIGHTS) to a .keras file that "
                    "keras.saving.load_model() reads after `import caffe2keras`. Inputs and "
                    "outputs are named after the Caffe blobs; 4-D blobs are NHWC. With "
                    "--preprocess (or any preprocessing option) the model's image input "
                    "takes RGB pixels (0..255, uint8 or float, NHWC, at the input size) and "
                    "does Caffe's channel swap, scaling and mean subtraction itself. "
                    "-o model.onnx, -o model.tflite or -o DIR --format saved_model write a "
                    "deployment format instead (traced on the TensorFlow backend; extras "
                    ".[onnx], .[tflite], .[tensorflow]).")
    p.add_argument("deploy", help="the net's .prototxt")
    p.add_argument("weights", nargs="?", help="its .caffemodel (omit for fresh weights)")
    p.add_argument("-o", "--output", required=True,
                   help="the file to write: .keras, .onnx, .tflite, or a SavedModel folder "
                        "(with --format saved_model)")
    p.add_argument("--format", choices=["keras", "onnx", "tflite", "saved_model"],
                   help="output format (default: from the output's suffix)")
    p.add_argument("--outputs", help="comma-separated blob names to expose (default: the "
                                     "net's outputs; 'all' for every blob)")
    add_input_shape(p)
    p.add_argument("--preprocess", action="store_true",
                   help="prepend preprocessing layers (RGB -> BGR, raw scale 255, and "
                        "whatever the options below say) so the model takes RGB images")
    add_arguments(p)
    return p


def run(args) -> int:
    import keras  # noqa: F401  (its import is not part of the conversion time reported)

    from ..deploy import pick_format
    from ..graph import load_graph
    from ..progress import ProgressBar
    from ..saving import convert_to_file, graph_bytes
    from .preprocess_options import any_given, from_args

    t0 = time.perf_counter()
    fmt = pick_format(args.output, args.format)
    shapes = input_shapes(args)
    pre = from_args(args, args.deploy, shapes) if args.preprocess or any_given(args) else None
    if fmt != "keras":
        return _deploy(args, fmt, shapes, pre, t0)
    graph = load_graph(args.deploy, args.weights, input_shapes=shapes)
    outputs = args.outputs if args.outputs != "all" else "all"
    bar = ProgressBar(graph_bytes(graph), f"writing {args.output}")
    try:
        model = convert_to_file(graph, args.output, outputs=outputs,
                                wrap=pre.wrap if pre is not None else None, progress=bar)
    finally:
        bar.close()
    t1 = time.perf_counter()
    params = model.count_params()
    print(f"wrote {args.output}: {len(graph.nodes)} Caffe layers -> {len(model.layers)} Keras "
          f"layers, {params:,} parameters; outputs {', '.join(model.output_names)}; "
          f"converted and saved in {t1 - t0:.2f} s")
    if pre is not None:
        print("preprocessing in the model: " + "; ".join(pre.describe()[1:]))
        print(f"feed it RGB images of {pre.size[0]}x{pre.size[1]}, pixels 0..255 (uint8 or "
              f"float), NHWC, as {{'{pre.input_name}': images}}")
    return 0


def _deploy(args, fmt, shapes, pre, t0):
    from ..deploy import export_model
    from ..deploy.runtime import describe_artifact

    outputs = args.outputs.split(",") if args.outputs and args.outputs != "all" else \
        args.outputs
    export_model(args.deploy, args.weights, args.output, fmt, outputs=outputs,
                 input_shapes=shapes, preprocessor=pre)
    print(f"wrote {args.output}: {describe_artifact(args.output, fmt)}; converted and "
          f"exported in {time.perf_counter() - t0:.2f} s")
    return 0
