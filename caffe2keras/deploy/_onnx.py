"""ONNX export with the weights kept out of the traced graph (TensorFlow backend).

Keras's ONNX exporter (``model.export(format="onnx")``) hands tf2onnx a concrete function
whose variables tf2onnx freezes into graph constants; the weights then live in memory
several times over (the Keras variables, the frozen GraphDef, grappler's copy, tf2onnx's
numpy tensors, the ONNX proto, its serialized bytes): 553 MB of VGG16 weights took the
export past 5.6 GB. Here the forward pass is traced as a pure function of the inputs *and
the weights* (``model.stateless_call``), so tf2onnx converts a graph of a few kilobytes in
which every weight is a graph input; those inputs then become initializers written
straight from the Keras variables into the file, one tensor at a time. The few layout
ops tf2onnx puts on a weight (a convolution kernel's HWIO -> OIHW Transpose, a Reshape)
are applied to the array here, as tf2onnx would have folded them on a constant.
"""
from __future__ import annotations

import numpy as np

# Ops applied to a weight at conversion time rather than at every run (tf2onnx folds them
# when the weight is a constant); none makes the data larger.
_FOLDABLE = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Cast", "Flatten"}
# protobuf wire-format field numbers (onnx.proto): ModelProto.graph, GraphProto.initializer,
# TensorProto.raw_data
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_PROTOBUF_LIMIT = 2**31 - 1


def write_onnx(model, path, specs, input_names):
    """Write ``model`` (a Keras model on the TensorFlow backend) to ``path`` as ONNX.
    ``specs``: {input blob: tf.TensorSpec}; ``input_names``: {Keras input name: name in
    the file}."""
    import tensorflow as tf
    import tf2onnx

    from ..keras_compat import patch_tf2onnx

    patch_tf2onnx()
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    n_trainable = len(model.trainable_variables)
    weight_specs = [tf.TensorSpec(v.shape, v.dtype, name=f"caffe2keras_weight_{i}")
                    for i, v in enumerate(variables)]

    @tf.function
    def forward(inputs, weights):
        out, _ = model.stateless_call(weights[:n_trainable], weights[n_trainable:], inputs,
                                      training=False)
        return out

    proto, _ = tf2onnx.convert.from_function(forward, [specs, weight_specs])
    weights = {spec.name: v for spec, v in zip(weight_specs, variables)}
    initializers = _weights_to_initializers(proto.graph, weights)
    for value in proto.graph.input:
        if value.name in input_names:
            _rename(proto.graph, value.name, input_names[value.name])
    _stream(proto, initializers, path)


def _weights_to_initializers(graph, weights):
    """Take the weight inputs out of ``graph``; fold the layout ops that consume only a
    weight. Returns [(initializer name, variable, [numpy steps])], in graph order."""
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    recipes = {}   # tensor name -> (variable, steps)
    for value in list(graph.input):
        if value.name in weights:
            recipes[value.name] = (weights[value.name], [])
            graph.input.remove(value)
    folded = []
    for node in list(graph.node):   # topological: a folded output feeds later nodes
        src = node.input[0] if node.input else None
        if (node.op_type not in _FOLDABLE or src not in recipes or len(node.output) != 1
                or len(consumers.get(src, [])) != 1
                or any(n not in consts for n in node.input[1:] if n)):
            continue
        var, steps = recipes.pop(src)
        recipes[node.output[0]] = (var, [*steps, _step(node, [consts[n] for n in
                                                               node.input[1:] if n])])
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    for t in [t for t in graph.initializer if t.name not in used]:   # a folded op's shape
        graph.initializer.remove(t)
    return [(name, var, steps) for name, (var, steps) in recipes.items() if name in used]


