"""Caffe's axis and tensor operations that Keras has no layer for.

Axes here are the axes of the tensor the layer gets (the converter maps Caffe's axes to
Keras's layout). Several of these may touch the batch axis, which Keras leaves open
(None): they then read its size when they run, as Caffe does when it reshapes.
"""
from __future__ import annotations

import math

import keras
from keras import ops


def _prod(dims):
    return None if any(d is None for d in dims) else math.prod(dims)


def _take(x, axis, start, stop):
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


@keras.saving.register_keras_serializable(package="caffe2keras")
class WeightedSum(keras.layers.Layer):
    """Caffe Eltwise SUM with coefficients: ``sum(c_i * x_i)``, accumulated in input
    order like Caffe's axpy loop."""

    def __init__(self, coefficients, **kwargs):
        super().__init__(**kwargs)
        self.coefficients = [float(c) for c in coefficients]

    def build(self, input_shape):
        if len(input_shape) != len(self.coefficients):
            raise ValueError(f"WeightedSum has {len(self.coefficients)} coefficients but "
                             f"got {len(input_shape)} inputs")
        self.built = True

    def call(self, inputs):
        total = None
        for c, x in zip(self.coefficients, inputs):
            term = x if c == 1 else x * c
            total = term if total is None else total + term
        return total

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "coefficients": self.coefficients}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Slice(keras.layers.Layer):
    """Caffe Slice: cut ``axis`` into ``num_outputs`` consecutive pieces at
    ``slice_points``, or into equal pieces when there are none (sized when run, so it
    also works on the batch axis)."""

    def __init__(self, axis, num_outputs, slice_points=(), **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.num_outputs = int(num_outputs)
        self.slice_points = [int(p) for p in slice_points]
        if self.slice_points and len(self.slice_points) != self.num_outputs - 1:
            raise ValueError(f"{self.num_outputs} outputs need {self.num_outputs - 1} "
                             f"slice points, got {self.slice_points}")

    def _bounds(self, size):
        if self.slice_points:
            return [0] + self.slice_points + [size]
        if size is None:
            return [None] * (self.num_outputs + 1)
        return [i * size // self.num_outputs for i in range(self.num_outputs + 1)]

    def call(self, x):
        axis = self.axis % len(x.shape)
        size = x.shape[axis]
        if size is None:
            size = ops.shape(x)[axis]
        b = self._bounds(size)
        return [_take(x, axis, b[i], b[i + 1]) for i in range(self.num_outputs)]

    def compute_output_shape(self, input_shape):
        axis = self.axis % len(input_shape)
        b = self._bounds(input_shape[axis])
        out = []
        for i in range(self.num_outputs):
            s = list(input_shape)
            s[axis] = None if b[i] is None or b[i + 1] is None else b[i + 1] - b[i]
            out.append(tuple(s))
        return out

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "num_outputs": self.num_outputs,
                "slice_points": self.slice_points}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Crop(keras.layers.Layer):
    """Caffe Crop: inputs ``[x, reference]``; from each axis in ``axes``, take as many
    entries as the reference has there, starting at that axis's ``offset``."""

    def __init__(self, axes, offsets, **kwargs):
        super().__init__(**kwargs)
        self.axes = [int(a) for a in axes]
        self.offsets = [int(o) for o in offsets]
        if len(self.axes) != len(self.offsets):
            raise ValueError(f"Crop needs one offset per axis; got axes {self.axes} and "
                             f"offsets {self.offsets}")

    def call(self, inputs):
        x, ref = inputs
        index = [slice(None)] * len(x.shape)
        for a, o in zip(self.axes, self.offsets):
            size = ref.shape[a]
            if size is None:
                size = ops.shape(ref)[a]
            index[a] = slice(o, o + size)
        return x[tuple(index)]

    def compute_output_shape(self, input_shape):
        shape, ref = list(input_shape[0]), input_shape[1]
        for a in self.axes:
            shape[a] = ref[a]
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "offsets": self.offsets}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Transpose(keras.layers.Layer):
    """Permute all axes, the batch axis included (keras.layers.Permute keeps it first)."""

    def __init__(self, perm, **kwargs):
        super().__init__(**kwargs)
        self.perm = [int(p) for p in perm]
        if sorted(self.perm) != list(range(len(self.perm))):
            raise ValueError(f"Transpose perm must be a permutation of 0..n-1, got {perm}")

    def call(self, x):
        return ops.transpose(x, self.perm)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[p] for p in self.perm)

    def get_config(self):
        return {**super().get_config(), "perm": self.perm}


