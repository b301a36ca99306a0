"""Ratings held by several workers: one vocabulary, the entries by block, the split, and gathering them back.

Worker p of P starts from the ``Ratings`` of its part of the input (its own vocabularies). ``distribute`` then

1. makes the vocabularies global: the sorted union of every part's raw ids (an all-gather), which is how one
   process builds them from the whole input, and re-indexes the part into them;
2. sends every entry to the owner of its row block (``engine.Blocks``), which aggregates (sums) or refuses
   duplicate (user, item) pairs the way one process does for one input;
3. splits the row block with ``data.split_masks`` (each user's entries are now on one worker; the ``random``
   split's sizes and thresholds are global), so the same seed gives the same sets on any number of workers;
4. sends the training entries to the owners of their column blocks too, and sums the weights' statistics.

``gather`` brings every worker's part back to each worker (the chief needs the whole training set for the
serving export's seen items and for the final metrics). With one worker every step is the identity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import NamedTuple

import numpy as np

from wals2 import data
from wals2.collectives import Collectives
from wals2.data import Ratings, RatingsError, Vocabulary, repeated_pairs
from wals2.engine import Blocks, Entries, Partition
from wals2.modes import Statistics, statistics

logger = logging.getLogger(__name__)

#: Entries each worker contributes to one all-gather of the exchange (bounds the collective's message size).
EXCHANGE_CHUNK = 1 << 20


class Distributed(NamedTuple):
    """One worker's share after ``distribute``.

    Attributes:
        part: this worker's part of the input with the global vocabularies (as read: ``first_line`` kept).
        train, validation, test: the parts' entries of this worker's row block, as ``Ratings`` with the global
            vocabularies (so every worker's parts together are the whole sets).
        partition: the ``engine.Partition`` of the training matrix (row block, column block, statistics).
    """

    part: Ratings
    train: Ratings
    validation: Ratings
    test: Ratings
    partition: Partition


def global_vocabulary(part: Ratings, collectives: Collectives) -> Ratings:
    """``part`` re-indexed into the sorted union of every worker's raw ids (its entries unchanged)."""
    maps = []
    for ids in (part.user_ids, part.item_ids):
        numeric = np.asarray(ids).dtype.kind in "iu"
        # One part with string ids makes every part's ids strings, as one process does for a mixed column.
        all_numeric = collectives.all_reduce_sum(np.array([not numeric], np.int64))[0] == 0
        if all_numeric:
            union = np.unique(np.concatenate(collectives.all_gather(np.asarray(ids, np.int64))))
        else:
            union = np.unique(np.concatenate(collectives.all_gather_strings(np.asarray(ids).astype(str))))
        maps.append(union)
    user_ids, item_ids = maps
    users = Vocabulary(user_ids, user_ids.size, "user_ids").index(part.user_ids)[part.users].astype(np.int32)
    items = Vocabulary(item_ids, item_ids.size, "item_ids").index(part.item_ids)[part.items].astype(np.int32)
    return dataclasses.replace(part, users=users, items=items, user_ids=user_ids, item_ids=item_ids)


def _pack(ratings: Ratings) -> np.ndarray:
    """int64 [e, 4]: user, item, the rating's float64 bits and the timestamp (0 without)."""
    stamps = np.zeros(ratings.nnz, np.int64) if ratings.timestamps is None else ratings.timestamps
    values = ratings.values.astype(np.float64).view(np.int64)
    return np.stack([ratings.users.astype(np.int64), ratings.items.astype(np.int64), values, stamps], axis=1)


def _unpack(packed: np.ndarray, like: Ratings) -> Ratings:
    return Ratings(
        packed[:, 0].astype(np.int32),
        packed[:, 1].astype(np.int32),
        packed[:, 2].copy().view(np.float64).astype(np.float32),
        like.user_ids,
        like.item_ids,
        like.source,
        None if like.timestamps is None else packed[:, 3].copy(),
    )


def exchange(ratings: Ratings, owner, collectives: Collectives) -> Ratings:
    """The entries of every worker's ``ratings`` whose ``owner(users, items)`` is this worker (all of them with
    one worker), by all-gathers of at most ``EXCHANGE_CHUNK`` entries per worker at a time."""
    if collectives.count == 1:
        return ratings
    packed = _pack(ratings)
    largest = int(collectives.sizes(len(packed)).max())
    kept = []
    for start in range(0, max(largest, 1), EXCHANGE_CHUNK):
        for part in collectives.all_gather(packed[start : start + EXCHANGE_CHUNK]):
            kept.append(part[owner(part[:, 0], part[:, 1]) == collectives.rank])
    return _unpack(np.concatenate(kept), ratings)


def gather(ratings: Ratings, collectives: Collectives) -> Ratings:
    """Every worker's ``ratings`` (same vocabularies) on every worker, in rank order."""
    return exchange(ratings, lambda users, items: np.full(users.shape, collectives.rank), collectives)


def _merge_duplicates(ratings: Ratings, aggregate: bool, collectives: Collectives) -> Ratings:
    """Entries of a row block with repeated (user, item) pairs summed (``aggregate``) or refused, after the
    exchange brought pairs from several workers' parts together (each part was checked on its own already)."""
    repeated, first = repeated_pairs(ratings.users, ratings.items, ratings.num_items)
    error = None
    if repeated and not aggregate:
        u, i = ratings.users[first[0]], ratings.items[first[0]]
        error = RatingsError(
            f"{ratings.source}: {repeated} duplicate (user, item) pair(s) across the workers' parts of the input; "
            f"one is user {ratings.user_ids[u].item()!r}, item {ratings.item_ids[i].item()!r}. Remove or aggregate "
            "duplicates first."
        )
    collectives.check(error)
    if not repeated:
        return ratings
    keys = ratings.users.astype(np.int64) * ratings.num_items + ratings.items
    unique, inverse = np.unique(keys, return_inverse=True)
    values = np.bincount(inverse.ravel(), weights=ratings.values.astype(np.float64), minlength=unique.size)
    users, items = np.divmod(unique, ratings.num_items)
    return Ratings(
        users.astype(np.int32),
        items.astype(np.int32),
        values.astype(np.float32),
        ratings.user_ids,
        ratings.item_ids,
        ratings.source,
        None,  # summed entries have no single time (web views have none)
    )


def global_statistics(train: Ratings, collectives: Collectives) -> Statistics:
    """``modes.Statistics`` of every worker's (disjoint) training entries."""
    local = statistics(train.items, train.values, train.num_items)
    counts = collectives.all_reduce_sum(local.positive_counts)
    sums = collectives.all_reduce_sum(np.array([local.total, local.count], np.float64))
    ranges = np.concatenate(collectives.all_gather(np.array([[local.low, -local.high]], np.float64)))
    return Statistics(counts, float(sums[0]), int(sums[1]), float(ranges[:, 0].min()), -float(ranges[:, 1].min()))


def distribute(
    part: Ratings,
    collectives: Collectives,
    validation_fraction: float,
    test_fraction: float,
    seed: int | None,
    strategy: str = "random",
    aggregate: bool = False,
) -> Distributed:
    """This worker's share of the split training matrix (steps 1-4 of the module docstring).

    Args:
        part: this worker's part of the input (any disjoint partition of the entries works).
        collectives: the workers' ``Collectives``.
        validation_fraction, test_fraction, seed, strategy: as in ``Ratings.train_validation_test``.
        aggregate: sum the ratings of a (user, item) pair found in several parts (web views) instead of refusing.
    """
    part = global_vocabulary(part, collectives)
    blocks = Blocks.of(part.shape, collectives.rank, collectives.count)
    by_row = exchange(part, lambda users, items: blocks.row_owner(users), collectives)
    by_row = _merge_duplicates(by_row, aggregate, collectives)
    error = None
    if strategy == "time" and by_row.timestamps is None:
        error = data.no_timestamps(part.source)
    collectives.check(error)
    validation, test = data.split_masks(
        by_row.users,
        by_row.items,
        by_row.timestamps,
        by_row.num_items,
        validation_fraction,
        test_fraction,
        seed,
        strategy,
        collectives.all_reduce_sum,
    )
    train = by_row.subset(~(validation | test))
    by_col = exchange(train, lambda users, items: blocks.col_owner(items), collectives)
    stats = global_statistics(train, collectives)
    partition = Partition(
        part.shape,
        blocks,
        Entries(train.users.astype(np.int64), train.items.astype(np.int64), train.values.astype(np.float64)),
        Entries(by_col.users.astype(np.int64), by_col.items.astype(np.int64), by_col.values.astype(np.float64)),
        stats,
    )
    return Distributed(part, train, by_row.subset(validation), by_row.subset(test), partition)


def fingerprint(ratings: Ratings, collectives: Collectives) -> str:
    """A hex digest of every worker's entries together, independent of how they are spread and ordered.

    The sum modulo 2^64 of a 64-bit key of each entry's (user, item, rating), for two seeds, all-reduced in 16-bit
    limbs (so that the sums cannot overflow).
    """
    bits = ratings.values.astype(np.float64).view(np.uint64)
    limbs = []
    for seed in (1, 2):
        with np.errstate(over="ignore"):
            keys = data.entry_keys(ratings.users, ratings.items, ratings.num_items, seed) ^ data.entry_keys(
                bits, np.zeros_like(bits), 1, seed + 2
            )
        limbs.append([((keys >> np.uint64(16 * i)) & np.uint64(0xFFFF)).astype(np.int64).sum() for i in range(4)])
    total = collectives.all_reduce_sum(np.array(limbs, np.int64))
    words = [sum(int(total[s, i]) << (16 * i) for i in range(4)) % (1 << 64) for s in range(2)]
    return hashlib.sha256(np.array(words, np.uint64).tobytes()).hexdigest()
