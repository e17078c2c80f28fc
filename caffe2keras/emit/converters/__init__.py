"""Built-in converters; importing the modules registers them."""
from . import activations, conv  # noqa: F401
