"""Exact WALS sweeps over several workers of a ``tf.distribute.MultiWorkerMirroredStrategy``.

Worker p of P owns the contiguous row block [r_p, r_{p+1}) and column block [c_p, c_{p+1}) of the m x n matrix
(``block_bounds``) and holds the training entries of both (every entry is held twice in all: once by the owner
of its row, once by the owner of its column). The factors are replicated: every worker keeps the whole U [m, k]
and V [n, k]. A sweep on worker p is

    U_p = half_sweep(rows of block p, V)          [r_{p+1} - r_p, k]
    U   = all_gather_p(U_p)                        [m, k]       (m k floats received per worker)
    V_p = half_sweep(columns of block p, U)       [c_{p+1} - c_p, k]
    V   = all_gather_p(V_p)                        [n, k]

with ``solver.half_sweep`` unchanged: each block is a ``layout.build_half`` layout of the block's rows against
all n (or m) fixed factors, so a row's system (lambda I + w0 Y'Y + sum_j d_ij y_j y_j') x_i = b_i is the one a
single process solves, and the factors equal a single-process sweep up to the floating-point order of the blocks'
chunks. ``all_gather`` needs equal shapes, so the blocks are padded to the largest block and trimmed after.

The shared Gramian w0 Y'Y of the solve is computed by ``half_sweep`` from the replicated Y on every worker
(n k^2 flops, against nnz k^2 / P for the block's per-row Grams), so the solve needs no reduction and
``half_sweep`` keeps its signature. The all-reduces are where a sum over workers is needed: the partial Gramians
U_p'U_p and V_p'V_p of the objective's w0 tr(U'U V'V) term, the per-block sums of the objective and the training
error, and the global statistics of the weights (``objective.Statistics``: n_j, the mean and the range), which
``all_reduce_sum`` and ``all_gather`` below provide. ``docs/scaling.md`` gives the memory and traffic model and
the sharded alternative for factors that do not fit one worker.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from wals2 import objective
from wals2.layout import build_half
from wals2.solver import fixed_side, half_sweep

logger = logging.getLogger(__name__)


def block_bounds(size: int, count: int) -> np.ndarray:
    """Boundaries int64 [count + 1] of ``count`` contiguous near-equal blocks of ``size`` (the first ones larger)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"`count` should be a positive integer. Received: count={count!r}")
    base, extra = divmod(int(size), int(count))
    sizes = np.full(count, base, np.int64) + (np.arange(count) < extra)
    return np.concatenate([[0], np.cumsum(sizes)])


def replica_rank(strategy: tf.distribute.Strategy) -> int:
    """This worker's replica id in the sync group: its position in every ``all_gather``."""
    ids = strategy.run(lambda: tf.constant(tf.distribute.get_replica_context().replica_id_in_sync_group))
    return int(strategy.experimental_local_results(ids)[0])


def all_reduce_sum(strategy: tf.distribute.Strategy, value: np.ndarray) -> np.ndarray:
    """The sum over workers of a numeric array of the same shape and dtype on every worker."""
    value = tf.convert_to_tensor(np.asarray(value))
    reduced = strategy.run(lambda x: tf.distribute.get_replica_context().all_reduce("sum", x), args=(value,))
    return strategy.experimental_local_results(reduced)[0].numpy()


def all_gather(strategy: tf.distribute.Strategy, value: np.ndarray) -> list[np.ndarray]:
    """Every worker's array, in rank order; the arrays may differ in their first dimension (numeric dtypes).

    Each array is padded to the largest first dimension for the collective and trimmed after.
    """
    value = np.asarray(value)
    sizes = worker_sizes(strategy, value.shape[0])
    padded = np.zeros((int(sizes.max()), *value.shape[1:]), value.dtype)
    padded[: value.shape[0]] = value
    gathered = strategy.run(
        lambda x: tf.distribute.get_replica_context().all_gather(x, axis=0), args=(tf.convert_to_tensor(padded),)
    )
    flat = strategy.experimental_local_results(gathered)[0].numpy()
    parts = np.split(flat, sizes.size)
    return [part[:size] for part, size in zip(parts, sizes)]


def worker_sizes(strategy: tf.distribute.Strategy, size: int) -> np.ndarray:
    """int64 [P], every worker's ``size`` in rank order (the all-reduced sum of one-hot vectors)."""
    one_hot = np.zeros(strategy.num_replicas_in_sync, np.int64)
    one_hot[replica_rank(strategy)] = size
    return all_reduce_sum(strategy, one_hot)


def global_statistics(strategy: tf.distribute.Strategy, local: objective.Statistics) -> objective.Statistics:
    """``objective.Statistics`` of all workers' entries from each worker's own (disjoint) entries."""
    counts = all_reduce_sum(strategy, local.positive_counts)
    sums = all_reduce_sum(strategy, np.array([local.total, local.count], np.float64))
    ranges = np.concatenate(all_gather(strategy, np.array([[local.low, -local.high]], np.float64)))
    return objective.Statistics(counts, float(sums[0]), int(sums[1]), float(ranges[:, 0].min()), -ranges[:, 1].min())


