"""Weights-only export: a caffemodel's numbers, streamed into a file other code loads.

    caffe2keras.export_weights("deploy.prototxt", "net.caffemodel", "net.weights.h5")

Formats (``format=``; by default from the output's suffix):

- ``keras`` (``.weights.h5``): Keras 3 weights for the model ``caffe2keras.convert()``
  builds from the same prototxt (same ``outputs=``): ``model.load_weights(path)``.
- ``keras2-h5`` (``.h5``/``.hdf5``): the legacy Keras HDF5 weights layout keyed by layer
  name, in the layouts of Keras's own layers (Conv2D, DepthwiseConv2D, Conv2DTranspose,
  Dense, BatchNormalization, PReLU): ``model.load_weights(path, by_name=True)`` into a
  model written by hand with the Caffe layer names.
- ``npz``: ``LAYER/INDEX`` arrays, Caffe layout (``layout="keras"``: keras2-h5's arrays).
- ``pickle``: a list of ``{name, type, bottoms, tops, weights}`` (Caffe layout), for other
  frameworks. Load a pickle only from a source you trust.

Streaming: blobs are read from the memory-mapped caffemodel and written layer by layer;
a layer above 2 MB is transformed and written in slices of its output channels, and the
mapped pages are dropped once written, so memory stays near one slice, not one model.

The package: ``sinks`` (the one sink protocol and the HDF5 / npz sinks), ``pickled``
(pickle), ``keras_zip`` (.keras), ``slicing`` (arrays computed in slices), ``loop`` (the
one per-layer write loop), ``keras3`` (.weights.h5 paths), ``keras2`` (by-name layouts),
``records`` (what export reads from each type's record).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CaffeFormatError, UserInputError
from ..files import atomic_output
from ..graph import load_graph
from .keras2 import caffe_layers, export_keras2, export_npz_keras
from .keras3 import export_keras3, fast_layout, skeleton_layout, snake_case
from .loop import Report, write_blobs, writing
from .pickled import PickleSink
from .sinks import H5Sink, NpzSink
from .slicing import compute

FORMATS = ("keras", "keras2-h5", "npz", "pickle")
LAYOUTS = ("caffe", "keras")


def export_weights(prototxt, caffemodel, out, format=None, *, layout="caffe",
                   outputs=None, input_shapes=None, skip_unknown=False, verbose=False,
                   log=None) -> Path:
    """Write the weights of ``caffemodel`` to ``out`` without building a Keras model.

    format:       "keras", "keras2-h5", "npz" or "pickle"; None picks it from ``out``'s
                  suffix (.weights.h5, .h5/.hdf5, .npz, .pkl/.pickle).
    layout:       npz only: "caffe" (the blobs as stored) or "keras" (keras2-h5's arrays).
    outputs:      keras only: the ``outputs`` given to ``convert()`` for the model that will
                  load the file (they decide which layers exist and BatchNorm+Scale fusion).
    input_shapes: {blob: NCHW shape} to set or override input shapes, as in ``convert()``.
    skip_unknown: leave out layers whose type has no known Keras layout, instead of writing
                  their blobs unchanged with a warning.
    verbose:      report every layer (name, type, Caffe shapes -> written shapes) to ``log``
                  (default: print).
    Returns the path written. Every file is written to a temporary name and renamed into
    place: an error or Ctrl-C leaves no partial file.
    """
    out = Path(out)
    fmt = _pick_format(out, format)
    if layout not in LAYOUTS:
        raise UserInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "keras" and fmt != "npz":
        raise UserInputError("layout='keras' is for the npz format (the keras formats are "
                              "always in Keras layout, pickle always in Caffe layout)")
    if outputs is not None and fmt != "keras":
        raise UserInputError("outputs= only applies to the keras format (the model convert() "
                              "builds); the other formats hold every layer")
    graph = load_graph(prototxt, caffemodel, input_shapes=input_shapes)
    if graph.weights_path is None:
        raise CaffeFormatError("weights export needs a caffemodel", path=prototxt)
    report = Report(verbose, log)
    with atomic_output(out) as tmp:
        if fmt == "keras":
            with writing(H5Sink(tmp)) as sink:
                export_keras3(graph, sink, outputs, skip_unknown, report)
        elif fmt == "keras2-h5":
            with writing(H5Sink(tmp)) as sink:
                export_keras2(graph, sink, skip_unknown, report)
        elif fmt == "npz":
            with writing(NpzSink(tmp)) as sink:
                if layout == "keras":
                    export_npz_keras(graph, sink, skip_unknown, report)
                else:
                    # layers may share a Caffe name (Caffe allows it); npz keys may not
                    write_blobs(sink, caffe_layers(graph, skip_unknown, report), report,
                                names=graph.unique_names())
        else:
            with writing(PickleSink(tmp)) as sink:
                write_blobs(sink, caffe_layers(graph, skip_unknown, report, with_empty=True),
                            report)
    report.warn_unknown(graph)
    return out


def _pick_format(out: Path, fmt):
    name = out.name.lower()
    if fmt is None:
        if name.endswith(".weights.h5"):
            return "keras"
        if name.endswith((".h5", ".hdf5")):
            return "keras2-h5"
        if name.endswith(".npz"):
            return "npz"
        if name.endswith((".pkl", ".pickle")):
            return "pickle"
        raise CaffeFormatError(
            "cannot tell the format from the file name; end it in .weights.h5 (keras), "
            ".h5 (keras2-h5), .npz or .pkl, or give the format", path=out)
    if fmt not in FORMATS:
        raise UserInputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "keras" and not name.endswith(".weights.h5"):
        raise CaffeFormatError("a keras weights file must end in .weights.h5 (Keras 3's "
                               "load_weights() goes by that suffix)", path=out)
    if fmt == "keras2-h5" and (name.endswith(".weights.h5") or
                               not name.endswith((".h5", ".hdf5"))):
        raise CaffeFormatError(
            "a keras2-h5 file must end in .h5 or .hdf5 but not .weights.h5 (Keras 3 reads "
            ".weights.h5 as its own format, the legacy by-name loader only other .h5 names)",
            path=out)
    return fmt


__all__ = [
    "FORMATS",
    "LAYOUTS",
    "compute",
    "export_weights",
    "fast_layout",
    "skeleton_layout",
    "snake_case",
]
