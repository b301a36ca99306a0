"""Row and column weights of the TF1 weighting W_ij = w0 + R_i C_j (observed) and w0 (unobserved)."""

from __future__ import annotations

import numbers

import numpy as np

from wals2.config import LINEAR_RATINGS, LOG_RATINGS


def item_weights(
    positive_counts: np.ndarray, wt_type: int, feature_wt_factor: float, feature_wt_exp: float
) -> np.ndarray:
    """TF1's ``make_wts`` item weights C_j from the training counts.

    Args:
        positive_counts: int array [n_items], n_j = number of training entries with a value > 0 in column j.
        wt_type: ``LINEAR_RATINGS`` (1): C_j = f / n_j; ``LOG_RATINGS`` (0): C_j = n_j ** -e (a power law,
            named "log" in TF1).
        feature_wt_factor: f.
        feature_wt_exp: e.

    Returns:
        float32 [n_items]; C_j = 0 where n_j = 0.
    """
    counts = np.asarray(positive_counts, dtype=np.float64)
    if np.any(counts < 0):
        raise ValueError("`positive_counts` should be non-negative.")
    out = np.zeros_like(counts)
    seen = counts > 0
    if wt_type == LINEAR_RATINGS:
        out[seen] = feature_wt_factor / counts[seen]
    elif wt_type == LOG_RATINGS:
        out[seen] = counts[seen] ** (-feature_wt_exp)
    else:
        raise ValueError(f"`wt_type` should be 0 (log) or 1 (linear). Received: wt_type={wt_type!r}")
    return out.astype(np.float32)


def resolve(weights: None | float | np.ndarray, size: int, name: str) -> np.ndarray | None:
    """Normalises a weight argument: None (plain ALS), a non-negative scalar, or a vector of ``size``.

    Returns None or a float32 vector [size]; raises ValueError naming ``name`` on bad input.
    """
    if weights is None:
        return None
    if isinstance(weights, numbers.Real) and not isinstance(weights, bool):
        if not np.isfinite(weights) or weights < 0:
            raise ValueError(f"`{name}` should be non-negative and finite. Received: {name}={weights!r}")
        return np.full(size, weights, dtype=np.float32)
    array = np.asarray(weights, dtype=np.float32)
    if array.shape != (size,):
        raise ValueError(
            f"`{name}` should be None, a scalar or a vector of shape ({size},). Received shape {array.shape}"
        )
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"`{name}` should be non-negative and finite everywhere.")
    return array
