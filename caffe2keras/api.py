"""The public conversion function."""
from __future__ import annotations

from .graph import load_graph


def convert(prototxt, caffemodel=None, outputs=None, input_shapes=None, name=None,
            seed=None):
    """Convert a Caffe net to a Keras 3 functional model.

    prototxt:     deploy (or train_val) .prototxt path.
    caffemodel:   .caffemodel path, or None for the architecture with fresh weights.
    outputs:      None (the net's output blobs), a list of blob names (e.g. ["fc7"] for
                  a feature extractor), or "all" (every named blob).
    input_shapes: {blob: NCHW shape} to set or override input shapes.
    seed:         without a caffemodel, the seed of the fresh weights. They are drawn as
                  Caffe would from the prototxt's fillers (Keras's Glorot uniform and
                  zero biases where it names none).

    The model takes and returns dicts keyed by Caffe blob names. 4-D blobs are NHWC
    (Caffe's NCHW transposed 0,2,3,1); other ranks keep Caffe's axis order.
    """
    from .emit.builder import build_model

    graph = load_graph(prototxt, caffemodel, input_shapes=input_shapes)
    return build_model(graph, outputs=outputs, with_weights=caffemodel is not None, name=name,
                       fill_fresh=True, seed=seed)
