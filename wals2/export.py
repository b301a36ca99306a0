"""A serving SavedModel of a fitted ``WALSModel``: factors, raw-id vocabularies and seen items, no training graph.

``export_saved_model(model, path)`` (or ``model.export(path)``) writes a ``tf.Module`` that holds, as variables
and lookup tables (all in ``variables/``, so ``saved_model.pb`` has the same size for any data set), what it
reads of the model:

- U [m, k] and V [n, k], the user and item factors;
- the raw user and item ids (string) and hash tables raw id -> index;
- each user's training items (CSR: ``seen_indptr`` [m + 1], ``seen_items`` [nnz]), excluded from recommendations;
- the items ranked by training count (the answer for unknown users) and the fold-in item weights C [n];
- the biases b [m], c [n], the mean mu and the rating range of the explicit mode (zeros / unbounded otherwise).

Signatures (inputs by name; every output is a named dict entry):

- ``serving_default``: ``user_id`` string [b] -> ``item_ids`` string [b, K], ``scores`` float32 [b, K],
  ``known_user`` bool [b], with K = ``top_k`` fixed at export.
- ``recommend``: ``user_id`` string [b], ``k`` int32 scalar (1 <= k <= n) -> the same with k columns.
- ``score``: ``user_id``, ``item_id`` string [b] -> ``scores`` float32 [b] (the model's prediction: u_i . v_j,
  or mu + b_i + c_j + u_i . v_j clipped to the rating range in the explicit mode), ``known_user``,
  ``known_item`` bool [b].
- ``fold_in_recommend``: ``item_ids`` string [b, L] (padded with ""), ``ratings`` float32 [b, L] -> ``item_ids``,
  ``scores`` [b, K] and ``num_known_items`` int32 [b], for users who were not in training (``wals2.foldin``).
- ``recommend_from``: ``user_id`` string [b], ``candidate_item_ids`` string [b, C] (each user's candidates, padded
  with ""), ``k`` int32 scalar (1 <= k <= n) -> ``item_ids``, ``scores`` [b, k], ``known_user`` [b]: ``recommend``
  among the row's candidates only (``WALSModel.recommend_ids(items=...)``). Candidate ids not in the vocabulary
  are ignored, a repeated one counts once.
- ``similar_items``: ``item_id`` string [b], ``k`` int32 scalar (1 <= k <= n) -> ``item_ids`` string [b, k],
  ``scores`` float32 [b, k], ``known_item`` bool [b]: the items of highest cosine similarity of the item factors
  (``WALSModel.similar_items``: no biases, and the query item itself is a candidate, so that it comes first with
  score 1 up to rounding).
- ``similar_users``: ``user_id`` string [b], ``k`` (1 <= k <= m) -> ``user_ids``, ``scores`` [b, k],
  ``known_user`` [b], the same over the user factors.

Recommendations are the top k items by u_i . v_j (plus mu + b_i + c_j in the explicit mode), best first, with the
user's training items excluded. A user id that is not in the vocabulary, or that had no training ratings (its factor
is 0), is "unknown": it gets the k items with the most training ratings (ties by index), scores 0.0 (the prediction
of a zero factor) and ``known_user`` false. The same holds for a fold-in row none of whose items is known. In
``score``, an unknown user or item (same definition) scores 0.0 with ``known_user`` / ``known_item`` false. Slots
beyond a user's unseen items (only when fewer than k remain) hold item id "" and score -inf.

``recommend_from`` ranks an unknown user's candidates by popularity (scores 0.0); slots beyond a row's unseen
candidates hold "" and -inf. In ``similar_items`` / ``similar_users`` an unknown query (not in the vocabulary, or
without training ratings) gets the k items (users) with the most training ratings, ties by index, scores 0.0 and
``known_item`` / ``known_user`` false."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from wals2 import scoring, validate
from wals2.foldin import solve as fold_in_solve
from wals2.foldin import split_solution
from wals2.modes import mode_of

logger = logging.getLogger(__name__)

USER_ID = tf.TensorSpec([None], tf.string, name="user_id")
ITEM_ID = tf.TensorSpec([None], tf.string, name="item_id")
K = tf.TensorSpec([], tf.int32, name="k")
FOLD_IN_ITEM_IDS = tf.TensorSpec([None, None], tf.string, name="item_ids")
FOLD_IN_RATINGS = tf.TensorSpec([None, None], tf.float32, name="ratings")
CANDIDATE_ITEM_IDS = tf.TensorSpec([None, None], tf.string, name="candidate_item_ids")


class ServingModule(tf.Module):
    """What serving needs of a fitted model, as variables and hash tables (see the module docstring).

    Args:
        user_factors: U, float32 [m, k].
        item_factors: V, float32 [n, k].
        user_ids: [m] raw user id of each index (any dtype; stored as strings).
        item_ids: [n] raw item id of each index.
        seen_indptr: int64 [m + 1], CSR row pointers of the users' training items.
        seen_items: int32 [nnz], the training items, grouped by user.
        item_counts: int [n], training entries per item (popularity).
        item_weights: float32 [n], fold-in C_j, or None for plain ALS.
        regularization: lambda.
        unobs_weight: w0.
        top_k: K of ``serving_default`` and ``fold_in_recommend``.
        config: the model's ``WALSConfig`` (mode, alpha and ALS-WR scaling of the fold-in).
        user_bias, item_bias, global_mean, rating_range: the explicit mode's biases, mu and clipping range.
    """

    def __init__(
        self,
        user_factors,
        item_factors,
        user_ids,
        item_ids,
        seen_indptr,
        seen_items,
        item_counts,
        item_weights,
        regularization: float,
        unobs_weight: float,
        top_k: int,
        config,
        user_bias,
        item_bias,
        global_mean,
        rating_range,
    ):
        super().__init__(name="wals_serving")
        self._mode = mode_of(config)
        self.alpha = _constant_variable(config.alpha, tf.float32, "alpha")
        self.user_bias = _constant_variable(user_bias, tf.float32, "user_bias")
        self.item_bias = _constant_variable(item_bias, tf.float32, "item_bias")
        self.global_mean = _constant_variable(global_mean, tf.float32, "global_mean")
        self.rating_range = _constant_variable(rating_range, tf.float32, "rating_range")
        num_users, num_items = len(user_ids), len(item_ids)
        self.top_k = top_k
        self.user_factors = _constant_variable(user_factors, tf.float32, "user_factors")
        self.item_factors = _constant_variable(item_factors, tf.float32, "item_factors")
        self.user_vocabulary = _constant_variable(np.asarray(user_ids).astype(str), tf.string, "user_vocabulary")
        self.item_vocabulary = _constant_variable(np.asarray(item_ids).astype(str), tf.string, "item_vocabulary")
        self.seen_indptr = _constant_variable(seen_indptr, tf.int64, "seen_indptr")
        self.seen_items = _constant_variable(seen_items, tf.int32, "seen_items")
        # Popular first: -rank, so that top_k over it lists the items by training count, ties by index.
        ranking = np.lexsort((np.arange(num_items), -np.asarray(item_counts)))
        popularity = np.empty(num_items, np.float32)
        popularity[ranking] = -np.arange(num_items, dtype=np.float32)
        self.popularity = _constant_variable(popularity, tf.float32, "popularity")
        self.item_known = _constant_variable(np.asarray(item_counts) > 0, tf.bool, "item_known")
        weights = np.zeros(num_items, np.float32) if item_weights is None else item_weights
        self.item_weights = _constant_variable(weights, tf.float32, "item_weights")
        self.regularization = _constant_variable(regularization, tf.float32, "regularization")
        self.unobs_weight = _constant_variable(unobs_weight, tf.float32, "unobs_weight")
        # Mutable tables are checkpointed into variables/ (a static table's keys would be graph constants).
        self.user_table = _table(self.user_vocabulary, num_users)
        self.item_table = _table(self.item_vocabulary, num_items)

    @tf.function(input_signature=[USER_ID], autograph=False)
    def serve(self, user_id):
        """Top-K (fixed at export) for raw user ids: ``item_ids`` string [b, K], ``scores`` [b, K], ``known_user``."""
        return self._recommend(user_id, self.top_k)

    @tf.function(input_signature=[USER_ID, K], autograph=False)
    def recommend(self, user_id, k):
        """Top-k for raw user ids, 1 <= k <= n: ``item_ids`` string [b, k], ``scores`` [b, k], ``known_user``."""
        return self._recommend(user_id, k)

    @tf.function(input_signature=[USER_ID, CANDIDATE_ITEM_IDS, K], autograph=False)
    def recommend_from(self, user_id, candidate_item_ids, k):
        """Top-k among each user's candidates (row b of ``candidate_item_ids``, padded with ""), seen items excluded.

        Candidates not in the vocabulary are ignored; an unknown user gets its candidates by popularity, scores 0.0.
        """
        tf.debugging.assert_equal(
            tf.shape(candidate_item_ids)[0],
            tf.shape(user_id)[0],
            message="`candidate_item_ids` should have one row per `user_id`",
        )
        candidates = tf.ensure_shape(self.item_table.lookup(candidate_item_ids), candidate_item_ids.shape)
        listed = tf.where(candidates >= 0)  # [e, 2]: (row, position in the row) of the known candidates
        where = tf.stack([listed[:, 0], tf.gather_nd(candidates, listed)], axis=1)
        shape = tf.stack([tf.shape(user_id, out_type=tf.int64)[0], tf.shape(self.item_factors, out_type=tf.int64)[0]])
        allowed = tf.scatter_nd(where, tf.ones_like(where[:, 0], tf.int32), shape) > 0  # duplicates add up
        return self._recommend(user_id, k, allowed)

    @tf.function(input_signature=[ITEM_ID, K], autograph=False)
    def similar_items(self, item_id, k):
        """The k items most similar to each raw item id (cosine of the item factors, the item itself included)."""
        items = tf.ensure_shape(self.item_table.lookup(item_id), item_id.shape)
        known = (items >= 0) & tf.gather(self.item_known, tf.maximum(items, 0))
        found, values = self._similar(self.item_factors, items, known, self.popularity, k, "items")
        return {"item_ids": tf.gather(self.item_vocabulary, found), "scores": values, "known_item": known}

    @tf.function(input_signature=[USER_ID, K], autograph=False)
    def similar_users(self, user_id, k):
        """The k users most similar to each raw user id (cosine of the user factors, the user itself included)."""
        users, known = self._lookup_users(user_id)
        # Training ratings per user: top_k lists equal counts by index, as the items' popularity ranking does.
        activity = tf.cast(self.seen_indptr[1:] - self.seen_indptr[:-1], tf.float32)
        found, values = self._similar(self.user_factors, users, known, activity, k, "users")
        return {"user_ids": tf.gather(self.user_vocabulary, found), "scores": values, "known_user": known}

    @tf.function(input_signature=[USER_ID, ITEM_ID], autograph=False)
    def score(self, user_id, item_id):
        """The model's prediction per (user_id, item_id) pair; 0.0 where either is unknown."""
        same_length = tf.debugging.assert_equal(
            tf.size(user_id), tf.size(item_id), message="`user_id` and `item_id` should have the same length"
        )
        with tf.control_dependencies([same_length]):
            user_id = tf.identity(user_id)
        users, known_user = self._lookup_users(user_id)
        items = tf.ensure_shape(self.item_table.lookup(item_id), item_id.shape)
        known_item = (items >= 0) & tf.gather(self.item_known, tf.maximum(items, 0))
        predicted = scoring.pair_scores(
            self.user_factors,
            self.item_factors,
            self.user_bias,
            self.item_bias,
            self.global_mean,
            tf.maximum(users, 0),
            tf.maximum(items, 0),
        )
        predicted = tf.clip_by_value(predicted, self.rating_range[0], self.rating_range[1])
        scores = tf.where(known_user & known_item, predicted, tf.zeros_like(predicted))
        return {"scores": scores, "known_user": known_user, "known_item": known_item}

    @tf.function(input_signature=[FOLD_IN_ITEM_IDS, FOLD_IN_RATINGS], autograph=False)
    def fold_in_recommend(self, item_ids, ratings):
        """Top-K for new users from their rated items (padded with ""), by the closed-form fold-in.

        Items not in the vocabulary are ignored and ``num_known_items`` counts the others; a row with none gets
        the popular items with scores 0.0. A repeated item counts once per occurrence.
        """
        same_shape = tf.debugging.assert_equal(
            tf.shape(ratings), tf.shape(item_ids), message="`ratings` should have the shape of `item_ids`"
        )
        with tf.control_dependencies([same_shape]):
            items = tf.ensure_shape(self.item_table.lookup(item_ids), item_ids.shape)  # [b, L], -1: padding, unknown
        rated_ratings = tf.boolean_mask(ratings, items >= 0)
        checks = [
            tf.debugging.assert_equal(
                tf.reduce_all(tf.math.is_finite(rated_ratings)), True, message="`ratings` should be finite"
            ),
            tf.debugging.assert_equal(
                tf.reduce_all(rated_ratings >= self._mode.lowest_rating),
                True,
                message=f"`ratings`: a rating {self._mode.invalid_reason}",
            ),
        ]
        with tf.control_dependencies(checks):
            ratings = tf.identity(ratings)
        solution = fold_in_solve(self._mode, self.item_factors, items, ratings, self.regularization, self)
        factors, user_bias = split_solution(self._mode, solution, self.item_factors.shape[1])
        rated = tf.where(items >= 0)
        num_known = tf.reduce_sum(tf.cast(items >= 0, tf.int32), axis=1)
        scores = self._scores(factors, user_bias)
        out = self._top(scores, rated[:, 0], tf.gather_nd(items, rated), num_known > 0, self.top_k)
        return {"item_ids": out["item_ids"], "scores": out["scores"], "num_known_items": num_known}

    def _lookup_users(self, user_id):
        """(indices [b] with -1 for ids not in the vocabulary, known [b]: in the vocabulary with training items)."""
        users = tf.ensure_shape(self.user_table.lookup(user_id), user_id.shape)
        safe = tf.maximum(users, 0)
        has_items = tf.gather(self.seen_indptr, safe + 1) > tf.gather(self.seen_indptr, safe)
        return users, (users >= 0) & has_items

    def _recommend(self, user_id, k, allowed=None):
        """Top-k of raw user ids without their seen items; ``allowed`` bool [b, n]: the only candidates (or None)."""
        k = _check_k(k, self.item_factors, "items")
        users, known = self._lookup_users(user_id)
        safe = tf.where(known, users, tf.zeros_like(users))
        scores = self._scores(tf.gather(self.user_factors, safe), tf.gather(self.user_bias, safe))
        starts = tf.where(known, tf.gather(self.seen_indptr, safe), 0)
        limits = tf.where(known, tf.gather(self.seen_indptr, safe + 1), 0)
        spans = tf.ragged.range(starts, limits)
        seen = tf.gather(self.seen_items, spans.flat_values)
        return self._top(scores, spans.value_rowids(), seen, known, k, allowed)

    def _similar(self, factors, queries, known, fallback, k, what: str):
        """Top-k cosine similarity of rows ``queries`` of ``factors`` against every row (``WALSModel``'s
        ``similar_items``); the ``fallback`` ranking [rows] with scores 0.0 for the queries that are not ``known``.

        Returns:
            (row indices int32 [b, k], scores float32 [b, k]).
        """
        k = _check_k(k, factors, what)
        unit = scoring.unit_rows(factors)
        safe = tf.where(known, queries, tf.zeros_like(queries))
        cosine = tf.matmul(tf.gather(unit, safe), unit, transpose_b=True)
        ranked = tf.where(known[:, None], cosine, fallback[None, :])
        nothing = tf.zeros([0], tf.int64)
        found, values = scoring.top_k_unseen(ranked, nothing, nothing, k)
        return found, tf.where(known[:, None], values, tf.zeros_like(values))

    def _scores(self, factors, user_bias):
        """Ranking scores [b, n], the unclipped prediction (``scoring.item_scores``)."""
        return scoring.item_scores(factors, user_bias, self.item_factors, self.item_bias, self.global_mean)

    def _top(self, scores, seen_rows, seen_cols, known, k, allowed=None):
        """Top-k of ``scores`` [b, n] without the seen pairs (rows with none are unknown) for known rows; the
        popularity ranking (scores 0.0) for the others. ``allowed`` bool [b, n], if given, is the candidates."""
        ranked = tf.where(known[:, None], scores, self.popularity[None, :])
        if allowed is not None:
            ranked = tf.where(allowed, ranked, tf.constant(-np.inf, ranked.dtype))
        indices, values = scoring.top_k_unseen(ranked, seen_rows, seen_cols, k)
        empty = tf.math.is_inf(values) & (values < 0)
        item_ids = tf.where(empty, "", tf.gather(self.item_vocabulary, indices))
        values = tf.where(known[:, None] | empty, values, tf.zeros_like(values))
        return {"item_ids": item_ids, "scores": values, "known_user": known}

    def signatures(self) -> dict:
        return {
            "serving_default": self.serve,
            "recommend": self.recommend,
            "score": self.score,
            "fold_in_recommend": self.fold_in_recommend,
            "recommend_from": self.recommend_from,
            "similar_items": self.similar_items,
            "similar_users": self.similar_users,
        }


