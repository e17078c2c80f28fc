"""Custom Keras layers for Caffe semantics Keras lacks. Each registers itself as
serializable under the package name "caffe2keras" (keras.ops only, no Lambda).
Importing this package imports Keras."""
from . import (  # noqa: F401
    activations,
    conv,
    detect,
    detect_nms,
    fork,
    lrn,
    pooling,
    preprocess,
    scale,
    ssd,
    tensor,
    zoo_bn,
    zoo_bvlc,
    zoo_recurrent,
)
