"""How many chunks of work run at once, and the TensorFlow CPU thread count that matches it (no TensorFlow import).

A half-sweep runs ``PARALLEL_CHUNKS`` chunks of rows at the same time (the ``parallel_iterations`` of its while
loop), and ``WALSModel.recommend`` / ``similar_items`` score that many batches of queries at once. Each chunk is a
sequence of small batched kernels (gather, Gram, Cholesky, triangular solves, or CG's matrix-vector products).
TensorFlow's default gives every kernel all the cores (its intra-op pool), so with c cores the concurrent chunks
ask for ``PARALLEL_CHUNKS`` x c threads and small kernels split across threads that are busy with the other
chunk. One share of the cores per concurrent chunk::

    intra-op threads = max(1, c // PARALLEL_CHUNKS)

removes that contention. Measured on the 2-core Intel kind (1 intra-op thread against TensorFlow's 2, synthetic
ML-1M and ML-20M shapes, ``benchmarks/README.md``): with TensorFlow's default a sweep took 1.09-1.38x the time at
ML-1M k = 32 and 64 and 1.03-1.14x at ML-20M (exact and CG solvers). A single large kernel run alone (one batch
of ``recommend``) then uses one share, which is why batches are scored ``PARALLEL_CHUNKS`` at a time.
The thread count changes only how kernels are split, so results agree within float32 rounding.

The entry points (``trainer.task``, ``tuning.search``, the benchmarks) set ``TF_NUM_INTRAOP_THREADS`` to this
value before TensorFlow's import when it is unset (``trainer.environment``); a library user may do the same, or call
``tf.config.threading.set_intra_op_parallelism_threads`` before TensorFlow's first op.
"""

from __future__ import annotations

import os

#: Chunks of a half-sweep (and batches of ``recommend``) that run at the same time.
PARALLEL_CHUNKS = 2
#: TensorFlow's variable for its intra-op thread count, read once when its runtime starts (0: all cores).
INTRA_OP_VARIABLE = "TF_NUM_INTRAOP_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def intra_op_threads(cores: int | None = None) -> int:
    """max(1, cores // PARALLEL_CHUNKS): one share of ``cores`` (default: ``available_cores()``) per chunk.

    Raises:
        ValueError: ``cores`` is not a positive integer.
    """
    cores = available_cores() if cores is None else cores
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ValueError(f"`cores` should be a positive integer. Received: cores={cores!r}")
    return max(1, cores // PARALLEL_CHUNKS)
