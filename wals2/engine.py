"""The sweep engine: one worker's blocks of both halves, the sweep, the objective and the training error.

Worker p of P owns the contiguous row block [r_p, r_{p+1}) and column block [c_p, c_{p+1}) of the m x n matrix
(``Blocks``) and holds the training entries of both (a ``Partition``). The factors are replicated: every worker
keeps the whole U [m, k] and V [n, k]. A sweep on worker p is

    U_p = half_sweep(rows of block p, V)          [r_{p+1} - r_p, k]
    U   = all_gather_p(U_p)                        [m, k]
    V_p = half_sweep(columns of block p, U)       [c_{p+1} - c_p, k]
    V   = all_gather_p(V_p)                        [n, k]

and the only other collective is an all-reduce of the blocks' sums (objective, squared errors, counts). Both go
through the replica context of the current ``tf.distribute`` strategy, so the same code runs as one process (the
default strategy: one block, the collectives are the identity) and as P workers of a
``MultiWorkerMirroredStrategy``. A row's system is the one a single process solves, so P workers give the factors
of one process up to the floating-point order of the blocks' chunks.

With biases (the explicit mode), the factor tables carry a last column: [U, b] and [V, c].
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from wals2 import scoring, validate
from wals2.layout import HalfLayout, build_half
from wals2.modes import Mode, Statistics, statistics
from wals2.solver import fixed_side, half_sweep

logger = logging.getLogger(__name__)


def block_bounds(size: int, count: int) -> np.ndarray:
    """Boundaries int64 [count + 1] of ``count`` contiguous near-equal blocks of ``size`` (the first ones larger)."""
    validate.integer("count", count)
    base, extra = divmod(int(size), int(count))
    sizes = np.full(count, base, np.int64) + (np.arange(count) < extra)
    return np.concatenate([[0], np.cumsum(sizes)])


class Blocks(NamedTuple):
    """Worker ``rank`` of ``count``: the row and column block boundaries of an m x n matrix."""

    rank: int
    count: int
    row_bounds: np.ndarray
    col_bounds: np.ndarray

    @classmethod
    def of(cls, shape: tuple[int, int], rank: int = 0, count: int = 1) -> Blocks:
        return cls(int(rank), int(count), block_bounds(shape[0], count), block_bounds(shape[1], count))

    @property
    def rows(self) -> tuple[int, int]:
        """[r0, r1), this worker's row block."""
        return int(self.row_bounds[self.rank]), int(self.row_bounds[self.rank + 1])

    @property
    def cols(self) -> tuple[int, int]:
        """[c0, c1), this worker's column block."""
        return int(self.col_bounds[self.rank]), int(self.col_bounds[self.rank + 1])

    def row_owner(self, rows: np.ndarray) -> np.ndarray:
        """The rank owning each row index."""
        return np.searchsorted(self.row_bounds, rows, side="right") - 1

    def col_owner(self, cols: np.ndarray) -> np.ndarray:
        """The rank owning each column index."""
        return np.searchsorted(self.col_bounds, cols, side="right") - 1


