"""Fold-in: the exact factor of a user who was not in training, against fixed item factors.

This is TF1's ``WALSModel.project_row_factors``, for every mode. For a new user with rated items S (ratings
a_j), the item side stays fixed and the user's factor is the minimiser of the model's objective: the row update
of a half-sweep, the normal equation of ``wals2.solver`` with the user's entries, solved by the solver's own
``gram_and_rhs`` and ``cholesky_rows``. Each mode gives its terms (``modes.Mode.fold_in_terms``): the fixed table
T (V, or [V, 1] with biases, for x = [u, b_u]), w0, the entries' weights d_j and targets y_j. lambda_u = lambda,
or lambda |S| with ``scale_regularization``. Folding in a training user's own ratings therefore gives the factor
(and bias) the last row half-sweep gave that user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from wals2 import scoring, validate
from wals2.modes import Mode
from wals2.solver import cholesky_rows, gram_and_rhs, gramian


class FoldInState(NamedTuple):
    """What a mode's fold-in terms read of a fitted model (``modes.Mode.fold_in_terms``).

    Attributes:
        unobs_weight: w0 (tf1 mode).
        item_weights: C, float32 [n] (0 for plain ALS; tf1 mode).
        item_bias: c, float32 [n] (0 without biases).
        global_mean: mu (0 without biases).
        alpha: the confidence slope (implicit mode).
    """

    unobs_weight: float | tf.Tensor
    item_weights: tf.Tensor
    item_bias: tf.Tensor
    global_mean: float | tf.Tensor
    alpha: float | tf.Tensor


def solve(
    mode: Mode,
    item_factors: tf.Tensor,
    item_indices: tf.Tensor,
    ratings: tf.Tensor,
    regularization: float | tf.Tensor,
    state,
    query_weights: tf.Tensor | None = None,
) -> tf.Tensor:
    """Folds in a batch of new users at once: one Cholesky solve per user (formulas in the module docstring).

    Pure tensors, traceable inside a ``tf.function`` (the SavedModel's ``fold_in_recommend`` uses it). The same
    system, with the sides swapped (users as the fixed "items"), solves item rows against fixed user factors.

    Args:
        mode: the model's ``modes.Mode``; its ``fold_in_terms`` give T, w0, d and y.
        item_factors: V, float32 [n, k].
        item_indices: int [b, L], each user's rated items, padded with -1 (padding adds nothing).
        ratings: float32 [b, L], a_j (ignored on padding).
        regularization: lambda > 0; multiplied by |S| with the config's ``scale_regularization``.
        state: a ``FoldInState`` (or an object with its attributes, such as the serving module).
        query_weights: float32 [b], each query's own factor of the separable weights d = R_i C_j (the tf1 mode's
            C_j when the queries are items, whose users have R_i = 1), or None for 1.

    Returns:
        float32 [b, k] user factors, or [b, k + 1] (factors, bias) with biases. A user with only padding gets 0.
    """
    v = tf.convert_to_tensor(item_factors, tf.float32)
    indices = tf.convert_to_tensor(item_indices)
    observed = indices >= 0
    safe = tf.where(observed, indices, tf.zeros_like(indices))
    mask = tf.cast(observed, tf.float32)
    terms = mode.fold_in_terms(v, safe, tf.cast(ratings, tf.float32) * mask, mask, state)
    lam = tf.cast(regularization, tf.float32)
    if mode.config.scale_regularization:
        lam = lam * tf.reduce_sum(mask, axis=1)[:, None, None]
    table, w0, d = terms.table, terms.unobserved_weight, terms.gram_weights
    if query_weights is not None:
        d = d * tf.cast(query_weights, tf.float32)[:, None]
    gathered = tf.gather(table, safe) * mask[..., None]  # [b, L, k'], zero rows on padding
    gram, rhs = gram_and_rhs(gathered, (w0 + d) * terms.targets, d)  # [b, k', k'], [b, k']
    return cholesky_rows(gramian(table, lam, w0) + gram, rhs)


def state_of(model, positive_counts: np.ndarray | None = None) -> FoldInState:
    """The ``FoldInState`` of a fitted ``WALSModel``.

    Args:
        model: the ``WALSModel``.
        positive_counts: n_j [n] of the tf1 mode's item weights C; default: the positive entries of each item
            among the model's seen items (its training entries), read only where the mode weighs items.

    Raises:
        ValueError: the mode weighs items and the model has no seen items (nor ``positive_counts`` given).
    """
    if positive_counts is None and model.mode.fold_in_item_weights(np.zeros(model.num_items, np.int64)) is not None:
        positive_counts = model.item_counts(positive_only=True)
    weights = None if positive_counts is None else model.mode.fold_in_item_weights(positive_counts)
    return FoldInState(
        unobs_weight=model.config.unobs_weight,
        item_weights=tf.zeros([model.num_items]) if weights is None else tf.constant(weights),
        item_bias=tf.convert_to_tensor(model.item_bias),
        global_mean=tf.convert_to_tensor(model.global_mean),
        alpha=model.config.alpha,
    )


def fold_in(model, items: Sequence[Sequence[int]], ratings: Sequence[Sequence[float]]) -> np.ndarray:
    """Factors of new users from the items they rated, against ``model``'s fixed item factors.

    Args:
        model: a fitted ``WALSModel`` (its ``item_factors``, ``config`` and, for the tf1 mode's item weights C_j,
            its seen items are used).
        items: for each of b users, the item indices they rated (a list of int sequences or a ``tf.RaggedTensor``).
        ratings: the matching ratings, same lengths.

    Returns:
        float32 [b, k], one factor per user; [b, k + 1] (factor, then bias b_u) with biases (explicit mode).

    Raises:
        ValueError: mismatched lengths, item indices that are not ints or out of [0, num_items), repeated items
            within one user, ratings that are not finite in float32 or that the mode refuses (negative ones in the
            implicit mode), or a tf1 model with item weights and no seen items.
    """
    indices, values = _pad(items, ratings, model.num_items, model.mode)
    return _solve_model(model, indices, values).numpy()


def recommend(
    model, items: Sequence[Sequence[int]], ratings: Sequence[Sequence[float]], k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for new users by the model's score (``scoring.item_scores``) with u (and b_u) from
    ``fold_in``, best first, their rated items excluded.

    Args:
        model, items, ratings: as in ``fold_in``.
        k: items per user, 1 <= k <= num_items. A user with fewer than k unrated items gets item -1 and score
            -inf in the remaining slots.

    Returns:
        (item indices int64 [b, k], scores float32 [b, k]).
    """
    validate.integer("k", k, 1, model.num_items)
    indices, values = _pad(items, ratings, model.num_items, model.mode)
    factors, bias = split_solution(model.mode, _solve_model(model, indices, values), model.config.latent_factors)
    scores = scoring.item_scores(
        factors,
        bias,
        tf.convert_to_tensor(model.item_factors),
        tf.convert_to_tensor(model.item_bias),
        tf.convert_to_tensor(model.global_mean),
    )
    rows, cols = np.nonzero(indices >= 0)
    top, out_scores = scoring.top_k_unseen(scores, rows, indices[rows, cols], k)
    out_items, out_scores = top.numpy().astype(np.int64), out_scores.numpy()
    out_items[np.isneginf(out_scores)] = -1
    return out_items, out_scores


