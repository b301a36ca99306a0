"""The recommender API of ``WALSModel`` (implicit's calls): top-k items, similar items and users, raw ids, seen items.

``Recommender`` is a mixin of ``model.WALSModel``: it reads the model's factor and bias variables (``user_factors``,
``item_factors``, ``user_bias``, ``item_bias``, ``global_mean``), its sizes and the two pieces of state it owns,
the seen items (excluded from recommendations) and the raw-id vocabularies. The scores and the top k without seen
items come from ``wals2.scoring``. A ``.keras`` file keeps both pieces of state as assets (``seen.npz``,
``vocabularies.npz``; ``save_assets`` / ``load_assets``, which Keras calls on save and load).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from wals2 import scoring, threads, validate
from wals2.data import Vocabulary

#: The bound of ``recommend(recalculate_user=True)``'s user indices, which only shape the result.
_ANY_INDEX = np.iinfo(np.int64).max

SEEN_FILE = "seen.npz"
VOCABULARIES_FILE = "vocabularies.npz"


class Recommender:
    """The recommender calls of a factor model; the model provides the variables named in the module docstring and
    ``_recalculated(axis, indices, matrix, names)``, the (factors [b, k], biases [b]) of rows solved from their
    entries against the fixed other side, not stored (``recalculate_user`` / ``recalculate_item``)."""

    _seen: SeenItems | None
    _vocabularies: tuple[Vocabulary, Vocabulary] | None

    def set_seen_items(self, users, items, values=None) -> None:
        """The (user, item) index pairs that ``recommend(exclude_seen=True)`` leaves out (the training entries).

        ``set_training_data`` sets them from the training matrix, ``partial_fit_users`` / ``partial_fit_items``
        replace the rows they fit, and a ``.keras`` file keeps them; a model trained on several workers gets them
        here.

        Args:
            users, items: int [nnz], the index pairs.
            values: float [nnz], their ratings (default: all positive). The tf1 mode's item weights C_j count the
                positive ones (n_j) when ``partial_fit_*`` solves rows against them.
        """
        self._seen = SeenItems.of(users, items, values, (self.num_users, self.num_items))

    def save_assets(self, dir_path: str) -> None:
        """Writes the seen items and the vocabularies (those that are set) to ``dir_path`` (Keras' ``save``)."""
        if self._seen is not None:
            seen = self._seen
            with open(os.path.join(dir_path, SEEN_FILE), "wb") as f:
                np.savez(f, indptr=seen.indptr, items=seen.items, positive=seen.positive, shape=np.array(seen.shape))
        if self._vocabularies is not None:
            ids = {name: _savable(v.ids_array, name) for name, v in zip(("user_ids", "item_ids"), self._vocabularies)}
            with open(os.path.join(dir_path, VOCABULARIES_FILE), "wb") as f:
                np.savez(f, **ids)

    def load_assets(self, dir_path: str) -> None:
        """Reads what ``save_assets`` wrote (Keras' ``load_model``); a file without them leaves them unset."""
        path = os.path.join(dir_path, SEEN_FILE)
        if os.path.exists(path):
            with np.load(path, allow_pickle=False) as f:
                shape = tuple(int(x) for x in f["shape"])
                if shape != (self.num_users, self.num_items):
                    raise ValueError(
                        f"{path}: seen items of a {shape} matrix for a model of {self.num_users} users "
                        f"x {self.num_items} items"
                    )
                indptr, items, positive = f["indptr"], f["items"], f["positive"]
                if indptr.shape != (shape[0] + 1,) or indptr[-1] != items.size or np.any(np.diff(indptr) < 0):
                    raise ValueError(f"{path}: the row pointers do not describe {items.size} seen items")
                users = np.repeat(np.arange(shape[0]), np.diff(indptr))
                self._seen = SeenItems.of(users, items, positive, shape)
        path = os.path.join(dir_path, VOCABULARIES_FILE)
        if os.path.exists(path):
            with np.load(path, allow_pickle=False) as f:
                self.set_vocabularies(f["user_ids"], f["item_ids"])

    def item_counts(self, positive_only: bool = False) -> np.ndarray:
        """int64 [num_items]: each item's seen (training) entries, or (n_j) those with a positive rating.

        Raises:
            ValueError: the model has no seen items (``set_seen_items``).
        """
        return self._require_seen("item_counts").item_counts(positive_only)

    def _require_seen(self, what: str) -> SeenItems:
        if self._seen is None:
            raise ValueError(
                f"{what} needs the training items: call fit(train), set_training_data(train) or "
                "set_seen_items(users, items) first."
            )
        return self._seen

    def set_vocabularies(self, user_ids, item_ids) -> None:
        """The raw id of every user and item index, for ``recommend_ids``, ``similar_items_ids``, ``similar_users_ids``.

        ``set_training_data`` (and so ``fit``) sets them from a ``Ratings``' ``user_ids`` / ``item_ids``; a model
        trained on other inputs gets them here. A ``.keras`` file keeps them (ids that are numbers or strings).

        Args:
            user_ids: [num_users] distinct raw ids, the id of each user index (any order).
            item_ids: [num_items] distinct raw ids, the id of each item index.
        """
        self._vocabularies = (
            Vocabulary(user_ids, self.num_users, "user_ids"),
            Vocabulary(item_ids, self.num_items, "item_ids"),
        )

    def recommend(
        self,
        user_indices,
        user_items=None,
        k: int | None = None,
        exclude_seen: bool | None = None,
        filter_items=None,
        recalculate_user: bool = False,
        items=None,
        *,
        batch_size: int = 1024,
        N: int | None = None,
        filter_already_liked_items: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for each user by score (the unclipped prediction mu + b_i + c_j + u_i.v_j), best first.

        The positional arguments are implicit's ``recommend(userid, user_items, N=10,
        filter_already_liked_items=True, filter_items=None, recalculate_user=False, items=None)``; ``items`` and
        ``filter_items`` may be combined.

        Args:
            user_indices: an int user index, or int user indices [b].
            user_items: the users' items, [b, num_items] (row r for ``user_indices[r]``; scipy sparse, its stored
                entries), as implicit's ``user_items``: excluded instead of the model's seen items, and the ratings
                ``recalculate_user`` solves the users from.
            k: items per user, 1 <= k <= num_items (default 10).
            exclude_seen: drop the user's training items (or those of ``user_items``; default True). A user with
                fewer than k remaining candidates gets item -1 and score -inf in the remaining slots.
            filter_items: item indices never recommended.
            recalculate_user: score with factors solved from the rows of ``user_items`` (``foldin.fold_in``: the
                exact row update against the fixed item factors, nothing stored) instead of the model's; the
                users need not be in the model, ``user_indices`` then only shape the result.
            items: item indices, the only candidates ranked (default: every item).
            batch_size: users scored at once (memory: ``threads.PARALLEL_CHUNKS`` x batch_size x candidates floats).
            N: implicit's name for ``k``.
            filter_already_liked_items: implicit's name for ``exclude_seen``; giving both with different values
                raises.

        Returns:
            (item indices int64 [b, k], scores float32 [b, k]); [k] and [k] for a scalar ``user_indices``.
        """
        recalculate_user = bool(recalculate_user)
        users = _indices(user_indices, _ANY_INDEX if recalculate_user else self.num_users, "user_indices")
        k = _k(k, N, self.num_items)
        _check_batch_size(batch_size)
        if recalculate_user and user_items is None:
            raise ValueError(
                "`recalculate_user=True` solves the users from their rows of `user_items` [b, num_items]. "
                "Received: user_items=None"
            )
        if exclude_seen is None:
            exclude_seen = True if filter_already_liked_items is None else filter_already_liked_items
        elif filter_already_liked_items is not None and bool(filter_already_liked_items) != bool(exclude_seen):
            raise ValueError(
                "`exclude_seen` and `filter_already_liked_items` are one option; pass one of them. Received: "
                f"exclude_seen={exclude_seen!r}, filter_already_liked_items={filter_already_liked_items!r}"
            )
        excluded, lookup = None, None
        if exclude_seen and user_items is not None:
            excluded, lookup = _rows_csr(user_items, (users.size, self.num_items)), np.arange(users.size)
        elif exclude_seen:
            excluded = self._require_seen("recommend(exclude_seen=True)").csr
        candidates = _candidates(items, filter_items, self.num_items)
        v, bv = tf.convert_to_tensor(self.item_factors), tf.convert_to_tensor(self.item_bias)
        if candidates is not None:
            v, bv = tf.gather(v, candidates), tf.gather(bv, candidates)
        u, bu = tf.convert_to_tensor(self.user_factors), tf.convert_to_tensor(self.user_bias)
        if recalculate_user:  # the solved rows replace the model's: query r scores row r
            u, bu = self._recalculated(0, users, user_items, ("user_indices", "user_items"))
            users = np.arange(users.size)

        def scores(batch):
            return scoring.item_scores(tf.gather(u, batch), tf.gather(bu, batch), v, bv, self.global_mean)

        return _squeeze(user_indices, _top_k(scores, users, k, candidates, excluded, batch_size, lookup))

    def recommend_all(self, k: int | None = None, batch_size: int = 1024, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """``recommend`` for every user index 0..num_users-1, in batches of ``batch_size`` users.

        Args:
            k: items per user (default 10; or ``N``).
            batch_size: users scored at once.
            **kwargs: ``recommend``'s ``N``, ``exclude_seen`` / ``filter_already_liked_items``, ``filter_items``,
                ``items``.

        Returns:
            (item indices int64 [num_users, k], scores float32 [num_users, k]); row i is user i.
        """
        return self.recommend(np.arange(self.num_users), k=k, batch_size=batch_size, **kwargs)

    def similar_items(
        self,
        item_indices,
        k: int | None = None,
        recalculate_item: bool = False,
        item_users=None,
        filter_items=None,
        items=None,
        *,
        batch_size: int = 1024,
        N: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k items most similar to each item: cosine similarity of the item factors, best first.

        As implicit (its positional arguments: ``similar_items(itemid, N=10, recalculate_item=False,
        item_users=None, filter_items=None, items=None)``): the factors only (no biases), and the query item itself
        is a candidate, first with score 1 (up to rounding) unless ``filter_items`` or ``items`` leave it out. A zero
        factor vector has similarity 0 with every item.

        Args:
            item_indices: an int item index, or int item indices [b].
            k: items per query, 1 <= k <= num_items (default 10); slots beyond the candidates get -1 and score
                -inf.
            recalculate_item: query with factors solved from the rows of ``item_users`` (the exact item row
                update against the fixed user factors, nothing stored) instead of the model's.
            item_users: the items' ratings by user, [b, num_users] (row r for ``item_indices[r]``; scipy sparse),
                for ``recalculate_item``.
            filter_items: item indices never returned.
            items: item indices, the only candidates (default: every item).
            batch_size: queries scored at once (memory: ``threads.PARALLEL_CHUNKS`` x batch_size x candidates floats).
            N: implicit's name for ``k``.

        Returns:
            (item indices int64 [b, k], cosine similarities float32 [b, k]); [k] and [k] for a scalar query.
        """
        k = _k(k, N, self.num_items)
        queries = None
        if recalculate_item:
            if item_users is None:
                raise ValueError(
                    "`recalculate_item=True` solves the items from their rows of `item_users` [b, num_users]. "
                    "Received: item_users=None"
                )
            indices = _indices(item_indices, self.num_items, "item_indices")
            queries = self._recalculated(1, indices, item_users, ("item_indices", "item_users"))[0]
        found = _similar(self.item_factors, item_indices, k, filter_items, items, batch_size, "item_indices", queries)
        return _squeeze(item_indices, found)

    def similar_users(
        self, user_indices, k: int | None = None, filter_users=None, users=None, batch_size: int = 1024, *, N=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k users most similar to each user: cosine similarity of the user factors (``similar_items``'s rules).

        Args:
            user_indices: an int user index, or int user indices [b].
            k: users per query, 1 <= k <= num_users (default 10).
            filter_users: user indices never returned.
            users: user indices, the only candidates (default: every user).
            batch_size: queries scored at once.
            N: implicit's name for ``k``.

        Returns:
            (user indices int64 [b, k], cosine similarities float32 [b, k]); [k] and [k] for a scalar query.
        """
        k = _k(k, N, self.num_users)
        found = _similar(self.user_factors, user_indices, k, filter_users, users, batch_size, "user_indices")
        return _squeeze(user_indices, found)

    # ---------------------------------------------------------------------------------------------- raw ids
    def recommend_ids(self, user_ids, k: int | None = None, filter_items=None, items=None, **kwargs):
        """``recommend`` by raw ids: user ids in, item ids out (``set_vocabularies``; ``fit(Ratings)`` sets them).

        Args:
            user_ids: raw user ids [b].
            k: items per user.
            filter_items, items: raw item ids (see ``recommend``).
            **kwargs: ``recommend``'s ``N``, ``exclude_seen`` / ``filter_already_liked_items`` and ``batch_size``.

        Returns:
            (raw item ids, an object array [b, k] with None in slots without a candidate, scores float32 [b, k]).

        Raises:
            KeyError: an id not in the vocabulary (the first one is named).
        """
        users_vocab, items_vocab = self._require_vocabularies("recommend_ids")
        found, scores = self.recommend(
            users_vocab.index(user_ids),
            k=k,
            filter_items=items_vocab.index_or_none(filter_items),
            items=items_vocab.index_or_none(items),
            **kwargs,
        )
        return _squeeze(user_ids, (items_vocab.ids(found), scores))

    def similar_items_ids(
        self, item_ids, k: int | None = None, filter_items=None, items=None, batch_size: int = 1024, *, N=None
    ):
        """``similar_items`` by raw item ids (ids in and out; filters and candidates as raw ids).

        Returns:
            (raw item ids, an object array [b, k] with None in slots without a candidate, similarities [b, k]).

        Raises:
            KeyError: an id not in the vocabulary (the first one is named).
        """
        _, vocab = self._require_vocabularies("similar_items_ids")
        found, scores = self.similar_items(
            vocab.index(item_ids),
            k,
            filter_items=vocab.index_or_none(filter_items),
            items=vocab.index_or_none(items),
            batch_size=batch_size,
            N=N,
        )
        return _squeeze(item_ids, (vocab.ids(found), scores))

    def similar_users_ids(
        self, user_ids, k: int | None = None, filter_users=None, users=None, batch_size: int = 1024, *, N=None
    ):
        """``similar_users`` by raw user ids (ids in and out; filters and candidates as raw ids).

        Raises:
            KeyError: an id not in the vocabulary (the first one is named).
        """
        vocab, _ = self._require_vocabularies("similar_users_ids")
        found, scores = self.similar_users(
            vocab.index(user_ids),
            k,
            filter_users=vocab.index_or_none(filter_users),
            users=vocab.index_or_none(users),
            batch_size=batch_size,
            N=N,
        )
        return _squeeze(user_ids, (vocab.ids(found), scores))

    def _require_vocabularies(self, what: str) -> tuple[Vocabulary, Vocabulary]:
        if self._vocabularies is None:
            raise ValueError(
                f"{what} needs the raw ids: call fit(ratings) with a wals2.Ratings or set_vocabularies(user_ids, "
                "item_ids) first."
            )
        return self._vocabularies


class SeenItems:
    """Each user's training items (CSR, grouped by user) and whether each one's rating is positive.

    Attributes:
        shape: (num_users, num_items).
        indptr: int64 [num_users + 1], row pointers.
        items: int64 [nnz], the items, grouped by user.
        positive: bool [nnz], rating > 0 (what the tf1 mode's n_j counts).
    """

    def __init__(self, indptr: np.ndarray, items: np.ndarray, positive: np.ndarray, shape: tuple[int, int]):
        self.indptr, self.items, self.positive, self.shape = indptr, items, positive, (int(shape[0]), int(shape[1]))

    @classmethod
    def of(cls, users, items, values, shape: tuple[int, int]) -> SeenItems:
        """From (user, item) index pairs and their ratings (None: all positive), checked against ``shape``."""
        users = np.asarray(users, np.int64)
        items = np.asarray(items, np.int64)
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(f"`users` and `items` should be 1-D of one length. Received: {users.shape}, {items.shape}")
        positive = np.ones(users.shape, bool) if values is None else np.asarray(values) > 0
        if positive.shape != users.shape:
            raise ValueError(f"`values` should have the length of `users`. Received: {positive.shape}, {users.shape}")
        for name, index, size in (("users", users, shape[0]), ("items", items, shape[1])):
            if index.size and (index.min() < 0 or index.max() >= size):
                raise ValueError(f"`{name}` should be in [0, {size}). Received: min {index.min()}, max {index.max()}")
        order = np.argsort(users, kind="stable")  # near-linear on the sorted runs that ``replaced`` builds
        indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=shape[0]))]).astype(np.int64)
        return cls(indptr, items[order], positive[order], shape)

    @property
    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, items), the excluded columns of each user for ``_top_k``."""
        return self.indptr, self.items

    def users(self) -> np.ndarray:
        """int64 [nnz], the user of each entry."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.indptr))

    def item_counts(self, positive_only: bool = False) -> np.ndarray:
        """int64 [num_items]: the entries of each item, or (n_j) those with a positive rating."""
        items = self.items[self.positive] if positive_only else self.items
        return np.bincount(items, minlength=self.shape[1]).astype(np.int64)

    def replaced(self, axis: int, indices: np.ndarray, users, items, values, shape: tuple[int, int]) -> SeenItems:
        """These entries with the users (``axis`` 0) or items (1) ``indices`` given the new entries (users, items,
        values) instead of their old ones, in a matrix of ``shape`` (as large or larger)."""
        old_users = self.users()
        dropped = np.zeros(shape[axis], bool)
        dropped[indices] = True
        keep = ~dropped[old_users if axis == 0 else self.items]
        return SeenItems.of(
            np.concatenate([old_users[keep], users]),
            np.concatenate([self.items[keep], items]),
            np.concatenate([self.positive[keep], np.asarray(values) > 0]),
            shape,
        )


def _savable(ids: np.ndarray, name: str) -> np.ndarray:
    """``ids`` as an array numpy saves without pickling (numbers or strings)."""
    if ids.dtype.kind == "O":
        ids = np.asarray(ids.tolist())
    if ids.dtype.kind not in "biufU":
        raise ValueError(f"`{name}` should be numbers or strings to be saved. Received dtype {ids.dtype}")
    return ids


def _indices(values, size: int, name: str) -> np.ndarray:
    """A validated 1-D int64 index vector in [0, size)."""
    values = np.atleast_1d(np.asarray(values))
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise ValueError(f"`{name}` should be a 1-D array of ints. Received dtype {values.dtype}, shape {values.shape}")
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= size):
        raise ValueError(f"`{name}` should be in [0, {size}). Received: min {values.min()}, max {values.max()}")
    return values


def _k(k, n, size: int) -> int:
    """The number of results, given as ``k`` or as implicit's ``N`` (both must agree), default 10, checked in
    [1, ``size``] under the name it was given by."""
    if k is not None and n is not None and k != n:
        raise ValueError(f"`k` and `N` are one option; pass one of them. Received: k={k!r}, N={n!r}")
    name, value = ("N", n) if k is None and n is not None else ("k", 10 if k is None else k)
    return validate.integer(name, value, 1, size)


def _squeeze(query, result: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``result`` [b, k] as [k] where ``query`` is a scalar id (implicit's shapes), unchanged otherwise."""
    return tuple(part[0] for part in result) if np.ndim(query) == 0 else result


def _rows_csr(user_items, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, cols) of the stored entries of ``user_items`` (scipy sparse, ``shape``), row r for query r."""
    if not sp.issparse(user_items):
        raise TypeError(f"`user_items` should be a scipy sparse matrix. Received: {type(user_items).__name__}")
    if user_items.ndim == 1:  # one user's row, as ``csr_array[u]`` gives it
        user_items = user_items.reshape(1, -1)
    if tuple(user_items.shape) != shape:
        raise ValueError(f"`user_items` should have shape {shape} (one row per user). Received: {user_items.shape}")
    csr = sp.csr_array(user_items)
    return csr.indptr.astype(np.int64), csr.indices.astype(np.int64)


def _check_batch_size(batch_size) -> None:
    validate.integer("batch_size", batch_size)


def _candidates(include, exclude, size: int, names: tuple[str, str] = ("items", "filter_items")) -> np.ndarray | None:
    """The sorted candidate indices (``include``, default all, minus ``exclude``), or None for all of them."""
    if include is None and exclude is None:
        return None
    candidates = np.arange(size) if include is None else np.unique(_indices(include, size, names[0]))
    if include is not None and not candidates.size:
        raise ValueError(f"`{names[0]}` should hold at least one index. Received an empty list.")
    if exclude is not None:
        candidates = np.setdiff1d(candidates, _indices(exclude, size, names[1]), assume_unique=True)
    return candidates.astype(np.int64)


def _similar(factors, queries, k, exclude, include, batch_size, name, query_factors=None):
    """Top-k cosine similarity of rows ``queries`` of ``factors`` (or of ``query_factors`` [b, k], row r for
    query r) against the candidate rows; ``k`` is checked by the caller."""
    size = int(factors.shape[0])
    queries = _indices(queries, size, name)
    _check_batch_size(batch_size)
    what = name.removesuffix("_indices")
    candidates = _candidates(include, exclude, size, (f"{what}s", f"filter_{what}s"))
    unit = scoring.unit_rows(tf.convert_to_tensor(factors))
    table = unit if candidates is None else tf.gather(unit, candidates)
    if query_factors is None:
        query_unit = unit
    else:
        query_unit, queries = scoring.unit_rows(tf.convert_to_tensor(query_factors)), np.arange(queries.size)

    def scores(batch):
        return tf.matmul(tf.gather(query_unit, batch), table, transpose_b=True)

    return _top_k(scores, queries, k, candidates, None, batch_size)


def _top_k(scores, queries, k, candidates, excluded, batch_size, lookup=None):
    """The k best candidates of each query by ``scores(batch)`` [b, candidates], batched; one ``top_k_unseen``.

    ``threads.PARALLEL_CHUNKS`` batches are scored at a time (each in its own thread), as the sweep runs its
    chunks: with TensorFlow's intra-op threads at one share of the cores per chunk (``wals2.threads``) one batch
    alone would use one share.

    Args:
        scores: batch of query indices -> float32 scores [b, c] over the candidates.
        queries: int64 query indices [b].
        k: slots per query; slots beyond a query's remaining candidates get index -1 and score -inf.
        candidates: sorted int64 column indices of the c candidates, or None for all columns.
        excluded: (indptr, cols) CSR of the excluded column indices, row ``lookup[q]`` for query q, or None.
        batch_size: queries per batch.
        lookup: int64 [b], the row of ``excluded`` of each query (default: the query index itself).
    """
    lookup = queries if lookup is None else lookup

    def best(start: int) -> tuple[np.ndarray, np.ndarray]:
        ranked = scores(queries[start : start + batch_size])
        batch = lookup[start : start + batch_size]
        rows = cols = np.zeros(0, np.int64)
        if excluded is not None:
            indptr, seen = excluded
            lengths = indptr[batch + 1] - indptr[batch]
            rows = np.repeat(np.arange(batch.size), lengths)
            offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            cols = seen[np.repeat(indptr[batch], lengths) + offsets]
            if candidates is not None:  # columns of the candidates; drop the others
                where = np.minimum(np.searchsorted(candidates, cols), max(candidates.size - 1, 0))
                keep = candidates[where] == cols if candidates.size else np.zeros(cols.size, bool)
                rows, cols = rows[keep], where[keep]
        width = int(ranked.shape[1])
        top, values = scoring.top_k_unseen(ranked, rows, cols, min(k, width))
        found, values = top.numpy().astype(np.int64), values.numpy()
        if candidates is not None:
            found = candidates[found] if width else found
        found[np.isneginf(values)] = -1
        if width < k:
            found = np.pad(found, ((0, 0), (0, k - width)), constant_values=-1)
            values = np.pad(values, ((0, 0), (0, k - width)), constant_values=-np.inf)
        return found, values.astype(np.float32)

    starts = range(0, queries.size, batch_size)
    if not starts:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    if len(starts) == 1:
        results = [best(0)]
    else:
        with ThreadPoolExecutor(min(threads.PARALLEL_CHUNKS, len(starts)), thread_name_prefix="top-k") as pool:
            results = list(pool.map(best, starts))
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])