def _step(node, args):
    """The numpy function of one foldable node."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op == "Transpose":
        return lambda a: np.transpose(a, attrs.get("perm"))
    if op == "Reshape":
        shape = [int(s) for s in args[0]]
        return lambda a: a.reshape([a.shape[i] if s == 0 and not attrs.get("allowzero")
                                    else s for i, s in enumerate(shape)])
    if op in ("Squeeze", "Unsqueeze"):
        axes = [int(x) for x in (args[0] if args else attrs.get("axes", []))]
        if op == "Squeeze":
            return lambda a: np.squeeze(a, tuple(axes)) if axes else np.squeeze(a)
        return lambda a: np.expand_dims(a, tuple(axes))
    if op == "Cast":
        dtype = helper.tensor_dtype_to_np_dtype(attrs["to"])
        return lambda a: a.astype(dtype)
    if op == "Flatten":
        axis = attrs.get("axis", 1)
        return lambda a: a.reshape(int(np.prod(a.shape[:axis])), -1)
    return lambda a: a   # Identity


def _rename(graph, old, new):
    for value in graph.input:
        if value.name == old:
            value.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _array(var, steps):
    a = np.asarray(var.numpy())
    for step in steps:
        a = step(a)
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))


def _stream(proto, initializers, path):
    """Write the model with its initializers appended to the graph, each array written
    from its own buffer (protobuf merges a message field that appears twice, and allows
    repeated fields in any order; so the file is a valid ModelProto). Only one weight is
    held as a numpy array at a time."""
    from onnx import TensorProto, helper

    graph = proto.graph
    heads = []
    taken = ({n for node in graph.node for n in (*node.input, *node.output)}
             | {v.name for v in (*graph.input, *graph.output, *graph.initializer)})
    outputs = {v.name for v in graph.output}
    for name, var, steps in initializers:
        # shape and dtype from a stand-in of one element (zero strides): the steps are
        # layout-only, so nothing of the weight's size is allocated
        probe = np.broadcast_to(np.zeros((), np.dtype(var.dtype)), tuple(var.shape))
        for step in steps:
            probe = step(probe)
        final = _weight_name(name, var, taken, outputs)
        head = TensorProto(name=final, dims=probe.shape,
                           data_type=helper.np_dtype_to_tensor_dtype(probe.dtype))
        _rename(graph, name, final)
        heads.append((head.SerializeToString(), probe.nbytes, var, steps))
    proto.ClearField("graph")
    model_bytes = proto.SerializeToString()
    graph_bytes = graph.SerializeToString()
    parts = []
    graph_len = len(graph_bytes)
    for head, nbytes, _, _ in heads:
        raw = _tag(_TENSOR_RAW_DATA) + _varint(nbytes)
        tensor_len = len(head) + len(raw) + nbytes
        parts.append(_tag(_GRAPH_INITIALIZER) + _varint(tensor_len) + head + raw)
        graph_len += len(parts[-1]) + nbytes
    total = len(model_bytes) + len(_tag(_MODEL_GRAPH) + _varint(graph_len)) + graph_len
    if total > _PROTOBUF_LIMIT:
        from ..errors import CaffeFormatError
        raise CaffeFormatError(f"the ONNX file would be {total / 2**30:.1f} GiB; a single "
                               f"ONNX (protobuf) file holds at most 2 GiB", path=path)
    with open(path, "wb") as f:
        f.write(model_bytes)
        f.write(_tag(_MODEL_GRAPH) + _varint(graph_len))
        f.write(graph_bytes)
        for prefix, (_, nbytes, var, steps) in zip(parts, heads):
            f.write(prefix)
            a = _array(var, steps)
            assert a.nbytes == nbytes
            f.write(memoryview(a).cast("B"))
            del a


def _weight_name(placeholder, var, taken, outputs):
    """The initializer's name: the Keras variable's path (``conv1/kernel``) where no other
    tensor has it; a graph output keeps its name (Caffe's Parameter layer outputs a
    weight)."""
    path = getattr(var, "path", None)
    if not path or path in taken or placeholder in outputs:
        return placeholder
    taken.add(path)
    return path


def _tag(field):
    return _varint(field << 3 | 2)


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
