"""caffe2keras weights DEPLOY WEIGHTS -o OUT [--format keras|keras2-h5|npz|pickle]"""
from __future__ import annotations

import argparse
import sys
import time

from .common import add_input_shape, input_shapes

EPILOG = """\
formats (picked from the output name unless --format is given):
  keras      NAME.weights.h5: Keras 3 weights for the model `caffe2keras convert` /
             caffe2keras.convert() builds from DEPLOY (same --outputs):
               model = caffe2keras.convert("deploy.prototxt", outputs=...)
               model.load_weights("NAME.weights.h5")
  keras2-h5  NAME.h5: legacy Keras HDF5 weights keyed by layer name, in the layouts of
             Keras's own layers (Conv2D/DepthwiseConv2D HWIO kernels, Dense (in, out)
             with the Caffe flatten order mapped to NHWC, BatchNormalization gamma/beta/
             moving mean/moving variance, PReLU, Conv2DTranspose). Load it into a model
             you wrote with the Caffe layer names (characters Keras refuses, such as '/',
             become '_'):
               model.load_weights("NAME.h5", by_name=True)
  npz        NAME.npz: arrays keyed LAYER/INDEX (np.load(path)["conv1/0"]), Caffe layout;
             --layout keras writes keras2-h5's arrays instead.
  pickle     NAME.pkl: a list of {name, type, bottoms, tops, weights (numpy arrays, Caffe
             layout)}, one per layer, for other frameworks. SECURITY: unpickling runs code
             named in the file; only ever load a pickle that comes from a source you trust.

Layer types with no known Keras layout are written unchanged (Caffe layout) with a
warning, or left out with --skip-unknown. The export streams the caffemodel layer by
layer: memory stays far below the file size.
"""


def add_parser(sub):
    p = sub.add_parser(
        "weights", help="export only the weights (Keras 3, legacy Keras HDF5, npz, pickle)",
        description="Export the weights of WEIGHTS without building a Keras model: for a\n"
                    "Keras model you write yourself (or the one convert() builds), or for\n"
                    "other frameworks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("deploy", help="the net's .prototxt")
    p.add_argument("weights", help="its .caffemodel")
    p.add_argument("-o", "--output", required=True,
                   help="the file to write (.weights.h5, .h5, .npz or .pkl)")
    p.add_argument("-f", "--format", choices=["keras", "keras2-h5", "npz", "pickle"],
                   help="output format (default: from the output name)")
    p.add_argument("--layout", choices=["caffe", "keras"], default="caffe",
                   help="npz only: Caffe's layout (default) or Keras's")
    p.add_argument("--outputs", help="keras format only: the blob names given to "
                                     "convert --outputs for the model that will load the file "
                                     "(comma-separated, or 'all')")
    p.add_argument("--skip-unknown", action="store_true",
                   help="leave out layers whose type has no known Keras layout instead of "
                        "writing their blobs unchanged")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list every layer: name, type, Caffe shapes -> written shapes")
    add_input_shape(p)
    return p


def run(args) -> int:
    from ..errors import UserInputError
    from ..export import export_weights

    t0 = time.perf_counter()
    try:
        path = export_weights(
            args.deploy, args.weights, args.output, format=args.format, layout=args.layout,
            outputs=args.outputs, input_shapes=input_shapes(args),
            skip_unknown=args.skip_unknown, verbose=args.verbose)
    except UserInputError as e:
        if type(e) is not UserInputError:  # CaffeFormatError: the CLI prints it (exit 1)
            raise
        # options that contradict each other: a usage error, as argparse's (exit 2)
        print(f"caffe2keras weights: error: {e}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.1f} MB) in {dt:.2f} s")
    return 0
