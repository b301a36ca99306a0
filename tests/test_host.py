"""host_tensor: numpy arrays as tensors with their values, sharing the array's memory where it can."""

import gc

import numpy as np
import pytest
import tensorflow as tf

from wals2.host import ALIGNMENT, aligned_empty, aligned_full, host_tensor


def test_aligned_empty_starts_on_the_alignment():
    for size in (1, 7, 1000):
        for dtype in (np.int32, np.float32, np.int64):
            array = aligned_empty(size, dtype)
            assert array.shape == (size,) and array.dtype == dtype
            assert array.ctypes.data % ALIGNMENT == 0


def test_aligned_full_holds_the_value():
    array = aligned_full(37, 26744, np.int32)
    assert array.ctypes.data % ALIGNMENT == 0 and array.dtype == np.int32
    np.testing.assert_array_equal(array, np.full(37, 26744, np.int32))


def test_an_aligned_array_is_shared_not_copied():
    array = aligned_empty(1000, np.float32)
    array[:] = np.arange(1000)
    tensor = host_tensor(array)
    array[3] = -7.0  # the tensor sees the write: one buffer
    assert float(tensor[3]) == -7.0
    np.testing.assert_array_equal(tensor.numpy()[4:], np.arange(4, 1000))


def test_the_tensor_keeps_the_buffer_alive():
    array = aligned_empty(100_000, np.int32)
    array[:] = np.arange(100_000)
    tensor = host_tensor(array)
    del array
    gc.collect()
    filler = [np.full(100_000, -1, np.int32) for _ in range(20)]  # reuse any freed memory
    np.testing.assert_array_equal(tensor.numpy(), np.arange(100_000))
    del filler


@pytest.mark.parametrize(
    "array, dtype",
    [
        (np.arange(1, 1001, dtype=np.float32)[1:], None),  # 4 bytes past an aligned start
        (np.arange(2000, dtype=np.int32)[::2], None),  # not contiguous
        (np.arange(500, dtype=np.int64), np.int32),  # cast
        (np.linspace(0, 1, 300), np.float32),
        (np.zeros(0, np.float32), None),  # empty
        (np.arange(12, dtype=np.float32).reshape(3, 4), None),  # not 1-D
    ],
)
def test_values_and_dtype_match_the_array(array, dtype):
    tensor = host_tensor(array, dtype)
    want = np.asarray(array, dtype or array.dtype)
    assert tensor.dtype == tf.as_dtype(want.dtype) and tensor.shape == want.shape
    np.testing.assert_array_equal(tensor.numpy(), want)


def test_a_copied_array_is_not_shared_with_the_caller():
    array = np.arange(1, 1001, dtype=np.float32)[1:]  # unaligned: copied once, aligned
    tensor = host_tensor(array)
    array[0] = -1.0
    assert float(tensor[0]) == 2.0


def test_a_shared_tensor_feeds_a_tf_function():
    array = aligned_empty(64, np.float32)
    array[:] = np.arange(64)
    tensor = host_tensor(array)

    @tf.function(autograph=False, jit_compile=False)
    def total(x):
        return tf.reduce_sum(tf.reshape(x, [8, 8]) @ tf.ones([8, 1]))

    assert float(total(tensor)) == float(np.arange(64).sum())
