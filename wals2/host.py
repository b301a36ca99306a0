"""Host (numpy) arrays as TensorFlow tensors without copying them.

``tf.constant(array)`` holds two copies of a numpy array while the tensor lives (a numpy copy and TensorFlow's
own aligned buffer), and TensorFlow's CPU allocator keeps the freed buffer for reuse after the tensor is gone:
for the layouts of a 20 M-entry matrix that is 0.3 GB of resident memory on top of the arrays themselves.
``host_tensor`` shares the array's memory through DLPack instead, after aligning it to the 64 bytes that
TensorFlow's kernels expect; arrays built with ``aligned_empty`` are shared as they are.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# TensorFlow reads a tensor's buffer through Eigen maps aligned to EIGEN_MAX_ALIGN_BYTES (64 with AVX-512).
ALIGNMENT = 64


def aligned_empty(size: int, dtype) -> np.ndarray:
    """An uninitialised 1-D array of ``size`` elements whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    raw = np.empty(int(size) * dtype.itemsize + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + int(size) * dtype.itemsize].view(dtype)


def aligned_full(size: int, value, dtype) -> np.ndarray:
    """A 1-D array of ``size`` elements equal to ``value``, starting on a 64-byte boundary."""
    array = aligned_empty(size, dtype)
    array.fill(value)
    return array


def host_tensor(array: np.ndarray, dtype=None) -> tf.Tensor:
    """A 1-D tensor with the values of ``array`` (cast to ``dtype``), sharing its memory where possible.

    The tensor keeps the array's buffer alive; the caller must not write to the array afterwards. An array that
    is not contiguous, not aligned or not of ``dtype`` is first copied once into an aligned one. With a GPU
    visible the result is placed by TensorFlow's usual rules (``tf.identity`` of the host tensor), as
    ``tf.constant``'s would be.
    """
    array = np.asarray(array)
    if dtype is not None and array.dtype != np.dtype(dtype):
        array = array.astype(dtype)
    if array.ndim != 1 or array.size == 0:
        return tf.constant(array)
    if not array.flags.c_contiguous or array.ctypes.data % ALIGNMENT:
        copy = aligned_empty(array.size, array.dtype)
        copy[:] = array
        array = copy
    tensor = tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    if tf.config.list_logical_devices("GPU"):
        return tf.identity(tensor)
    return tensor