def split_solution(mode: Mode, solution: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(factors [b, k], bias [b]) of a fold-in solution; the bias is 0 without biases."""
    if mode.biases:
        return solution[:, :k], solution[:, k]
    return solution, tf.zeros_like(solution[:, 0])


def _solve_model(model, indices: np.ndarray, values: np.ndarray) -> tf.Tensor:
    return solve(
        model.mode,
        tf.convert_to_tensor(model.item_factors),
        indices,
        values,
        model.config.regularization,
        state_of(model),
    )


def _pad(items, ratings, num_items: int, mode: Mode) -> tuple[np.ndarray, np.ndarray]:
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
    for name, rows in (("items", items), ("ratings", ratings)):
        flat = next((b for b, row in enumerate(rows) if np.ndim(row) != 1), None)
        if flat is not None:
            raise ValueError(
                f"`{name}` should hold one list per user (`{name}[b]` 1-D). Received: {name}[{flat}]={rows[flat]!r}"
            )
    width = max((len(row) for row in items), default=0)
    indices = np.full((len(items), width), -1, np.int64)
    values = np.zeros((len(items), width), np.float32)
    for b, (row, rated) in enumerate(zip(items, ratings)):
        given = np.asarray(row).reshape(-1)
        rated = np.asarray(rated, dtype=np.float64).reshape(-1)
        if given.size and given.dtype.kind not in "iu":
            raise ValueError(f"`items[{b}]` should hold int item indices. Received dtype {given.dtype}: {row!r}")
        row = given.astype(np.int64)
        if row.shape != rated.shape:
            raise ValueError(
                f"`items[{b}]` and `ratings[{b}]` should have the same length. Received: {row.size} and {rated.size}"
            )
        if row.size and (row.min() < 0 or row.max() >= num_items):
            raise ValueError(f"`items[{b}]` should hold item indices in [0, {num_items}). Received: {row.tolist()}")
        if np.unique(row).size != row.size:
            raise ValueError(f"`items[{b}]` should not repeat an item. Received: items[{b}]={row.tolist()}")
        with np.errstate(over="ignore"):
            finite = np.all(np.isfinite(rated.astype(np.float32)))
        if not finite:
            raise ValueError(f"`ratings[{b}]` should be finite in float32. Received: ratings[{b}]={rated.tolist()}")
        mode.refuse_invalid(rated, f"`ratings[{b}]`")
        indices[b, : row.size] = row
        values[b, : row.size] = rated
    return indices, values
