"""Fold-in: the exact factor of a user who was not in training, against fixed item factors.

This is TF1's ``WALSModel.project_row_factors``. For a new user with rated items S (ratings a_j, item weights
C_j, row weight R = 1), the item factors V [n, k] stay fixed and the user factor u [k] is the minimiser of the
same weighted objective, the row update of a half-sweep:

    (lambda I + w0 V'V + sum_{j in S} C_j v_j v_j') u = sum_{j in S} (w0 + C_j) a_j v_j

with w0 = ``unobs_weight`` and lambda = ``regularization``. Plain ALS (``config.weights`` False) is C = 0. Folding
in a training user's own ratings therefore gives the factor the last row half-sweep gave that user.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from wals2 import weights as weights_lib
from wals2.data import Ratings
from wals2.solver import gramian


def solve(
    item_factors: tf.Tensor,
    item_indices: tf.Tensor,
    ratings: tf.Tensor,
    regularization: float | tf.Tensor,
    unobserved_weight: float | tf.Tensor,
    item_weights: tf.Tensor | None = None,
) -> tf.Tensor:
    """Folds in a batch of new users at once: one k x k Cholesky solve per user.

    Pure tensors, traceable inside a ``tf.function`` (the SavedModel's ``fold_in_recommend`` uses it).

    Args:
        item_factors: V, float32 [n, k].
        item_indices: int [b, L], each user's rated items, padded with -1 (padding adds nothing).
        ratings: float32 [b, L], a_j (ignored on padding).
        regularization: lambda > 0.
        unobserved_weight: w0 >= 0.
        item_weights: C, float32 [n], or None for plain ALS (C = 0).

    Returns:
        float32 [b, k], the user factors. A user with only padding gets 0.
    """
    v = tf.convert_to_tensor(item_factors, tf.float32)
    indices = tf.convert_to_tensor(item_indices)
    observed = indices >= 0
    safe = tf.where(observed, indices, tf.zeros_like(indices))
    mask = tf.cast(observed, tf.float32)
    w0 = tf.cast(unobserved_weight, tf.float32)
    gathered = tf.gather(v, safe) * mask[..., None]  # [b, L, k], zero rows on padding
    c = tf.zeros_like(mask) if item_weights is None else tf.gather(tf.cast(item_weights, tf.float32), safe) * mask
    a = tf.cast(ratings, tf.float32) * mask
    g0 = gramian(v, tf.cast(regularization, tf.float32), w0)
    lhs = g0 + tf.matmul(gathered * c[..., None], gathered, transpose_a=True)  # [b, k, k]
    rhs = tf.matmul(((w0 + c) * a)[:, None, :], gathered)[:, 0, :]  # [b, k]
    return tf.linalg.cholesky_solve(tf.linalg.cholesky(lhs), rhs[..., None])[..., 0]


def item_weights_for(config, train: Ratings) -> np.ndarray | None:
    """C as the model's training used it: ``wt_type`` over the items' training ratings > 0, or None (plain ALS).

    Args:
        config: the model's ``WALSConfig`` (``mode="tf1"``: the other modes have other normal equations).
        train: the training ratings the model was fitted on.

    Returns:
        float32 [num_items], or None when ``config.weights`` is False.
    """
    if config.mode != "tf1":
        raise ValueError(
            "Fold-in and export follow TF1's weighting: the model's `mode` should be 'tf1'. "
            f"Received: mode={config.mode!r}"
        )
    if not config.weights:
        return None
    counts = train.item_counts(positive_only=True)
    return weights_lib.item_weights(counts, config.wt_type, config.feature_wt_factor, config.feature_wt_exp)


def fold_in(model, train: Ratings, items: Sequence[Sequence[int]], ratings: Sequence[Sequence[float]]) -> np.ndarray:
    """Factors of new users from the items they rated, against ``model``'s fixed item factors.

    Args:
        model: a fitted ``WALSModel`` (its ``item_factors`` and ``config`` are used).
        train: the training ratings ``model`` was fitted on (for the item weights C_j).
        items: for each of b users, the item indices they rated (a list of int sequences or a ``tf.RaggedTensor``).
        ratings: the matching ratings, same lengths.

    Returns:
        float32 [b, k], one factor per user.

    Raises:
        ValueError: mismatched lengths, item indices out of [0, num_items), repeated items within one user,
            non-finite ratings or ``train`` of another shape than the model.
    """
    indices, values = _pad(items, ratings, model.num_items)
    return _solve_model(model, train, indices, values).numpy()


def recommend(
    model, train: Ratings, items: Sequence[Sequence[int]], ratings: Sequence[Sequence[float]], k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for new users by u . v_j with u from ``fold_in``, best first, their rated items excluded.

    Args:
        model, train, items, ratings: as in ``fold_in``.
        k: items per user, 1 <= k <= num_items. A user with fewer than k unrated items gets item -1 and score
            -inf in the remaining slots.

    Returns:
        (item indices int64 [b, k], scores float32 [b, k]).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= model.num_items:
        raise ValueError(f"`k` should be an integer in [1, {model.num_items}]. Received: k={k!r}")
    indices, values = _pad(items, ratings, model.num_items)
    u = _solve_model(model, train, indices, values)
    scores = tf.matmul(u, tf.convert_to_tensor(model.item_factors), transpose_b=True).numpy()
    rows, cols = np.nonzero(indices >= 0)
    scores[rows, indices[rows, cols]] = -np.inf
    top = tf.math.top_k(scores, k=k)
    out_items = top.indices.numpy().astype(np.int64)
    out_scores = top.values.numpy()
    out_items[np.isneginf(out_scores)] = -1
    return out_items, out_scores


def _solve_model(model, train: Ratings, indices: np.ndarray, values: np.ndarray) -> tf.Tensor:
    if train.shape != (model.num_users, model.num_items):
        raise ValueError(
            f"`train` should have the model's shape {(model.num_users, model.num_items)}. Received: {train.shape}"
        )
    cfg = model.config
    v = tf.convert_to_tensor(model.item_factors)
    return solve(v, indices, values, cfg.regularization, cfg.unobs_weight, item_weights_for(cfg, train))


def _pad(items, ratings, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-user (items, ratings) -> int64 [b, L] padded with -1 and float32 [b, L], validated."""
    if isinstance(items, tf.RaggedTensor):
        items = items.to_list()
    if isinstance(ratings, tf.RaggedTensor):
        ratings = ratings.to_list()
    items, ratings = list(items), list(ratings)
    if len(items) != len(ratings):
        raise ValueError(
            f"`items` and `ratings` should list the same number of users. Received: {len(items)} and {len(ratings)}"
        )
    width = max((len(row) for row in items), default=0)
    indices = np.full((len(items), width), -1, np.int64)
    values = np.zeros((len(items), width), np.float32)
    for b, (row, rated) in enumerate(zip(items, ratings)):
        row = np.asarray(row, dtype=np.int64).reshape(-1)
        rated = np.asarray(rated, dtype=np.float64).reshape(-1)
        if row.shape != rated.shape:
            raise ValueError(
                f"`items[{b}]` and `ratings[{b}]` should have the same length. Received: {row.size} and {rated.size}"
            )
        if row.size and (row.min() < 0 or row.max() >= num_items):
            raise ValueError(f"`items[{b}]` should hold item indices in [0, {num_items}). Received: {row.tolist()}")
        if np.unique(row).size != row.size:
            raise ValueError(f"`items[{b}]` should not repeat an item. Received: items[{b}]={row.tolist()}")
        if not np.all(np.isfinite(rated)):
            raise ValueError(f"`ratings[{b}]` should be finite. Received: ratings[{b}]={rated.tolist()}")
        indices[b, : row.size] = row
        values[b, : row.size] = rated
    return indices, values