def reshape_dims(shape, dims, axis, num_axes):
    """Caffe's Reshape target for an input of ``shape`` (entries may be None or run-time
    sizes): axes ``[axis, axis + num_axes)`` become ``dims``, where 0 copies the input's
    size and -1 is left for reshape to infer."""
    nd = len(shape)
    start = axis + nd + 1 if axis < 0 else axis
    end = nd if num_axes == -1 else start + num_axes
    new = [shape[start + i] if d == 0 else d for i, d in enumerate(dims)]
    return list(shape[:start]) + new + list(shape[end:])


@keras.saving.register_keras_serializable(package="caffe2keras")
class BatchReshape(keras.layers.Layer):
    """Caffe Reshape applied to the whole tensor, batch axis included (keras.layers.Reshape
    keeps the batch axis). ``dims``, ``axis`` and ``num_axes`` are Caffe's reshape_param:
    0 copies an input size, -1 takes what is left, so a batch folded into another axis
    follows the batch size the model is run with."""

    def __init__(self, dims, axis=0, num_axes=-1, **kwargs):
        super().__init__(**kwargs)
        self.dims = [int(d) for d in dims]
        self.axis = int(axis)
        self.num_axes = int(num_axes)

    def call(self, x):
        shape = [d if d is not None else ops.shape(x)[i] for i, d in enumerate(x.shape)]
        target = reshape_dims(shape, self.dims, self.axis, self.num_axes)
        return ops.reshape(x, target)

    def compute_output_shape(self, input_shape):
        out = reshape_dims(list(input_shape), self.dims, self.axis, self.num_axes)
        if -1 in out:
            i = out.index(-1)
            rest = out[:i] + out[i + 1:]
            # an open (batch) size copied to the output cancels out of the division
            if rest.count(None) == list(input_shape).count(None):
                known = _prod([d for d in rest if d is not None])
                total = _prod([d for d in input_shape if d is not None])
                out[i] = total // known if known else None
            else:
                out[i] = None
        return tuple(out)

    def get_config(self):
        return {**super().get_config(), "dims": self.dims, "axis": self.axis,
                "num_axes": self.num_axes}


