"""Host-side collectives of the workers of a ``tf.distribute`` strategy, for the data that precedes training.

Every worker calls each function with its own array, together, in the same order; the result is the same on
every worker. Under the default strategy (one process) each is the identity, without a copy. The in-graph
collectives of the sweep itself go through the replica context (``engine``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class WorkerFailed(RuntimeError):
    """Another worker failed (its own log says why); raised on the workers that did not."""


class Collectives:
    """all-gather, all-reduce and agreement of numpy arrays over the replicas (one per worker) of ``strategy``.

    Args:
        strategy: a ``MultiWorkerMirroredStrategy`` with one replica per worker, or None for one process.
        timeout: seconds each collective waits for the other workers before it fails (None: no limit).
    """

    def __init__(self, strategy: tf.distribute.Strategy | None = None, timeout: float | None = None):
        self.strategy = strategy or tf.distribute.get_strategy()
        self._options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
        self.count = int(self.strategy.num_replicas_in_sync)
        self.rank = 0
        self._functions: dict = {}
        if self.count > 1:
            rank = self._function("rank", tf.int32)(tf.zeros([0, 0], tf.int32))
            self.rank = int(self._local(rank)[0])

    def _function(self, op: str, dtype: tf.DType):
        """The ``tf.function`` that runs collective ``op`` ("sum", "gather" or "rank") on this worker's replica, for
        [n, m] tensors of ``dtype``: one trace each, the same on every worker (eager ``strategy.run`` warns of
        its overhead on every call, and retraces its collectives)."""
        key = (op, dtype)
        if key not in self._functions:
            context = tf.distribute.get_replica_context
            device = self.strategy.extended.worker_devices[0]

            def replica(x):
                with tf.device(device):  # a graph input has no device; a collective takes its input's devices
                    x = tf.identity(x)
                if op == "sum":
                    return context().all_reduce("sum", x, self._options)
                if op == "gather":
                    return context().all_gather(x, 0, self._options)
                return tf.fill([1], context().replica_id_in_sync_group)

            self._functions[key] = tf.function(
                lambda x: self.strategy.run(replica, args=(x,)),
                input_signature=[tf.TensorSpec([None, None], dtype)],
                autograph=False,
            )
        return self._functions[key]

    def _collective(self, op: str, value: np.ndarray) -> np.ndarray:
        """``op`` over the workers of ``value`` [n, ...], as a 2-D [n, m] tensor and back."""
        result = self._function(op, tf.as_dtype(value.dtype))(value.reshape(value.shape[0], -1))
        return self._local(result)

    def _local(self, result) -> np.ndarray:
        return self.strategy.experimental_local_results(result)[0].numpy()

    def all_reduce_sum(self, value) -> np.ndarray:
        """The sum over workers of a numeric array of the same shape and dtype on every worker."""
        value = np.asarray(value)
        if self.count == 1 or not value.size:  # a collective of an empty tensor crashes TensorFlow
            return value
        return self._collective("sum", value.reshape(1, -1) if value.ndim < 2 else value).reshape(value.shape)

    def sizes(self, size: int) -> np.ndarray:
        """int64 [P], every worker's ``size`` in rank order."""
        one_hot = np.zeros(self.count, np.int64)
        one_hot[self.rank] = size
        return self.all_reduce_sum(one_hot)

    def all_gather(self, value) -> list[np.ndarray]:
        """Every worker's numeric array in rank order; the arrays may differ in their first dimension.

        Each array is padded to the largest first dimension for the collective and trimmed after.
        """
        value = np.asarray(value)
        if self.count == 1:
            return [value]
        sizes = self.sizes(value.shape[0])
        if not sizes.max() or not np.prod(value.shape[1:]):
            return [np.zeros((int(size), *value.shape[1:]), value.dtype) for size in sizes]
        padded = np.zeros((int(sizes.max()), *value.shape[1:]), value.dtype)
        padded[: value.shape[0]] = value
        flat = self._collective("gather", padded).reshape(-1, *value.shape[1:])
        return [part[:size] for part, size in zip(np.split(flat, self.count), sizes)]

    def all_gather_strings(self, values) -> list[np.ndarray]:
        """Every worker's 1-D array of strings in rank order (sent as UTF-8 bytes and lengths)."""
        values = np.asarray(values, dtype=str)
        if self.count == 1:
            return [values]
        encoded = [v.encode("utf-8", "surrogatepass") for v in values.tolist()]
        lengths = np.array([len(b) for b in encoded], np.int64)
        joined = b"".join(encoded)
        blob = np.frombuffer(joined + bytes(-len(joined) % 8), np.int64)  # collectives take no uint8: 8 bytes a word
        out = []
        for part_lengths, part in zip(self.all_gather(lengths), self.all_gather(blob)):
            data = part.tobytes()
            bounds = np.concatenate([[0], np.cumsum(part_lengths)])
            out.append(
                np.array([data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(bounds[:-1], bounds[1:])], str)
            )
        return out

    def check(self, error: BaseException | None) -> None:
        """Raises ``error`` on the worker that has one and ``WorkerFailed`` on the others, or returns on all.

        Every worker calls it after a step that may fail on some of them (reading its shard, validating it), so
        that all stop together instead of waiting for a failed peer until the collective timeout.
        """
        failed = self.all_reduce_sum(np.array([error is not None], np.int64))
        if error is not None:
            raise error
        if failed[0]:
            raise WorkerFailed(f"{int(failed[0])} other worker(s) failed; their logs say why")
