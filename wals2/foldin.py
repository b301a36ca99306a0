"""Fold-in: the exact factor of a user who was not in training, against fixed item factors.

This is TF1's ``WALSModel.project_row_factors``, for every mode. For a new user with rated items S (ratings
a_j), the item side stays fixed and the user's factor is the minimiser of the model's objective, i.e. the row
update of a half-sweep:

    (lambda_u I + w0 T'T + sum_{j in S} d_j t_j t_j') x = sum_{j in S} (w0 + d_j) y_j t_j

* ``tf1``: T = V, d_j = C_j (the TF1 item weights, R = 1), y_j = a_j, w0 = ``unobs_weight``; x = u.
* ``implicit``: T = V, d_j = alpha a_j, y_j = 1, w0 = 1; x = u.
* ``explicit``: T = [V, 1], d_j = 1, y_j = a_j - mu - c_j, w0 = 0; x = [u, b_u].

lambda_u = lambda, or lambda |S| with ``scale_regularization``. Folding in a training user's own ratings
therefore gives the factor (and bias) the last row half-sweep gave that user.
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
    mode: str = "tf1",
    item_bias: tf.Tensor | None = None,
    global_mean: float | tf.Tensor = 0.0,
    alpha: float | tf.Tensor = 0.0,
    scale_regularization: bool = False,
) -> tf.Tensor:
    """Folds in a batch of new users at once: one Cholesky solve per user (formulas in the module docstring).

    Pure tensors, traceable inside a ``tf.function`` (the SavedModel's ``fold_in_recommend`` uses it).

    Args:
        item_factors: V, float32 [n, k].
        item_indices: int [b, L], each user's rated items, padded with -1 (padding adds nothing).
        ratings: float32 [b, L], a_j (ignored on padding).
        regularization: lambda > 0.
        unobserved_weight: w0 >= 0 (tf1 mode).
        item_weights: C, float32 [n], or None for plain ALS (C = 0) (tf1 mode).
        mode: "tf1", "explicit" or "implicit".
        item_bias: c, float32 [n] (explicit mode).
        global_mean: mu (explicit mode).
        alpha: the confidence slope (implicit mode).
        scale_regularization: lambda |S| instead of lambda.

    Returns:
        float32 [b, k] user factors, or [b, k + 1] (factors, bias) in the explicit mode. A user with only padding
        gets 0.
    """
    v = tf.convert_to_tensor(item_factors, tf.float32)
    indices = tf.convert_to_tensor(item_indices)
    observed = indices >= 0
    safe = tf.where(observed, indices, tf.zeros_like(indices))
    mask = tf.cast(observed, tf.float32)
    a = tf.cast(ratings, tf.float32) * mask
    if mode == "explicit":
        table = tf.concat([v, tf.ones_like(v[:, :1])], axis=1)
        w0 = tf.constant(0.0)
        d = mask
        target = (a - tf.cast(global_mean, tf.float32) - tf.gather(tf.cast(item_bias, tf.float32), safe)) * mask
    elif mode == "implicit":
        table, w0 = v, tf.constant(1.0)
        d = tf.cast(alpha, tf.float32) * a
        target = mask
    else:
        table, w0 = v, tf.cast(unobserved_weight, tf.float32)
        d = tf.zeros_like(mask) if item_weights is None else tf.gather(tf.cast(item_weights, tf.float32), safe) * mask
        target = a
    lam = tf.cast(regularization, tf.float32)
    if scale_regularization:
        lam = lam * tf.reduce_sum(mask, axis=1)[:, None, None]
    gathered = tf.gather(table, safe) * mask[..., None]  # [b, L, k'], zero rows on padding
    g0 = gramian(table, 0.0, w0) + lam * tf.eye(tf.shape(table)[1])
    lhs = g0 + tf.matmul(gathered * d[..., None], gathered, transpose_a=True)  # [b, k', k']
    rhs = tf.matmul(((w0 + d) * target)[:, None, :], gathered)[:, 0, :]  # [b, k']
    return tf.linalg.cholesky_solve(tf.linalg.cholesky(lhs), rhs[..., None])[..., 0]


def item_weights_for(config, train: Ratings) -> np.ndarray | None:
    """C as the model's training used it: ``wt_type`` over the items' training ratings > 0, or None.

    Args:
        config: the model's ``WALSConfig``.
        train: the training ratings the model was fitted on.

    Returns:
        float32 [num_items]; None for plain ALS (``config.weights`` False) and outside the tf1 mode.
    """
    if config.mode != "tf1" or not config.weights:
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
        float32 [b, k], one factor per user; [b, k + 1] (factor, then bias b_u) in the explicit mode.

    Raises:
        ValueError: mismatched lengths, item indices out of [0, num_items), repeated items within one user,
            non-finite ratings or ``train`` of another shape than the model.
    """
    indices, values = _pad(items, ratings, model.num_items)
    return _solve_model(model, train, indices, values).numpy()


def recommend(
    model, train: Ratings, items: Sequence[Sequence[int]], ratings: Sequence[Sequence[float]], k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for new users by the model's score (u . v_j, plus mu + b_u + c_j in the explicit mode) with
    u from ``fold_in``, best first, their rated items excluded.

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
    k_factors = model.config.latent_factors
    scores = tf.matmul(u[:, :k_factors], tf.convert_to_tensor(model.item_factors), transpose_b=True)
    if model.config.mode == "explicit":
        user_offset = u[:, k_factors] + tf.convert_to_tensor(model.global_mean)
        scores += tf.convert_to_tensor(model.item_bias)[None, :] + user_offset[:, None]
    scores = scores.numpy()
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
    return solve(
        tf.convert_to_tensor(model.item_factors),
        indices,
        values,
        cfg.regularization,
        cfg.unobs_weight,
        item_weights_for(cfg, train),
        mode=cfg.mode,
        item_bias=tf.convert_to_tensor(model.item_bias),
        global_mean=tf.convert_to_tensor(model.global_mean),
        alpha=cfg.alpha,
        scale_regularization=cfg.scale_regularization,
    )


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
