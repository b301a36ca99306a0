"""The weights and targets of each training mode, as pure functions of the ratings and their global statistics.

A mode turns observed entries (i, j, r_ij) into the coefficients of the half-sweep normal equation

    (lambda I + w0 Y'Y + sum_{j in obs(i)} d_ij y_j y_j') x_i = sum_{j in obs(i)} (w0 + d_ij) a_ij y_j

* ``tf1``: w0 = ``unobs_weight``, a = r, d_ij = R_i C_j with R = 1 and C_j from ``wt_type`` over n_j, the
  column's training entries with r > 0 (or no weights at all, plain ALS, when ``weights`` is False).
* ``explicit``: w0 = 0, a = r - mu (mu the training mean), d = 1, with biases solved through bias offsets.
* ``implicit``: w0 = 1, a = 1, d_ij = alpha r_ij per entry.

The few numbers that depend on every entry (n_j, mu and the rating range) are ``Statistics``, which a single
process computes from its ratings and several workers sum over their shards, so that both derive identical weights.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from wals2 import weights as weights_lib


class Statistics(NamedTuple):
    """Sums over all training entries that the weights depend on.

    Attributes:
        positive_counts: int64 [n], n_j = entries of column j with a value > 0.
        total: float64, sum of the values.
        count: int, the number of entries.
        low, high: float64, the smallest and largest value.
    """

    positive_counts: np.ndarray
    total: float
    count: int
    low: float
    high: float

    @property
    def mean(self) -> float:
        return self.total / self.count


class Weighting(NamedTuple):
    """The normal-equation coefficients of a mode (see the module docstring).

    Attributes:
        unobserved_weight: w0.
        targets: float64 [nnz], a_ij.
        row_weights, col_weights: float32 [m] and [n] (R and C), or None.
        entry_weights: float64 [nnz], d_ij per entry (implicit mode), or None.
        bias_offsets: the solve carries biases (explicit mode).
        mean: mu, subtracted from the ratings (explicit mode), else 0.
        rating_range: (low, high) clip of the predictions (explicit mode), else (-inf, inf).
    """

    unobserved_weight: float
    targets: np.ndarray
    row_weights: np.ndarray | None
    col_weights: np.ndarray | None
    entry_weights: np.ndarray | None
    bias_offsets: bool
    mean: float
    rating_range: tuple[float, float]

    def observed_weight(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """W_ij = w0 + d_ij of the entries (rows, cols), float64 [nnz], the weights of the objective."""
        if self.entry_weights is not None:
            return self.unobserved_weight + self.entry_weights
        if self.row_weights is None:
            return np.full(rows.shape, self.unobserved_weight)
        return self.unobserved_weight + self.row_weights[rows].astype(np.float64) * self.col_weights[cols]


def statistics(cols: np.ndarray, values: np.ndarray, num_items: int) -> Statistics:
    """The ``Statistics`` of the entries (cols, values) of an m x ``num_items`` matrix."""
    values = np.asarray(values, dtype=np.float64)
    return Statistics(
        positive_counts=np.bincount(np.asarray(cols)[values > 0], minlength=num_items).astype(np.int64),
        total=float(values.sum()),
        count=int(values.size),
        low=float(values.min()) if values.size else np.inf,
        high=float(values.max()) if values.size else -np.inf,
    )


def weighting(config, values: np.ndarray, shape: tuple[int, int], stats: Statistics) -> Weighting:
    """The coefficients of ``config.mode`` for the entries with ``values`` float64 [nnz] (TF1's weights by default).

    Args:
        config: a ``WALSConfig``.
        values: the ratings r_ij of the entries at hand (all of them, or one worker's block).
        shape: (m, n), the global matrix shape.
        stats: ``Statistics`` of all training entries (``statistics`` of ``values`` in a single process).

    Raises:
        ValueError: negative values in the implicit mode.
    """
    num_users, num_items = shape
    values = np.asarray(values, dtype=np.float64)
    if config.mode == "implicit":  # preference 1 with confidence 1 + alpha r: w0 = 1, d = alpha r
        if np.any(values < 0):
            raise ValueError("Implicit mode needs non-negative values (confidence 1 + alpha * r).")
        return Weighting(1.0, np.ones_like(values), None, None, config.alpha * values, False, 0.0, (-np.inf, np.inf))
    if config.mode == "explicit":  # observed entries only, weight 1, targets centred on the mean
        ones = [np.ones(size, np.float32) for size in shape]
        return Weighting(0.0, values - stats.mean, *ones, None, True, stats.mean, (stats.low, stats.high))
    r = c = None
    if config.weights:
        r = np.ones(num_users, np.float32)
        c = weights_lib.item_weights(
            stats.positive_counts, config.wt_type, config.feature_wt_factor, config.feature_wt_exp
        )
    return Weighting(float(config.unobs_weight), values, r, c, None, False, 0.0, (-np.inf, np.inf))