class DistributedSweep:
    """The sweeps, objective and training error of one worker's blocks; every worker builds one and calls it.

    Example (on every worker, with the same ``config`` and factors):
        >>> sweep = DistributedSweep(strategy, rows, cols, values, (m, n), config, stats)
        >>> for _ in range(config.num_iters):
        ...     u, v = sweep(u, v)

    Args:
        strategy: a ``MultiWorkerMirroredStrategy`` with one replica per worker (or any one-replica strategy).
        rows, cols, values: training entries, global indices [nnz_p]; they must include every entry of this
            worker's row block and column block (the global COO, or the union of the two blocks).
        shape: (m, n).
        config: the ``WALSConfig``; ``mode``, ``solver``, ``scale_regularization`` and the weights as in
            ``WALSModel``.
        stats: ``objective.Statistics`` of all training entries (``global_statistics``).
    """

    def __init__(self, strategy, rows, cols, values, shape, config, stats: objective.Statistics):
        self.strategy = strategy
        self.config = config
        self.shape = (int(shape[0]), int(shape[1]))
        self.num_workers = strategy.num_replicas_in_sync
        self.rank = replica_rank(strategy)
        self.row_bounds = block_bounds(self.shape[0], self.num_workers)
        self.col_bounds = block_bounds(self.shape[1], self.num_workers)
        rows = np.asarray(rows, np.int64)
        cols = np.asarray(cols, np.int64)
        values = np.asarray(values, np.float64)
        r0, r1 = self.row_bounds[self.rank : self.rank + 2]
        c0, c1 = self.col_bounds[self.rank : self.rank + 2]
        in_rows = (rows >= r0) & (rows < r1)
        in_cols = (cols >= c0) & (cols < c1)
        self.weighting = objective.weighting(config, values, self.shape, stats)
        self.rows_layout = self._half(rows[in_rows] - r0, cols[in_rows], in_rows, r0, r1, False)
        self.cols_layout = self._half(cols[in_cols] - c0, rows[in_cols], in_cols, c0, c1, True)
        w = self.weighting
        self._entries = (  # the row block's entries: each training entry is in exactly one row block
            tf.constant(rows[in_rows].astype(np.int32)),
            tf.constant(cols[in_rows].astype(np.int32)),
            tf.constant((w.targets[in_rows] + w.mean).astype(np.float32)),  # the ratings (1 in the implicit mode)
            tf.constant(w.observed_weight(rows[in_rows], cols[in_rows]).astype(np.float32)),
        )
        self._reg_scale = [tf.ones([r1 - r0], tf.float32), tf.ones([c1 - c0], tf.float32)]
        if config.scale_regularization:  # lambda n_i: a block holds its rows' (columns') every entry
            degrees = (
                np.bincount(rows[in_rows] - r0, minlength=r1 - r0),
                np.bincount(cols[in_cols] - c0, minlength=c1 - c0),
            )
            self._reg_scale = [tf.constant(d.astype(np.float32)) for d in degrees]
        self._step = tf.function(lambda u, v: strategy.run(self._replica_step, args=(u, v)), autograph=False)
        self._metrics = tf.function(lambda u, v: strategy.run(self._replica_metrics, args=(u, v)), autograph=False)
        logger.info(
            "worker %d of %d: rows [%d, %d) with %d entries, columns [%d, %d) with %d entries",
            self.rank,
            self.num_workers,
            r0,
            r1,
            int(in_rows.sum()),
            c0,
            c1,
            int(in_cols.sum()),
        )

    def _half(self, own, other, where, start, stop, transposed):
        """The ``build_half`` layout of the block [start, stop) (``own`` are block-local indices)."""
        w, cfg = self.weighting, self.config
        weights = (w.row_weights, w.col_weights)
        if transposed:
            weights = weights[::-1]
        own_weights = None if weights[0] is None else weights[0][start:stop]
        return build_half(
            own,
            other,
            w.targets[where],
            int(stop - start),
            self.shape[1 - int(transposed)],
            own_weights,
            weights[1],
            w.unobserved_weight,
            cfg.batch_entries,
            cfg.max_row_length,
            entry_weights=None if w.entry_weights is None else w.entry_weights[where],
            bias_offsets=w.bias_offsets,
            scale_regularization=cfg.scale_regularization,
        )

    # ------------------------------------------------------------------------------------------ the sweep
    def __call__(self, user_factors, item_factors) -> tuple[tf.Tensor, tf.Tensor]:
        """One exact sweep from U [m, k'] and V [n, k'] (k' = k + 1 with the explicit mode's bias column).

        Returns:
            (U, V) after the sweep, float32, replicated (equal on every worker).
        """
        result = self._step(user_factors, item_factors)
        u, v = (self.strategy.experimental_local_results(x)[0] for x in result)
        return u, v

    def _replica_step(self, user_factors, item_factors):
        cfg, ctx = self.config, tf.distribute.get_replica_context()
        cg = cfg.solver == "cg"
        r0, r1 = self.row_bounds[self.rank : self.rank + 2]
        c0, c1 = self.col_bounds[self.rank : self.rank + 2]
        w0 = self.weighting.unobserved_weight
        u_block = half_sweep(
            self.rows_layout,
            fixed_side(item_factors, self.weighting.bias_offsets),
            cfg.regularization,
            w0,
            cfg.solver,
            user_factors[r0:r1] if cg else None,
            cfg.cg_steps,
        )
        u = _gather_blocks(ctx, u_block, self.row_bounds)
        v_block = half_sweep(
            self.cols_layout,
            fixed_side(u, self.weighting.bias_offsets),
            cfg.regularization,
            w0,
            cfg.solver,
            item_factors[c0:c1] if cg else None,
            cfg.cg_steps,
        )
        return u, _gather_blocks(ctx, v_block, self.col_bounds)

    # ------------------------------------------------------------------------------------------ metrics
    def metrics(self, user_factors, item_factors) -> dict[str, float]:
        """Training RMSE and the objective over all workers' entries (``WALSModel``'s ``rmse`` and ``loss``).

        The objective is sum_obs [W (a - p)^2 - w0 p^2] + w0 tr(U'U V'V) + lambda sum_i s_i |u~_i|^2 + (same for
        V), with U'U = sum_p U_p'U_p and V'V = sum_p V_p'V_p all-reduced from the blocks' partial Gramians.
        """
        result = self._metrics(user_factors, item_factors)
        sums = self.strategy.experimental_local_results(result)[0].numpy().astype(np.float64)
        squared_error, count, observed, unobserved, penalty = sums
        return {"rmse": float(np.sqrt(squared_error / count)), "loss": float(observed + unobserved + penalty)}

    def _replica_metrics(self, user_factors, item_factors):
        ctx, w = tf.distribute.get_replica_context(), self.weighting
        k = self.config.latent_factors
        rows, cols, targets, weight = self._entries
        predictions = self.predict(user_factors, item_factors, rows, cols, clip=False)
        low, high = w.rating_range
        clipped = tf.clip_by_value(predictions, low, high)
        r0, r1 = self.row_bounds[self.rank : self.rank + 2]
        c0, c1 = self.col_bounds[self.rank : self.rank + 2]
        u_block, v_block = user_factors[r0:r1], item_factors[c0:c1]
        gramians = ctx.all_reduce(
            "sum",
            tf.stack(
                [
                    tf.matmul(u_block[:, :k], u_block[:, :k], transpose_a=True),
                    tf.matmul(v_block[:, :k], v_block[:, :k], transpose_a=True),
                ]
            ),
        )
        scale_u, scale_v = self._reg_scale
        penalty = self.config.regularization * (
            tf.reduce_sum(scale_u * tf.reduce_sum(tf.square(u_block), axis=1))
            + tf.reduce_sum(scale_v * tf.reduce_sum(tf.square(v_block), axis=1))
        )
        w0 = w.unobserved_weight
        partial = tf.stack(
            [
                tf.reduce_sum(tf.square(targets - clipped)),
                tf.cast(tf.size(targets), tf.float32),
                tf.reduce_sum(weight * tf.square(targets - predictions) - w0 * tf.square(predictions)),
                tf.constant(0.0) if self.rank else w0 * tf.reduce_sum(gramians[0] * gramians[1]),
                penalty,
            ]
        )
        return ctx.all_reduce("sum", partial)

    def predict(self, user_factors, item_factors, rows, cols, clip: bool = True) -> tf.Tensor:
        """Predictions [b] for index vectors [b]: u_i.v_j, or mu + b_i + c_j + u_i.v_j (clipped) with biases.

        ``rows`` and ``cols`` index the replicated factors, so any worker predicts any pair.
        """
        k = self.config.latent_factors
        u, v = tf.gather(user_factors, rows), tf.gather(item_factors, cols)
        scores = tf.reduce_sum(u[:, :k] * v[:, :k], axis=1)
        if self.weighting.bias_offsets:
            scores += u[:, k] + v[:, k] + self.weighting.mean
        if clip:
            scores = tf.clip_by_value(scores, *self.weighting.rating_range)
        return scores


def _gather_blocks(ctx, block: tf.Tensor, bounds: np.ndarray) -> tf.Tensor:
    """The rows of every worker's ``block`` [b_p, w] in rank order, [bounds[-1], w] (padded for the collective)."""
    sizes = np.diff(bounds)
    width = int(sizes.max())
    padded = tf.pad(block, [[0, width - tf.shape(block)[0]], [0, 0]])
    gathered = ctx.all_gather(padded, axis=0)  # [P * width, w]
    keep = np.concatenate([p * width + np.arange(size) for p, size in enumerate(sizes)])
    return tf.ensure_shape(tf.gather(gathered, tf.constant(keep.astype(np.int32))), [int(bounds[-1]), block.shape[1]])
