"""What converters and weights functions see of one planned step (no Keras here:
weight export builds these contexts too)."""
from __future__ import annotations

from ..errors import CaffeFormatError
from ..graph import Graph
from .plan import Step


class LayerContext:
    """The Caffe layer(s) of a step, their shapes and blobs, and the step's Keras name.

    Weights functions get one of these (Keras-free); converters get a StepContext
    (builder.py), which adds the input tensors and layer helpers.
    """

    def __init__(self, step: Step, graph: Graph, with_weights: bool = True):
        self.step = step
        self.graph = graph
        self.nodes = step.nodes          # [BatchNorm, Scale], [Convolution, ReLU]: fused
        self.node = step.nodes[0]
        self.layer = self.node.layer
        self.name = step.name            # give the step's weighted Keras layer this name
        self.with_weights = with_weights
        self.activation = step.activation  # give it to the weighted Keras layer (fused)

    def param(self, name):
        """The Caffe layer's ``name`` params message (e.g. "pooling_param")."""
        return self.layer.param(name)

    @property
    def in_shapes(self):
        """Caffe (NCHW) shapes of the step's inputs."""
        return [self.graph.values[v].shape for v in self.step.inputs]

    @property
    def out_shapes(self):
        """Caffe (NCHW) shapes of the step's outputs."""
        return [self.graph.values[v].shape for v in self.step.outputs]

    @property
    def blobs(self):
        """The (first) layer's weight blobs, Caffe layout, or None when building fresh."""
        if not self.with_weights or not self.layer.blobs:
            return None
        return self.layer.blobs

    def fail(self, message: str):
        """Refuse this layer: a CaffeFormatError naming the prototxt, the layer's
        line:column and its name (never returns)."""
        raise CaffeFormatError(message, path=self.graph.net.path,
                               position=self.layer.position or None, layer=self.layer.name)

    def sub_name(self, suffix: str) -> str:
        """A unique Keras name for a helper layer of this step (padding, transposes...)."""
        return self.step.names.claim(f"{self.name}_{suffix}")
