"""Built-in layer types; importing the modules registers their records.

Each module holds a family of types, and for each type its shape function, weights
function, checks and converter, registered by one ``register_converter`` call (see
emit/registry.py's LayerType and README's "Adding a layer type").

Converter modules import Keras (and our Keras layers) inside the converter functions,
never at module level: `inspect` loads this registry to list supported types and must
stay free of Keras's import cost.
"""
from . import (  # noqa: F401
    activations,
    conv,
    dense,
    detect,
    fork,
    norm,
    pooling,
    ssd,
    tensor,
    zoo_bn,
    zoo_bvlc,
    zoo_recurrent,
)
