"""Partial fits: the exact factors (and biases) of given users or items against the other side's fixed factors.

``WALSModel.partial_fit_users`` / ``partial_fit_items`` (implicit's calls) solve, for each given row, the row
update of a half-sweep with that row's new entries (``foldin.solve``, the fold-in system): ``solve_rows``
validates and solves without changing the model, and the model then commits the factors, seen items and
vocabularies of the ``PartialFit`` together. For item j the sides swap: the fixed table is U (or [U, 1] with
biases, the offsets the user biases b_i), and the tf1 mode's weights d_ij = R_i C_j = C_j (R = 1) come in as
``solve``'s query weights, with C_j from the item's new positive count n_j. The tf1 mode's C for a users' fit
comes from the counts of the model's seen items (``recommender.SeenItems``), which a partial fit updates first.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from wals2 import foldin
from wals2.data import Ratings, Vocabulary
from wals2.recommender import SeenItems

#: Padded slots (queries x longest row) per ``foldin.solve`` call: bounds its [b, L, k] gather.
SLOTS_PER_SOLVE = 1 << 21


def query_indices(indices, name: str) -> np.ndarray:
    """The validated int64 query indices [b]: 1-D, non-empty, distinct, >= 0 (past the end adds rows)."""
    indices = np.atleast_1d(np.asarray(indices))
    if indices.ndim != 1 or not indices.size or indices.dtype.kind not in "iu":
        raise ValueError(
            f"`{name}` should be a non-empty 1-D array of ints. Received dtype {indices.dtype}, shape {indices.shape}"
        )
    indices = indices.astype(np.int64)
    if indices.min() < 0 or np.unique(indices).size != indices.size:
        raise ValueError(f"`{name}` should be distinct indices >= 0. Received: {indices.tolist()[:20]}")
    return indices


def raw_queries(vocabularies, axis: int, raw_ids, matrix, names: tuple[str, str]):
    """(indices [b], matrix, new raw ids) of a partial fit by raw ids: known ids keep their index, new ones follow
    the vocabulary's end in order; a ``Ratings`` becomes the [b, other] matrix of its entries by raw id.

    Args:
        vocabularies: the model's (users, items) ``data.Vocabulary``.
        axis: 0 (the queries are users) or 1 (items).
        raw_ids: distinct raw ids [b].
        matrix: [b, other] by index, or a ``Ratings`` (its query-side ids among ``raw_ids``, the other side's
            ids the model's; KeyError naming an unknown one).
        names: the two arguments' names, for messages.
    """
    own, other = vocabularies[axis], vocabularies[1 - axis]
    raw = own.cast(np.atleast_1d(np.asarray(raw_ids)))  # as the vocabulary's dtype: 17.0 is the int id 17
    queries = Vocabulary(raw, len(raw), names[0])
    new = ~own.contains(queries.ids_array)
    indices = np.empty(queries.size, np.int64)
    indices[~new] = own.index(queries.ids_array[~new])
    indices[new] = own.size + np.arange(new.sum())
    if isinstance(matrix, Ratings):
        ids = (matrix.user_ids[matrix.users], matrix.item_ids[matrix.items])[:: 1 if axis == 0 else -1]
        rows, cols = queries.index(ids[0]), other.index(ids[1])
        matrix = sp.coo_array((matrix.values, (rows, cols)), shape=(queries.size, other.size))
    return indices, matrix, queries.ids_array[new]


class PartialFit(NamedTuple):
    """A solved partial fit, not yet written into the model (``WALSModel`` commits it whole).

    Attributes:
        axis: 0 (users were solved) or 1 (items).
        indices: int64 [b], the solved rows.
        sizes: (num_users, num_items) after the fit (larger where it adds rows).
        seen: the seen items after the fit (``recommender.SeenItems``), or None where the model has none.
        vocabularies: the (users, items) vocabularies after the fit, or None where the model has none.
        solution: float32 [b, k] (or [b, k + 1], factors then bias), row r for ``indices[r]``.
    """

    axis: int
    indices: np.ndarray
    sizes: tuple[int, int]
    seen: SeenItems | None
    vocabularies: tuple[Vocabulary, Vocabulary] | None
    solution: np.ndarray


def solve_rows(
    model, axis: int, indices, rows, cols, values, names: tuple[str, str], max_new: int, new_ids=None
) -> PartialFit:
    """Validates and solves a partial fit of the rows ``indices`` of one side (0: users, 1: items); the model is
    only read. Nothing is allocated for the rows past the end before their number is checked against ``max_new``.

    Args:
        model: the ``WALSModel``.
        axis: 0 or 1.
        indices: validated int64 [b] (``query_indices``).
        rows, cols, values: the entries (query 0..b-1, other side's index, rating), checked (``model._coo``).
        names: the two arguments' names, for messages.
        max_new: the most rows the fit may add to that side (indices up to size + max_new - 1).
        new_ids: the raw ids of the rows past the end (``raw_queries``), or None for a call by index.

    Raises:
        ValueError: a rating the mode refuses, too many new rows, new rows without raw ids on a model with raw
            ids, or a solution that is not finite (ratings too large for float32).
    """
    side = ("users", "items")[axis]
    model.mode.refuse_invalid(values, f"`{names[1]}`")
    sizes = [model.num_users, model.num_items]
    grown = max(sizes[axis], int(indices.max()) + 1)
    if grown - sizes[axis] > max_new:
        raise ValueError(
            f"`{names[0]}` would add {grown - sizes[axis]} {side} (up to index {grown - 1}; the model has "
            f"{sizes[axis]}), more than `max_new_{side}`={max_new}. Received: max index {grown - 1}"
        )
    if grown > sizes[axis] and model._vocabularies is not None and new_ids is None:
        raise ValueError(
            f"`{names[0]}` has indices >= {sizes[axis]}, new rows without a raw id: the model has raw ids, "
            f"call partial_fit_{side}_ids."
        )
    sizes[axis] = grown
    vocabularies = model._vocabularies
    if vocabularies is not None and new_ids is not None and len(new_ids):
        vocabularies = list(vocabularies)
        vocabularies[axis] = vocabularies[axis].extended(new_ids)
        vocabularies = tuple(vocabularies)
    seen = model._seen
    if seen is not None:
        own = indices[rows]
        users, items = (own, cols) if axis == 0 else (cols, own)
        seen = seen.replaced(axis, indices, users, items, values, tuple(sizes))
    solution = solve_side(model, axis, indices, rows, cols, values, seen, sizes[1])
    _check_finite(solution, axis, indices, rows, values, names)
    return PartialFit(axis, indices, tuple(sizes), seen, vocabularies, solution)


def recalculated(model, axis: int, indices, rows, cols, values, names: tuple[str, str]) -> tuple[tf.Tensor, tf.Tensor]:
    """The rows of ``solve_rows`` solved against the model's fixed other side, not stored: implicit's
    ``recalculate_user`` / ``recalculate_item``. Users are folded in (``foldin.fold_in``: the item weights C_j of
    the tf1 mode from the model's seen items); an item's own C_j comes from its given row, as
    ``partial_fit_items`` would give it.

    Returns:
        (factors float32 [b, k], biases float32 [b], 0 without biases).

    Raises:
        ValueError: a rating the mode refuses, or a solution that is not finite.
    """
    model.mode.refuse_invalid(values, f"`{names[1]}`")
    seen = model._seen
    if axis == 1 and seen is not None:
        seen = seen.replaced(1, indices, cols, indices[rows], values, (model.num_users, model.num_items))
    solution = solve_side(model, axis, indices, rows, cols, values, seen, model.num_items)
    _check_finite(solution, axis, indices, rows, values, names, unchanged=False)
    factors, bias = foldin.split_solution(model.mode, tf.constant(solution), model.config.latent_factors)
    return factors, bias


def _check_finite(solution, axis: int, indices, rows, values, names: tuple[str, str], unchanged: bool = True) -> None:
    """A ValueError naming the first query row whose ``solution`` is not finite (ratings too large for float32)."""
    broken = np.flatnonzero(~np.all(np.isfinite(solution), axis=1))
    if broken.size:
        query = int(broken[0])
        largest = float(np.max(np.abs(values[rows == query]), initial=0.0))
        raise ValueError(
            f"`{names[1]}` row {query} ({('user', 'item')[axis]} {indices[query]}): the solution is not finite, its "
            f"ratings are too large for float32 (largest |rating| {largest:g})"
            + ("; the model is unchanged." if unchanged else ".")
        )


def solve_side(model, axis: int, indices, rows, cols, values, seen: SeenItems | None, num_items: int) -> np.ndarray:
    """The solution of each query row of one side, float32 [b, k] (or [b, k + 1], factors then bias).

    Args:
        model: the ``WALSModel`` (read only; its fixed side holds every index of ``cols``).
        axis: 0 to solve users (against V), 1 to solve items (against U).
        indices: int64 [b], the user (item) index of each query.
        rows: int64 [e], the query (0..b-1) of each entry.
        cols: int64 [e], the fixed side's index of each entry (an item for users, a user for items).
        values: float [e], the ratings.
        seen: the seen items after the fit (the tf1 mode's C_j counts their positive entries), or None.
        num_items: n after the fit.
    """
    mode, cfg = model.mode, model.config
    counts = None
    if mode.fold_in_item_weights(np.zeros(num_items, np.int64)) is not None:
        if seen is None:
            raise ValueError(
                f"Solving rows in mode {cfg.mode!r} with item weights needs the items' training counts (C_j): call "
                "set_seen_items(users, items, values) or fit(train) first."
            )
        counts = seen.item_counts(positive_only=True)
    state = foldin.state_of(model, np.zeros(num_items, np.int64) if counts is None else counts)
    query_weights = None
    if axis == 0:
        fixed = tf.convert_to_tensor(model.item_factors)
    else:  # the users are the fixed "items": R_i = 1 (TF1), the query's own C_j scales d, b_i are the offsets
        fixed = tf.convert_to_tensor(model.user_factors)
        weights = None if counts is None else mode.fold_in_item_weights(counts)
        state = state._replace(
            item_weights=tf.fill([model.num_users], 0.0 if weights is None else 1.0),
            item_bias=tf.convert_to_tensor(model.user_bias),
        )
        if weights is not None:
            query_weights = np.asarray(weights, np.float32)[indices]
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], np.asarray(values, np.float32)[order]
    lengths = np.bincount(rows, minlength=indices.size)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    out = np.zeros((indices.size, cfg.latent_factors + int(mode.biases)), np.float32)
    by_length = np.argsort(lengths, kind="stable")
    start = 0
    while start < indices.size:  # queries by length, in chunks of at most SLOTS_PER_SOLVE padded slots
        stop = start + 1
        while stop < indices.size and (stop + 1 - start) * max(int(lengths[by_length[stop]]), 1) <= SLOTS_PER_SOLVE:
            stop += 1
        chunk = by_length[start:stop]
        longest = max(int(lengths[chunk].max()), 1)
        padded = np.full((chunk.size, longest), -1, np.int64)
        ratings = np.zeros((chunk.size, longest), np.float32)
        for slot, query in enumerate(chunk):
            padded[slot, : lengths[query]] = cols[starts[query] : starts[query + 1]]
            ratings[slot, : lengths[query]] = values[starts[query] : starts[query + 1]]
        weights = None if query_weights is None else query_weights[chunk]
        solution = foldin.solve(mode, fixed, padded, ratings, cfg.regularization, state, weights)
        out[chunk] = solution.numpy()
        start = stop
    return out
