"""Partial fits: the exact factors (and biases) of given users or items against the other side's fixed factors.

``WALSModel.partial_fit_users`` / ``partial_fit_items`` (implicit's calls) solve, for each given row, the row
update of a half-sweep with that row's new entries (``foldin.solve``, the fold-in system), and write the solution
into the model. For item j the sides swap: the fixed table is U (or [U, 1] with biases, the offsets the user
biases b_i), and the tf1 mode's weights d_ij = R_i C_j = C_j (R = 1) come in as ``solve``'s query weights, with
C_j from the item's new positive count n_j. The tf1 mode's C for a users' fit comes from the counts of the
model's seen items (``recommender.SeenItems``), which a partial fit updates first.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from wals2 import foldin

logger = logging.getLogger(__name__)

#: Padded slots (queries x longest row) per ``foldin.solve`` call: bounds its [b, L, k] gather.
SLOTS_PER_SOLVE = 1 << 21


def solve_side(model, axis: int, indices: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray):
    """The solution of each query row of one side, float32 [b, k] (or [b, k + 1], factors then bias).

    Args:
        model: the ``WALSModel``, already of the size that holds ``indices`` (its seen items already updated).
        axis: 0 to solve users (against V), 1 to solve items (against U).
        indices: int64 [b], the user (item) index of each query.
        rows: int64 [e], the query (0..b-1) of each entry.
        cols: int64 [e], the fixed side's index of each entry (an item for users, a user for items).
        values: float [e], the ratings.
    """
    mode, cfg = model.mode, model.config
    counts = None
    if model.mode.fold_in_item_weights(np.zeros(model.num_items, np.int64)) is not None:
        if model._seen is None:
            raise ValueError(
                f"partial_fit in mode {cfg.mode!r} with item weights needs the items' training counts (C_j): call "
                "set_seen_items(users, items, values) or fit(train) first."
            )
        counts = model._seen.positive_counts()
    state = foldin.counts_state(model, np.zeros(model.num_items, np.int64) if counts is None else counts)
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
        out[chunk] = tf.debugging.assert_all_finite(solution, "partial_fit solution not finite").numpy()
        start = stop
    return out