@keras.saving.register_keras_serializable(package="caffe2keras")
class ArgMax(keras.layers.Layer):
    """Caffe ArgMax: the indices (as floats) of the ``top_k`` largest values along
    ``axis``, largest first; equal values rank the later index first, as Caffe's sort
    of (value, index) pairs does. With ``out_max_val`` the values instead.

    ``axis`` None: over each item's values flattened in the input's axis order; the
    output is ``(batch, 1, top_k)`` indices or, with ``out_max_val``, ``(batch, 2, top_k)``
    with the indices in row 0 and the values in row 1.
    """

    def __init__(self, axis=None, top_k=1, out_max_val=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = None if axis is None else int(axis)
        self.top_k = int(top_k)
        self.out_max_val = bool(out_max_val)
        if self.top_k < 1:
            raise ValueError(f"top_k must be positive, got {top_k}")

    def _top(self, x, axis):
        """(values, indices) of the top_k along ``axis`` with Caffe's tie order."""
        n = x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis]
        if self.top_k == 1:
            # the last index holding the maximum; == also makes -0 equal 0, as in Caffe
            v = ops.max(x, axis=axis, keepdims=True)
            where = [1] * len(x.shape)
            where[axis] = n
            iota = ops.reshape(ops.arange(n, dtype="int32"), where)
            i = ops.max(ops.where(ops.equal(x, v), iota, -1), axis=axis, keepdims=True)
            return v, ops.cast(i, x.dtype)
        last = axis == len(x.shape) - 1
        if not last:
            x = ops.moveaxis(x, axis, -1)
        # Caffe compares -0 and 0 as equal; the backends' sorts order them
        x = ops.where(ops.equal(x, 0), ops.zeros_like(x), x)
        if keras.backend.backend() == "torch":
            # torch.topk leaves equal values in no set order: a stable ascending
            # sort read backwards puts the latest index first
            i = ops.flip(ops.argsort(x, axis=-1), axis=-1)[..., :self.top_k]
            v = ops.take_along_axis(x, i, axis=-1)
        else:
            # XLA's and TensorFlow's top_k put the lower index first: look from the end
            v, i = ops.top_k(ops.flip(x, axis=-1), self.top_k, sorted=True)
            i = n - 1 - i
        i = ops.cast(i, x.dtype)
        if not last:
            v, i = ops.moveaxis(v, -1, axis), ops.moveaxis(i, -1, axis)
        return v, i

    def call(self, x):
        if self.axis is not None:
            v, i = self._top(x, self.axis % len(x.shape))
            return v if self.out_max_val else i
        flat = ops.reshape(x, (-1, _prod(x.shape[1:])))
        v, i = self._top(flat, 1)
        if self.out_max_val:
            return ops.stack([i, v], axis=1)
        return ops.expand_dims(i, 1)

    def compute_output_shape(self, input_shape):
        if self.axis is not None:
            s = list(input_shape)
            s[self.axis % len(s)] = self.top_k
            return tuple(s)
        return (input_shape[0], 2 if self.out_max_val else 1, self.top_k)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "top_k": self.top_k,
                "out_max_val": self.out_max_val}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Reduction(keras.layers.Layer):
    """Caffe Reduction over ``axes``: SUM, ASUM (sum of |x|), SUMSQ (sum of x^2) or MEAN,
    times ``coeff``. The reduced axes are dropped; reducing the batch axis too gives one
    number for the whole batch, as Caffe's axis 0 does."""

    OPERATIONS = ("SUM", "ASUM", "SUMSQ", "MEAN")

    def __init__(self, operation, axes, coeff=1.0, **kwargs):
        super().__init__(**kwargs)
        if operation not in self.OPERATIONS:
            raise ValueError(f"Reduction operation must be one of {self.OPERATIONS}, "
                             f"got {operation!r}")
        self.operation = operation
        self.axes = [int(a) for a in axes]
        self.coeff = float(coeff)

    def call(self, x):
        axes = tuple(a % len(x.shape) for a in self.axes)
        if self.operation == "ASUM":
            x = ops.abs(x)
        elif self.operation == "SUMSQ":
            x = ops.square(x)
        if self.operation == "MEAN":
            y = ops.mean(x, axis=axes)
        else:
            y = ops.sum(x, axis=axes)
        return y if self.coeff == 1 else y * self.coeff

    def compute_output_shape(self, input_shape):
        axes = {a % len(input_shape) for a in self.axes}
        return tuple(d for i, d in enumerate(input_shape) if i not in axes)

    def get_config(self):
        return {**super().get_config(), "operation": self.operation, "axes": self.axes,
                "coeff": self.coeff}


@keras.saving.register_keras_serializable(package="caffe2keras")
class Tile(keras.layers.Layer):
    """Caffe Tile: repeat the whole tensor ``tiles`` times along ``axis``."""

    def __init__(self, axis, tiles, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.tiles = int(tiles)
        if self.tiles < 1:
            raise ValueError(f"tiles must be positive, got {tiles}")

    def call(self, x):
        reps = [1] * len(x.shape)
        reps[self.axis % len(x.shape)] = self.tiles
        return ops.tile(x, reps)

    def compute_output_shape(self, input_shape):
        s = list(input_shape)
        a = self.axis % len(s)
        s[a] = None if s[a] is None else s[a] * self.tiles
        return tuple(s)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "tiles": self.tiles}


__all__ = ["ArgMax", "BatchReshape", "Crop", "Reduction", "Slice", "Tile", "Transpose",
           "WeightedSum"]