def export_saved_model(model, path: str, top_k: int = 10) -> ServingModule:
    """Writes the serving SavedModel of a fitted ``WALSModel`` to ``path`` (local, ``gs://``, any gfile path).

    Everything is read from the model: its factors and biases, its raw-id vocabularies, its seen items (excluded
    from recommendations; their counts are the popularity ranking and, positive ones, the fold-in item weights).
    ``fit(ratings)`` sets the vocabularies and seen items, partial fits keep them; a model trained otherwise gets
    them with ``set_vocabularies`` and ``set_seen_items``. ``model.export(path)`` calls this.

    Args:
        model: the fitted ``WALSModel`` (any mode).
        path: the SavedModel directory; must not exist yet or be empty.
        top_k: K of ``serving_default`` and ``fold_in_recommend``, 1 <= K <= num_items.

    Returns:
        The saved ``ServingModule`` (callable in process like the loaded SavedModel).

    A failed write removes what it wrote (``path`` is as before, and the same call can be retried).

    Raises:
        ValueError: the model has no vocabularies or seen items, a bad ``top_k``, or a ``path`` that is a file or
            a non-empty directory.
    """
    validate.integer("top_k", top_k, 1, model.num_items)
    users, items = model._require_vocabularies("export_saved_model")
    seen = model._require_seen("export_saved_model")
    existed = tf.io.gfile.exists(path)
    if existed and not tf.io.gfile.isdir(path):
        raise ValueError(f"`path` should be a new or empty directory. Received: path={path!r} (a file)")
    if existed and tf.io.gfile.listdir(path):
        raise ValueError(f"`path` should be a new or empty directory. Received: path={path!r} (not empty)")
    cfg = model.config
    module = ServingModule(
        user_factors=tf.convert_to_tensor(model.user_factors),
        item_factors=tf.convert_to_tensor(model.item_factors),
        user_ids=users.ids_array,
        item_ids=items.ids_array,
        seen_indptr=seen.indptr,
        seen_items=seen.items.astype(np.int32),
        item_counts=seen.item_counts(),
        item_weights=model.mode.fold_in_item_weights(seen.item_counts(positive_only=True)),
        regularization=cfg.regularization,
        unobs_weight=cfg.unobs_weight,
        top_k=int(top_k),
        config=cfg,
        user_bias=tf.convert_to_tensor(model.user_bias),
        item_bias=tf.convert_to_tensor(model.item_bias),
        global_mean=tf.convert_to_tensor(model.global_mean),
        rating_range=tf.convert_to_tensor(model.rating_range),
    )
    try:
        tf.saved_model.save(module, path, signatures=module.signatures())
    except BaseException:  # nothing half-written: what this call wrote goes, so that the same call can be retried
        _remove_written(path, keep=existed)
        raise
    return module