class Entries(NamedTuple):
    """Observed entries with global indices: rows, cols int [e], values float [e]."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray


class Partition(NamedTuple):
    """What one worker holds of the training matrix.

    Attributes:
        shape: (m, n), the global shape.
        blocks: this worker's ``Blocks``.
        by_row: the training entries of its row block (every entry is in exactly one row block).
        by_col: the training entries of its column block.
        stats: ``modes.Statistics`` of all training entries (summed over workers).
    """

    shape: tuple[int, int]
    blocks: Blocks
    by_row: Entries
    by_col: Entries
    stats: Statistics

    @classmethod
    def single(cls, rows, cols, values, shape) -> Partition:
        """The one-worker partition of all entries; integer or boolean ratings are kept as they are (no float copy)."""
        values = np.asarray(values)
        values = values if values.dtype.kind in "fiub" else values.astype(np.float32)
        entries = Entries(np.asarray(rows), np.asarray(cols), values)
        stats = statistics(entries.cols, entries.values, shape[1])
        return cls((int(shape[0]), int(shape[1])), Blocks.of(shape), entries, entries, stats)


class SweepEngine:
    """The sweeps, objective and errors of one worker's blocks (``Partition``) in one mode.

    Call ``sweep``, ``metrics`` and ``heldout_errors`` in a replica context (inside ``strategy.run``, a Keras
    ``train_step``, or anywhere under the default strategy); every worker of the strategy must call them together.

    Args:
        mode: the ``modes.Mode`` (weighting, targets).
        partition: this worker's entries.
        given_weights: (R [m], C [n]) given by the caller instead of the mode's, (None, None) for plain ALS
            (tf1 mode only); None for the mode's own.
    """

    def __init__(self, mode: Mode, partition: Partition, given_weights: tuple | None = None):
        self.mode = mode
        self.config = cfg = mode.config
        self.partition = partition
        self.shape = m, n = partition.shape
        blocks = partition.blocks
        (r0, r1), (c0, c1) = blocks.rows, blocks.cols
        by_row, by_col = partition.by_row, partition.by_col
        weight = mode.weighting(by_row.values, self.shape, partition.stats, given_weights)
        self.mean = float(weight.mean)
        self.rating_range = tuple(float(x) for x in weight.rating_range)
        self.unobserved_weight = float(weight.unobserved_weight)
        local = _local  # block-local indices (no copy for the first block)
        self.rows_layout = self._half(weight, local(by_row.rows, r0), by_row.cols, r1 - r0, n, (r0, r1), False)
        col_weight = mode.weighting(by_col.values, self.shape, partition.stats, given_weights)
        self.cols_layout = self._half(col_weight, local(by_col.cols, c0), by_col.rows, c1 - c0, m, (c0, c1), True)
        self._weight_of_rows = weight
        self._objective = None  # the entries of ``metrics``, built at its first call
        scale = (np.ones(r1 - r0), np.ones(c1 - c0))
        if cfg.scale_regularization:  # lambda n_i: a block holds every entry of its rows (columns)
            scale = (np.bincount(by_row.rows - r0, minlength=r1 - r0), np.bincount(by_col.cols - c0, minlength=c1 - c0))
        self._reg_scale = [tf.constant(np.asarray(s, np.float32)) for s in scale]
        if blocks.count > 1:
            logger.info(
                "worker %d of %d: rows [%d, %d) with %d entries, columns [%d, %d) with %d entries",
                blocks.rank,
                blocks.count,
                r0,
                r1,
                by_row.rows.size,
                c0,
                c1,
                by_col.rows.size,
            )

    def _half(self, weight, own, other, num_rows, num_fixed, bounds, transposed) -> HalfLayout:
        """The ``build_half`` layout of the block ``bounds`` (``own`` are block-local indices)."""
        cfg = self.config
        weights = (weight.row_weights, weight.col_weights)
        if transposed:
            weights = weights[::-1]
        own_weights = None if weights[0] is None else weights[0][bounds[0] : bounds[1]]
        return build_half(
            own,
            other,
            weight.targets,
            int(num_rows),
            int(num_fixed),
            own_weights,
            weights[1],
            weight.unobserved_weight,
            cfg.batch_entries,
            cfg.max_row_length,
            entry_weights=weight.entry_weights,
            bias_offsets=self.mode.biases,
            scale_regularization=cfg.scale_regularization,
        )

    @property
    def width(self) -> int:
        """Columns of the factor tables: k, or k + 1 with the bias column."""
        return self.config.latent_factors + int(self.mode.biases)

    # ------------------------------------------------------------------------------------------ the sweep
    def sweep(self, user_table: tf.Tensor, item_table: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One exact (or CG, or subspace) sweep from U [m, w] and V [n, w]; returns the new (U, V), equal everywhere."""
        cfg, blocks = self.config, self.partition.blocks
        (r0, r1), (c0, c1) = blocks.rows, blocks.cols
        warm = cfg.solver in ("cg", "subspace")  # the solvers that start from the previous factors
        options = dict(cg_steps=cfg.cg_steps, subspace_block=cfg.subspace_block, subspace_sweeps=cfg.subspace_sweeps)
        u_block = half_sweep(
            self.rows_layout,
            fixed_side(item_table, self.mode.biases),
            cfg.regularization,
            cfg.solver,
            user_table[r0:r1] if warm else None,
            **options,
        )
        u = gather_blocks(u_block, blocks.row_bounds)
        v_block = half_sweep(
            self.cols_layout,
            fixed_side(u, self.mode.biases),
            cfg.regularization,
            cfg.solver,
            item_table[c0:c1] if warm else None,
            **options,
        )
        return u, gather_blocks(v_block, blocks.col_bounds)

    # ------------------------------------------------------------------------------------------ metrics
    def split(self, table: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(factors [., k], bias [.]) of a factor table; the bias is 0 without the bias column."""
        k = self.config.latent_factors
        if self.mode.biases:
            return table[:, :k], table[:, k]
        return table, tf.zeros_like(table[:, 0])

    def predict(self, user_table, item_table, rows, cols, clip: bool = True) -> tf.Tensor:
        """p_ij for index vectors [b] (clipped to the rating range unless ``clip`` is False)."""
        (u, bu), (v, bv) = self.split(user_table), self.split(item_table)
        scores = scoring.pair_scores(u, v, bu, bv, self.mean, rows, cols)
        return tf.clip_by_value(scores, *self.rating_range) if clip else scores

    def metrics(self, user_table, item_table, with_loss: bool = True) -> dict[str, tf.Tensor]:
        """Training RMSE and the objective over all workers' entries, float32 scalars.

        The objective, with W = w0 + d the observed weight, a the target, p the unclipped prediction and
        lambda_i = lambda s_i (s_i = 1, or n_i with ALS-WR), is

            sum_obs [W (a - p)^2 - w0 p^2] + w0 tr(U'U V'V) + sum_i lambda_i |u~_i|^2 + sum_j lambda_j |v~_j|^2

        where u~ includes the bias: sum over every cell of w0 (a - p)^2 (a = 0 off the observed set) equals
        w0 |U V'|^2 = w0 tr(U'U V'V) plus the observed correction. Each worker sums its row block's entries and
        its blocks' penalties; the sums are all-reduced, and tr(U'U V'V) comes from the replicated factors.
        """
        blocks = self.partition.blocks
        (r0, r1), (c0, c1) = blocks.rows, blocks.cols
        rows, cols, targets, weights = self._objective_entries()
        predictions = self.predict(user_table, item_table, rows, cols, clip=False)
        clipped = tf.clip_by_value(predictions, *self.rating_range)
        sums = [tf.reduce_sum(tf.square(targets - clipped)), tf.cast(tf.size(clipped), tf.float32)]
        if with_loss:
            w0 = self.unobserved_weight
            observed = tf.reduce_sum(weights * tf.square(targets - predictions) - w0 * tf.square(predictions))
            scale_u, scale_v = self._reg_scale
            penalty = self.config.regularization * (
                tf.reduce_sum(scale_u * tf.reduce_sum(tf.square(user_table[r0:r1]), axis=1))
                + tf.reduce_sum(scale_v * tf.reduce_sum(tf.square(item_table[c0:c1]), axis=1))
            )
            sums += [observed + penalty]
        total = tf.distribute.get_replica_context().all_reduce("sum", tf.stack(sums))
        logs = {"rmse": _rmse(total)}
        if with_loss:
            (u, _), (v, _) = self.split(user_table), self.split(item_table)
            utu = tf.matmul(u, u, transpose_a=True)
            vtv = tf.matmul(v, v, transpose_a=True)
            logs["loss"] = total[2] + self.unobserved_weight * tf.reduce_sum(utu * vtv)
        return logs

    def _objective_entries(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """The row block's entries (rows, cols, targets, W_ij) for the objective and the training error.

        Each entry is in one row block. Their targets a_ij + mu are the ratings (1 in the implicit mode), as for
        held-out entries. Built at the first call, outside any graph being traced (a sweep-only caller, such as
        a benchmark, never holds them).
        """
        if self._objective is None:
            by_row, weight = self.partition.by_row, self._weight_of_rows
            with tf.init_scope():
                self._objective = (
                    tf.constant(by_row.rows.astype(np.int32)),
                    tf.constant(by_row.cols.astype(np.int32)),
                    tf.constant(np.asarray(self.mode.heldout_targets(by_row.values), np.float32)),
                    tf.constant(weight.observed_weight(by_row.rows, by_row.cols).astype(np.float32)),
                )
        return self._objective

    def heldout_rmse(self, user_table, item_table, heldout: Entries) -> tf.Tensor:
        """The RMSE over every worker's ``heldout`` entries (each worker passes its own, disjoint part)."""
        target = tf.constant(np.asarray(self.mode.heldout_targets(heldout.values), np.float32))
        predictions = self.predict(user_table, item_table, heldout.rows, heldout.cols)
        sums = tf.stack([tf.reduce_sum(tf.square(target - predictions)), tf.cast(tf.size(predictions), tf.float32)])
        return _rmse(tf.distribute.get_replica_context().all_reduce("sum", sums))


def _rmse(total: tf.Tensor) -> tf.Tensor:
    """sqrt(sum of squared errors / count) of the all-reduced [sum, count, ...] (0 for no entries); the TF twin of
    ``metrics.rmse`` for sums that several workers add up."""
    return tf.sqrt(tf.math.divide_no_nan(total[0], total[1]))


def _local(indices: np.ndarray, start: int) -> np.ndarray:
    """``indices - start``, without a copy when ``start`` is 0."""
    return indices - start if start else indices


def gather_blocks(block: tf.Tensor, bounds: np.ndarray) -> tf.Tensor:
    """Every worker's ``block`` [b_p, w] in rank order, [bounds[-1], w]; the identity with one worker.

    ``all_gather`` needs equal shapes, so the blocks are padded to the largest and trimmed after.
    """
    sizes = np.diff(bounds)
    if sizes.size == 1:
        return block
    width = int(sizes.max())
    padded = tf.pad(block, [[0, width - tf.shape(block)[0]], [0, 0]])
    gathered = tf.distribute.get_replica_context().all_gather(padded, axis=0)  # [P * width, w]
    keep = np.concatenate([p * width + np.arange(size) for p, size in enumerate(sizes)])
    return tf.ensure_shape(tf.gather(gathered, tf.constant(keep.astype(np.int32))), [int(bounds[-1]), block.shape[1]])