def _remove_written(path: str, keep: bool) -> None:
    """Removes what a failed export wrote into ``path`` (the directory itself unless it existed before)."""
    try:
        if not tf.io.gfile.exists(path):
            return
        if not keep:
            tf.io.gfile.rmtree(path)
            return
        for name in tf.io.gfile.listdir(path):
            entry = tf.io.gfile.join(path, name)
            (tf.io.gfile.rmtree if tf.io.gfile.isdir(entry) else tf.io.gfile.remove)(entry)
    except tf.errors.OpError as err:
        logger.error("the failed export left files in %s that could not be removed: %s", path, err)


def _check_k(k, factors, what: str) -> tf.Tensor:
    """``k`` after the graph assertions 1 <= k <= rows of ``factors`` (an InvalidArgumentError naming ``k``
    otherwise). Ops that use the returned tensor run after the assertions, so a bad k never reaches ``top_k``."""
    size = tf.shape(factors, out_type=tf.int32)[0]
    checks = [
        tf.debugging.assert_greater_equal(k, 1, message="`k` should be >= 1"),
        tf.debugging.assert_less_equal(k, size, message=f"`k` should be <= the number of {what}"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(k)


def _constant_variable(value, dtype, name: str) -> tf.Variable:
    return tf.Variable(tf.convert_to_tensor(value, dtype), trainable=False, name=name)


def _table(vocabulary: tf.Variable, size: int) -> tf.lookup.experimental.MutableHashTable:
    """raw id (string) -> int64 index, -1 for unknown ids."""
    table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=-1)
    table.insert(vocabulary, tf.range(size, dtype=tf.int64))
    return table
