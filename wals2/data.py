"""Validated ratings: (user, item, rating) triples, raw id <-> index maps, and seeded splits."""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import os
import re
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import tensorflow as tf

from wals2.options import SPLITS, TAB_NAMES, normalize_delimiter  # noqa: F401  (public here too)

logger = logging.getLogger(__name__)

COLUMNS = ("user", "item", "rating")
#: Lines per chunk when reading ratings files; every full chunk logs a progress line.
PROGRESS_ROWS = 1_000_000
#: Characters of an input field quoted in a message at most (``quote``); longer fields are cut.
QUOTE_CHARS = 60
FLOAT32_MAX = float(np.finfo(np.float32).max)


class RatingsError(ValueError):
    """Input ratings that cannot be used; the message names the source and the offending line or count.

    Attributes:
        line: the line (or row, counted from the source's first line) the message is about, or None.
    """

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def quote(value) -> str:
    """``repr(value)`` for a message, cut to ``QUOTE_CHARS`` characters (with the full length) when longer."""
    text = repr(value)
    if len(text) <= QUOTE_CHARS:
        return text
    return f"{text[:QUOTE_CHARS]}... ({len(str(value)):,} characters)"


@dataclasses.dataclass(frozen=True, eq=False)
class Ratings:
    """Observed entries of a users x items matrix, with the raw ids of every index.

    Attributes:
        users: int32 [nnz], user index 0..num_users-1 of each entry.
        items: int32 [nnz], item index of each entry.
        values: float32 [nnz], the ratings.
        user_ids: [num_users] raw user id of each index, sorted ascending (index -> id).
        item_ids: [num_items] raw item id of each index, sorted ascending.
        source: where the ratings came from, for messages.
        timestamps: int64 [nnz] time of each entry (seconds), or None when the input had none.
        first_line: the line of entry 0 when entry e comes from line e + first_line of ``source`` (as read), or
            None once entries are a subset (``subset``, the splits).
        blank_lines: int64 [b], sorted numbers of the blank lines of ``source`` that were skipped (entry e then
            comes from the e-th line after ``first_line`` that is not one of them), or None when there were none.
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    source: str = "<ratings>"
    timestamps: np.ndarray | None = None
    first_line: int | None = None
    blank_lines: np.ndarray | None = None

    def line(self, entries):
        """The line(s) of ``source`` that entry (entries) ``entries`` came from (``first_line`` must be set)."""
        return line_number(self.first_line, self.blank_lines, entries)

    @property
    def num_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return self.num_users, self.num_items

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    def __len__(self) -> int:
        return self.nnz

    def __repr__(self) -> str:
        return f"Ratings({self.num_users} users x {self.num_items} items, {self.nnz} entries, from {self.source})"

    @classmethod
    def from_dataframe(
        cls,
        frame: pd.DataFrame,
        user_col: str = "user",
        item_col: str = "item",
        rating_col: str = "rating",
        source: str = "<DataFrame>",
        first_line: int = 1,
        timestamp_col: str | None = None,
        nonnegative_ids: bool = False,
        blank_lines: np.ndarray | None = None,
    ) -> Ratings:
        """Validates a frame and maps its ids to indices (sorted unique raw ids; index 0 is the smallest id).

        Duplicate (user, item) pairs are an error (the documented policy: a rating matrix has one value per cell;
        aggregate first, as ``read_web_views`` does by summing).

        Args:
            frame: one row per rating.
            user_col, item_col, rating_col: column names.
            source: named in messages.
            first_line: the line number of the first row, for messages.
            timestamp_col: optional column of integer times, kept as ``timestamps`` (for the ``time`` split).
            nonnegative_ids: ids that are numbers should be integers >= 0 (MovieLens-style files, whose ids TF1
                used as indices); names that are not numbers stay allowed.
            blank_lines: sorted numbers of the blank lines skipped before or between the rows, for messages.

        Raises:
            RatingsError: missing columns, no rows, non-numeric or non-finite ratings or timestamps, ratings that
                overflow float32, with ``nonnegative_ids`` ids that are negative or numbers but not integers, or
                duplicate (user, item) pairs; the message names ``source`` and the line.
        """
        missing = [c for c in (user_col, item_col, rating_col) if c not in frame.columns]
        if missing:
            raise RatingsError(f"{source}: missing column(s) {missing}; found columns {list(frame.columns)}")
        if len(frame) == 0:
            raise RatingsError(f"{source}: no ratings (the input has no data rows)")

        def line(row) -> int:
            return int(line_number(first_line, blank_lines, row))

        rating = _finite_column(frame, rating_col, "rating", source, line)
        big = np.flatnonzero(np.abs(rating) > FLOAT32_MAX)
        if big.size:
            number = line(big[0])
            raise RatingsError(
                f"{source}: line {number}: rating {quote(frame[rating_col].iloc[big[0]])} overflows float32 (ratings "
                f"are stored as float32, |rating| <= {FLOAT32_MAX:.4g}) ({big.size} such row(s) in all)",
                number,
            )
        for col in (user_col, item_col):
            if frame[col].isna().any():
                row = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
                raise RatingsError(f"{source}: line {line(row)}: empty {col} id", line(row))
        raw = {col: _id_array(frame[col]) for col in (user_col, item_col)}
        if nonnegative_ids:
            for col, ids in raw.items():
                _check_ids(frame[col], ids, col, source, line)
        timestamps = None
        if timestamp_col is not None:
            timestamps = _finite_column(frame, timestamp_col, "timestamp", source, line).astype(np.int64)
        user_ids, users = np.unique(raw[user_col], return_inverse=True)
        item_ids, items = np.unique(raw[item_col], return_inverse=True)
        users = users.astype(np.int32).ravel()
        items = items.astype(np.int32).ravel()
        repeated, first = repeated_pairs(users, items, len(item_ids))
        if repeated:
            lines = line_number(first_line, blank_lines, first)
            u, i = users[first[0]], items[first[0]]
            raise RatingsError(
                f"{source}: {repeated} duplicate (user, item) pair(s); the first is user {quote(user_ids[u].item())}, "
                f"item {quote(item_ids[i].item())} on lines {lines.tolist()}. Remove or aggregate duplicates first.",
                int(lines[-1]),
            )
        blank = None if blank_lines is None or not len(blank_lines) else np.asarray(blank_lines, np.int64)
        return cls(users, items, rating.astype(np.float32), user_ids, item_ids, source, timestamps, first_line, blank)

    def to_frame(self) -> pd.DataFrame:
        """Raw ids and ratings as a DataFrame with columns user, item, rating."""
        return pd.DataFrame(
            {"user": self.user_ids[self.users], "item": self.item_ids[self.items], "rating": self.values}
        )

    def subset(self, entries: np.ndarray) -> Ratings:
        """The entries at ``entries`` (indices or a mask), keeping this object's id maps and shape."""
        return dataclasses.replace(
            self,
            users=self.users[entries],
            items=self.items[entries],
            values=self.values[entries],
            timestamps=None if self.timestamps is None else self.timestamps[entries],
            first_line=None,
            blank_lines=None,
        )

    def split(self, test_fraction: float = 0.1, seed: int | None = 0) -> tuple[Ratings, Ratings]:
        """A uniform random split over entries, TF1-style: the test set has floor(nnz * test_fraction) entries.

        Both parts keep the full id maps and shape, so a user or item can end up with no training entries.
        Equal to ``train_validation_test(0.0, test_fraction, seed)`` without its empty validation part.
        """
        train, _, test = self.train_validation_test(0.0, test_fraction, seed)
        return train, test

    def train_validation_test(
        self, validation_fraction: float = 0.1, test_fraction: float = 0.1, seed: int | None = 0, strategy="random"
    ) -> tuple[Ratings, Ratings, Ratings]:
        """Seeded train / validation / test parts; validation is for tuning, test for the final report.

        With f_v = ``validation_fraction`` and f_t = ``test_fraction`` (f_v, f_t >= 0, f_v + f_t < 1):

        - ``random`` (TF1's sizes): the floor(nnz f_t) entries of smallest seeded hash are the test set, the next
          floor(nnz f_v) the validation set, a uniform draw without replacement. With f_v = 0 this is TF1's split
          (and ``split``).
        - ``per_user``: each user with n_u entries gives floor(n_u f_t) random entries to test and floor(n_u f_v)
          to validation, so every user keeps at least one training entry and users are evaluated evenly.
        - ``time``: as ``per_user``, but each user's latest entries (by ``timestamps``, ties in seeded random
          order) are the test set and the ones just before them the validation set (leave-latest-out).

        The draw depends on the entries (user and item indices), the seed and the fractions only, not on their
        order in the input, so several workers holding parts of the entries draw the same sets
        (``split_masks``). All three parts keep the full id maps and shape.

        Raises:
            ValueError: a fraction outside [0, 1) or summing to >= 1, an unknown strategy, or ``time`` without
                timestamps.
        """
        for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` should be in [0, 1). Received: {name}={value!r}")
        if validation_fraction + test_fraction >= 1.0:
            raise ValueError(
                "`validation_fraction` + `test_fraction` should be < 1 (something must be left to train on). "
                f"Received: validation_fraction={validation_fraction!r}, test_fraction={test_fraction!r}"
            )
        if strategy not in SPLITS:
            raise ValueError(f"`strategy` should be one of {SPLITS}. Received: strategy={strategy!r}")
        if strategy == "time" and self.timestamps is None:
            raise no_timestamps(self.source)
        validation, test = split_masks(
            self.users, self.items, self.timestamps, self.num_items, validation_fraction, test_fraction, seed, strategy
        )
        return self.subset(~(test | validation)), self.subset(validation), self.subset(test)

    def pairs(self) -> np.ndarray:
        """int64 [nnz, 2] of (user index, item index), the input of ``WALSModel.predict``/``evaluate``."""
        return np.stack([self.users, self.items], axis=1).astype(np.int64)

    def to_csr(self) -> sp.csr_array:
        """The ratings as a scipy CSR matrix [num_users, num_items] (implicit's ``user_items``)."""
        return sp.csr_array((self.values, (self.users, self.items)), shape=self.shape)

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.num_users)

    def item_counts(self, positive_only: bool = False) -> np.ndarray:
        """Entries per item; with ``positive_only``, only entries with a rating > 0 (TF1's n_j)."""
        items = self.items[self.values > 0] if positive_only else self.items
        return np.bincount(items, minlength=self.num_items)

    def vocabularies(self) -> tuple[Vocabulary, Vocabulary]:
        """The (users, items) ``Vocabulary`` of the raw ids."""
        return Vocabulary(self.user_ids, self.num_users, "user_ids"), Vocabulary(
            self.item_ids, self.num_items, "item_ids"
        )

    def user_index(self, raw_ids) -> np.ndarray:
        """int64 indices [b] of raw user ids [b]; raises KeyError naming the first unknown id."""
        return self.vocabularies()[0].index(raw_ids)

    def item_index(self, raw_ids) -> np.ndarray:
        """int64 indices [b] of raw item ids [b]; raises KeyError naming the first unknown id."""
        return self.vocabularies()[1].index(raw_ids)


def line_of(ratings: Ratings, part: Ratings, entry: int) -> int | None:
    """The line of ``ratings`` that entry ``entry`` of ``part`` (``ratings`` or a subset of it) was read from."""
    if ratings.first_line is None:
        return None
    if part is not ratings:  # (user, item) pairs are unique, so the pair finds the entry
        entry = np.flatnonzero((ratings.users == part.users[entry]) & (ratings.items == part.items[entry]))[0]
    return int(ratings.line(entry))


def repeated_pairs(rows: np.ndarray, cols: np.ndarray, num_cols: int) -> tuple[int, np.ndarray]:
    """The entries whose (row, column) pair an earlier entry has: (their number, the positions [2] of the first
    two entries of the smallest such pair, in input order; empty when there are none).

    The one duplicate check of the reader, the multi-worker exchange and the model's own matrices.
    """
    keys = np.asarray(rows).astype(np.int64) * int(num_cols) + np.asarray(cols)
    sorted_keys = np.sort(keys)  # an unstable sort: the positions are looked up only when there is a repeat
    same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if not same.size:
        return 0, np.zeros(0, np.int64)
    return int(same.size), np.flatnonzero(keys == sorted_keys[same[0]])[:2]


def no_timestamps(source) -> ValueError:
    """The error of a time split of ratings without timestamps (``Ratings.split``, ``sharding``)."""
    return ValueError(
        f"`strategy` 'time' needs timestamps, and {source} has none (read_ratings takes a file's fourth field as "
        "timestamps only when it is a number on every line). Received: strategy='time'"
    )


def line_number(first_line: int, blank_lines: np.ndarray | None, rows):
    """The file line of row(s) ``rows`` (0-based, counted over the rows kept) of a file read from ``first_line``
    on, where the lines numbered ``blank_lines`` (sorted) were skipped: row r is the (r+1)-th kept line.

    With b_j the j-th blank line, the rows before it number b_j - j - first_line, so row r lies after every blank
    line with b_j - j <= r + first_line.
    """
    lines = np.asarray(rows, np.int64) + first_line
    if blank_lines is None or not len(blank_lines):
        return lines
    shifted = np.asarray(blank_lines, np.int64) - np.arange(len(blank_lines))
    return lines + np.searchsorted(shifted, lines, side="right")


def where(ratings: Ratings, part: Ratings, entry: int) -> str:
    """``source: line N (user u, item i)`` of entry ``entry`` of ``part``, for messages."""
    line = line_of(ratings, part, entry)
    ids = (
        f"user {quote(part.user_ids[part.users[entry]].item())}, item {quote(part.item_ids[part.items[entry]].item())}"
    )
    return f"{ratings.source}: line {line} ({ids})" if line is not None else f"{ratings.source}: {ids}"


def entry_keys(users, items, num_items: int, seed: int | None) -> np.ndarray:
    """A seeded 64-bit key per entry, distinct for distinct (user, item) index pairs, uniform-looking.

    The splitmix64 finaliser of ``user * num_items + item + (seed + 1) * golden`` (mod 2^64): each step is a
    bijection of the 64-bit integers, so distinct pairs never collide and ordering by key is a seeded random order
    that does not depend on where or in which order the entries are held.
    """
    seed = 0 if seed is None else int(seed)
    with np.errstate(over="ignore"):  # arithmetic modulo 2^64
        key = np.asarray(users).astype(np.uint64) * np.uint64(num_items) + np.asarray(items).astype(np.uint64)
        key += np.uint64((seed + 1) * 0x9E3779B97F4A7C15 % (1 << 64))
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            key = (key ^ (key >> np.uint64(shift))) * np.uint64(factor)
        key ^= key >> np.uint64(31)
    return key


def kth_smallest(keys: np.ndarray, k: int, reduce_sum=None) -> np.uint64:
    """The k-th smallest (0-based) of all workers' distinct uint64 ``keys``, by radix selection.

    Four rounds over 16-bit digits, each with one histogram of the remaining candidates summed over the workers
    by ``reduce_sum`` (``Collectives.all_reduce_sum``; the identity for one process).
    """
    reduce_sum = reduce_sum or (lambda x: x)
    prefix = np.uint64(0)
    candidates = np.asarray(keys, np.uint64)
    for shift in (48, 32, 16, 0):
        digits = ((candidates >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.int64)
        counts = np.cumsum(reduce_sum(np.bincount(digits, minlength=1 << 16)))
        digit = int(np.searchsorted(counts, k, side="right"))
        k -= int(counts[digit - 1]) if digit else 0
        prefix |= np.uint64(digit) << np.uint64(shift)
        candidates = candidates[digits == digit]
    return prefix


def split_masks(
    users,
    items,
    timestamps,
    num_items: int,
    validation_fraction: float,
    test_fraction: float,
    seed: int | None,
    strategy: str = "random",
    reduce_sum=None,
) -> tuple[np.ndarray, np.ndarray]:
    """(validation, test) boolean masks of entries, as ``Ratings.train_validation_test`` describes them.

    The same function serves one process and several workers: with ``reduce_sum`` summing arrays over the workers,
    each worker passes the entries it holds and gets the masks of its entries. ``random`` needs only that sum (the
    sizes and the key thresholds are global); ``per_user`` and ``time`` need every entry of a user on one worker.
    """
    users = np.asarray(users)
    keys = entry_keys(users, items, num_items, seed)
    if strategy == "random":
        total = int((reduce_sum or (lambda x: x))(np.array([keys.size], np.int64))[0])
        num_test = int(np.floor(total * test_fraction))
        num_validation = int(np.floor(total * validation_fraction))
        test = np.zeros(keys.size, bool)
        if num_test:
            test = keys <= kth_smallest(keys, num_test - 1, reduce_sum)
        validation = np.zeros(keys.size, bool)
        if num_validation:
            validation = ~test & (keys <= kth_smallest(keys, num_test + num_validation - 1, reduce_sum))
        return validation, test
    primary = np.asarray(timestamps) if strategy == "time" else keys
    order = np.lexsort((keys, primary, users))  # by user, then oldest (or seeded random) first
    _, first, counts = np.unique(users[order], return_index=True, return_counts=True)
    n = np.repeat(counts, counts)
    rank = np.empty(keys.size, np.int64)
    rank[order] = np.arange(keys.size) - np.repeat(first, counts)
    n_entry = np.empty(keys.size, np.int64)
    n_entry[order] = n
    first_test = n_entry - np.floor(n_entry * test_fraction).astype(np.int64)
    test = rank >= first_test
    validation = ~test & (rank >= first_test - np.floor(n_entry * validation_fraction).astype(np.int64))
    return validation, test


def _finite_column(frame: pd.DataFrame, column: str, label: str, source: str, line) -> np.ndarray:
    """``frame[column]`` as float64 [rows]; a RatingsError names the first row that is not a finite number by its
    file line (``line(row)``)."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        raise RatingsError(
            f"{source}: line {line(row)}: {label} {quote(frame[column].iloc[row])} is not a finite number "
            f"({bad.size} such row(s) in all)",
            line(row),
        )
    return values


def _check_ids(column: pd.Series, ids: np.ndarray, label: str, source: str, line) -> None:
    """Raises a RatingsError naming the first id of ``column`` that is a number but not an integer >= 0.

    ``ids`` is ``_id_array(column)``: int64 ids only need the sign check; str ids (names) may not include numbers
    such as ``1e30``, ``2.5`` or ``-4``, which would otherwise turn the whole column into strings.
    """
    if ids.dtype.kind == "i":
        bad = np.flatnonzero(ids < 0)
        column = pd.Series(ids, dtype=object)
        what = "is negative"
    else:
        text = column.astype(str).str.strip()
        number = pd.to_numeric(text, errors="coerce").notna().to_numpy()
        if not number.any():
            return
        digits = text.str.fullmatch(r"[0-9]{1,19}")  # a string comparison is numeric between 19-digit strings
        integer = (digits & ~((text.str.len() == 19) & (text > str(np.iinfo(np.int64).max)))).to_numpy()
        bad = np.flatnonzero(number & ~integer)
        what = "is a number but not an integer in [0, 2**63)"
    if bad.size:
        number = line(bad[0])
        raise RatingsError(
            f"{source}: line {number}: {label} id {quote(column.iloc[bad[0]])} {what}; ids in this format should be "
            f"integers >= 0 (or names that are not numbers) ({bad.size} such row(s) in all)",
            number,
        )


def _id_array(series: pd.Series) -> np.ndarray:
    """Ids that are all int64 integers stay integers (so they sort numerically); anything else becomes str."""
    if pd.api.types.is_integer_dtype(series.dtype) and series.dtype.kind == "i":
        return series.to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().all() and numeric.dtype.kind == "i":
        return numeric.to_numpy(dtype=np.int64)
    return np.asarray(series.astype(str).to_numpy(), dtype=str)


def _integer(value) -> int | None:
    """``value`` as a Python int where it is one exactly (an integer, an integral float, a string of an integer's
    digits), else None (a bool, a fraction, any other string or object)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if np.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value):
        return int(value)
    return None


def lookup(vocab: np.ndarray, raw_ids, what: str) -> np.ndarray:
    """Positions of ``raw_ids`` (of ``vocab``'s dtype: ``Vocabulary.cast``) in the sorted ``vocab``; a KeyError
    names the first unknown id (``what`` id)."""
    raw = np.asarray(raw_ids)
    pos = np.searchsorted(vocab, raw)
    pos = np.clip(pos, 0, len(vocab) - 1)
    unknown = vocab[pos] != raw
    if np.any(unknown):
        first = np.atleast_1d(raw)[np.flatnonzero(np.atleast_1d(unknown))[0]].item()
        raise KeyError(f"unknown {what} id {quote(first)}")
    return pos


class Vocabulary:
    """Raw ids of the indices 0..size-1 (in any order), looked up by a sorted search (``lookup``): the one id
    vocabulary of ``Ratings`` (``user_index`` / ``item_index``), the model (``set_vocabularies``), partial fits
    and the serving export."""

    def __init__(self, ids, size: int, name: str):
        ids = np.asarray(ids)
        if ids.dtype.kind == "O":  # Python objects: numbers or strings as numpy's own dtype
            ids = np.asarray(ids.tolist())
        if ids.ndim != 1 or ids.shape[0] != size:
            raise ValueError(f"`{name}` should be 1-D with {size} ids. Received shape {ids.shape}")
        if not size:
            ids = ids.astype(np.int64) if ids.dtype.kind not in "iuU" else ids
        elif ids.dtype.kind not in "iuU":
            raise ValueError(
                f"`{name}` should be integer or string ids (a lookup by float, bool or bytes ids is not exact). "
                f"Received dtype {ids.dtype}"
            )
        self._ids = ids
        if size < 2 or bool(np.all(ids[1:] > ids[:-1])):  # sorted already (a ``Ratings``' ids): no argsort
            self._order, self._sorted = np.arange(size), ids
        else:
            self._order = np.argsort(ids, kind="stable")
            self._sorted = ids[self._order]
        if size > 1 and np.any(self._sorted[1:] == self._sorted[:-1]):
            first = self._sorted[1:][self._sorted[1:] == self._sorted[:-1]][0]
            raise ValueError(f"`{name}` should be distinct ids. Received {first.item()!r} more than once")
        self._name, self._what = name, name.removesuffix("_ids")

    @property
    def size(self) -> int:
        return int(self._ids.shape[0])

    @property
    def ids_array(self) -> np.ndarray:
        """The raw id of each index [size]."""
        return self._ids

    def cast(self, raw_ids, error: type[Exception] = ValueError) -> np.ndarray:
        """Raw ids [b] as this vocabulary's dtype, exactly: for integer ids, an id that is not an integer of that
        dtype's range (a fraction, a bool, a string other than an integer's digits, a number out of range) raises
        ``error`` naming the first one: a KeyError as an unknown id, or a ValueError as an id of the wrong type."""
        raw = np.atleast_1d(raw_ids if isinstance(raw_ids, np.ndarray) else np.asarray(raw_ids, dtype=object))
        if self._ids.dtype.kind not in "iu":
            return raw.astype(str)
        info = np.iinfo(self._ids.dtype)
        if raw.dtype.kind in "iu":
            bad = (raw < info.min) | (raw > info.max)
            flat = raw.reshape(-1)
        else:
            flat = np.array([_integer(x) for x in raw.reshape(-1)], dtype=object)
            bad = np.array([v is None or not info.min <= v <= info.max for v in flat], bool).reshape(raw.shape)
        if np.any(bad):
            first = raw.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
            first = first.item() if isinstance(first, np.generic) else first
            if error is KeyError:
                raise KeyError(f"unknown {self._what} id {quote(first)}")
            raise error(
                f"The raw {self._what} ids should be of the vocabulary's type {self._ids.dtype}. Received {first!r}"
            )
        return flat.astype(self._ids.dtype).reshape(raw.shape)

    def contains(self, raw_ids) -> np.ndarray:
        """bool [b]: whether each raw id is in the vocabulary."""
        raw = self.cast(raw_ids)
        if not self.size:
            return np.zeros(raw.shape, bool)
        pos = np.minimum(np.searchsorted(self._sorted, raw), self.size - 1)
        return self._sorted[pos] == raw

    def extended(self, new_ids) -> Vocabulary:
        """This vocabulary with ``new_ids`` (not in it) as the indices size, size + 1, ..."""
        new_ids = self.cast(new_ids)
        return Vocabulary(np.concatenate([self._ids, new_ids]), self.size + new_ids.size, self._name)

    def index(self, raw_ids) -> np.ndarray:
        """int64 indices [b] of raw ids [b]; KeyError naming the first unknown id."""
        raw = np.atleast_1d(raw_ids if isinstance(raw_ids, np.ndarray) else np.asarray(raw_ids, dtype=object))
        if raw.ndim != 1:
            raise ValueError(f"The raw {self._what} ids should be 1-D. Received shape {raw.shape}")
        if not raw.size:
            return np.zeros(0, np.int64)
        return self._order[lookup(self._sorted, self.cast(raw, KeyError), self._what)].astype(np.int64)

    def index_or_none(self, raw_ids) -> np.ndarray | None:
        return None if raw_ids is None else self.index(raw_ids)

    def ids(self, indices: np.ndarray) -> np.ndarray:
        """Raw ids (object array) of indices, None where the index is -1."""
        out = np.full(indices.shape, None, dtype=object)
        valid = indices >= 0
        out[valid] = self._ids[indices[valid]]
        return out


def read_ratings(
    path: str,
    delimiter: str = "\t",
    headers: bool = False,
    compression: str | None = "infer",
    text: TextRange | None = None,
) -> Ratings:
    """Reads a user, item, rating[, timestamp] UTF-8 file (local, ``gs://`` or any ``tf.io.gfile`` path).

    Args:
        path: the file. ML-100k ``u.data`` uses the tab default; ML-1M ``ratings.dat`` ``delimiter="::"``;
            ML-20M ``ratings.csv`` ``delimiter=","`` and ``headers=True``.
        delimiter: the field separator, any string (``\\t`` and ``tab`` also mean a tab: ``normalize_delimiter``).
        headers: whether the first line is a header (skipped).
        compression: as in ``pandas.read_csv`` (gzip is inferred from a ``.gz`` suffix).
        text: a ``TextRange`` of ``path`` (one worker's lines, ``line_range``) to read instead of the whole file;
            the ids keep their raw values and the lines their numbers in the file.

    Raises:
        FileNotFoundError: no such file.
        RatingsError: empty or header-only file, bytes that are not UTF-8, too few columns (with a delimiter hint),
            bad or duplicate rows (a rating on line 1 that is not a number hints at ``--headers``).
    """
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"ratings file not found: {path}")
    if tf.io.gfile.isdir(path):
        raise RatingsError(f"{path}: is a directory, expected a ratings file")
    delimiter = normalize_delimiter(delimiter)
    if compression == "infer":
        compression = "gzip" if path.endswith(".gz") and text is None else None
    try:
        frame, blank_lines = _read_fields(path, delimiter, headers, compression, text)
    except pd.errors.EmptyDataError:
        what = "only a header line" if headers else "no data"
        raise RatingsError(f"{path}: the file is empty ({what})") from None
    except pd.errors.ParserError as err:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if fields is None:
            raise RatingsError(f"{path}: cannot parse with delimiter {quote(delimiter)}: {_cut(str(err))}") from None
        expected, line, saw = (int(x) for x in fields.groups())  # line: of the text read, header included
        if text is not None:  # a worker's lines: its text holds the header line first (if any), then its own lines
            line += text.first_line - 1 - int(headers)
        raise RatingsError(
            f"{path}: line {line}: {saw} fields with delimiter {quote(delimiter)}, where the lines before have "
            f"{expected}; expected user, item, rating[, timestamp] on every line",
            line,
        ) from None
    except UnicodeDecodeError:
        line, data = _undecodable_line(path, compression, text, headers)
        raise RatingsError(
            f"{path}: line {line}: {quote(data)} is not UTF-8 text; ratings files should be UTF-8 encoded", line
        ) from None
    if frame.shape[1] < 3:
        hint = _delimiter_hint(path, delimiter)
        raise RatingsError(
            f"{path}: found {frame.shape[1]} column(s) with delimiter {quote(delimiter)}, expected user, item, "
            f"rating[, timestamp]{hint}"
        )
    first_line = text.first_line if text is not None else (2 if headers else 1)
    # Line j (0-based) of what was read is file line first_line + j - headers (the header, if any, comes first).
    blank_lines = blank_lines[blank_lines >= int(headers)] + (first_line - int(headers))
    if frame.shape[1] > 4:
        line = int(line_number(first_line, blank_lines, 0))
        raise RatingsError(
            f"{path}: line {line}: {frame.shape[1]} fields with delimiter {quote(delimiter)}, expected user, "
            "item, rating[, timestamp]",
            line,
        )
    names = [*COLUMNS, "timestamp"][: frame.shape[1]]
    empty = np.flatnonzero((frame.iloc[:, 2] == "").to_numpy())  # a missing field reads as an empty one
    if empty.size:  # (empty ids are reported by ``Ratings.from_dataframe``, with the other bad ids)
        line = int(line_number(first_line, blank_lines, empty[0]))
        raise RatingsError(
            f"{path}: line {line}: no rating (a missing or empty field); expected user, item, rating[, timestamp] "
            f"separated by {quote(delimiter)}",
            line,
        )
    frame.columns = names
    if "timestamp" in names:
        unusable = np.flatnonzero(pd.to_numeric(frame["timestamp"], errors="coerce").isna().to_numpy())
        if unusable.size:
            field = frame["timestamp"].iloc[unusable[0]]
            logger.warning(
                "%s: line %d: %s, so the fourth column is not used as timestamps",
                path,
                int(line_number(first_line, blank_lines, unusable[0])),
                f"the fourth field {quote(field)} is not a number" if field else "no fourth field",
            )
            frame = frame.drop(columns="timestamp")
    frame = frame.replace("", np.nan)
    logger.info("read %d lines from %s", len(frame), path)
    try:
        return Ratings.from_dataframe(
            frame,
            source=path,
            first_line=first_line,
            timestamp_col="timestamp" if "timestamp" in frame.columns else None,
            nonnegative_ids=True,
            blank_lines=blank_lines,
        )
    except RatingsError as err:
        if headers or err.line != 1 or _is_number(frame["rating"].iloc[0]):
            raise
        raise RatingsError(f"{err}; if line 1 is a header, pass --headers", err.line) from None


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _cut(text: str, limit: int = 4 * QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, for library messages that may quote a whole input line."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class _ReadableFile(io.RawIOBase):
    """A ``tf.io.gfile.GFile`` opened "rb" as a standard binary file, for readers (pandas' python engine, gzip)
    that need the attributes of one (``closed``, ``readable``, ``readinto``)."""

    def __init__(self, handle):
        self._handle = handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _open_binary(path: str, compression: str | None, text: TextRange | None = None):
    """(handle, stream): ``path`` as a buffered binary file through ``tf.io.gfile``, decompressed when
    ``compression`` is gzip; or the content of ``text``."""
    if text is not None:
        stream = io.BytesIO(text.content)
        return stream, stream
    handle = tf.io.gfile.GFile(path, "rb")
    stream = io.BufferedReader(_ReadableFile(handle), buffer_size=1 << 20)
    if compression == "gzip":
        return handle, gzip.GzipFile(fileobj=stream)
    return handle, stream


def _read_chunks(path: str, sep: str, headers: bool, compression: str | None, text=None):
    """(frame, blank): all fields of ``path`` as strings, read ``PROGRESS_ROWS`` lines at a time with a progress
    line per chunk, and int64 [b] the 0-based numbers of the blank lines that pandas skipped (``_BlankLines``).

    A one-character ``sep`` uses pandas' C parser; a longer one the python parser, as a literal string (pandas
    would read it as a regular expression).
    """
    size = len(text.content) if text is not None else tf.io.gfile.stat(path).length
    chunks = []
    handle, stream = _open_binary(path, compression, text)
    with handle, stream:
        counter = _BlankLines(stream)
        reader = pd.read_csv(
            io.BufferedReader(counter, buffer_size=1 << 20),
            sep=sep if len(sep) == 1 else re.escape(sep),
            header=None,
            skiprows=1 if headers else 0,
            dtype=str,
            engine="c" if len(sep) == 1 else "python",
            encoding="utf-8",
            skip_blank_lines=True,  # counted by the _BlankLines stream, for the line numbers of messages
            keep_default_na=False,
            chunksize=PROGRESS_ROWS,
        )
        with reader:
            for chunk in reader:
                chunks.append(chunk)
                if len(chunk) == PROGRESS_ROWS:
                    done = 100.0 * handle.tell() / size if size else 100.0
                    logger.info("%s: %d lines read (%.0f%% of the file)", path, len(chunks) * PROGRESS_ROWS, done)
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    return frame, counter.blank()


def _read_fields(path: str, delimiter: str, headers: bool, compression: str | None, text=None):
    """(frame, blank lines) as ``_read_chunks``: the fields of ``path`` split at ``delimiter``, as strings.

    A doubled one-character delimiter such as ML-1M's '::' is first read with the fast C parser as that one
    character, dropping the empty fields between the doubled characters; when a field holds the character
    itself (every second field is not empty then, or the rows differ in length), the file is read again with
    the whole delimiter.
    """
    if len(delimiter) == 2 and delimiter[0] == delimiter[1]:
        try:
            frame, blank = _read_chunks(path, delimiter[0], headers, compression, text)
        except pd.errors.ParserError:
            frame = None
        if frame is not None and frame.shape[1] % 2 and not frame.iloc[:, 1::2].fillna("").ne("").any().any():
            return frame.iloc[:, ::2], blank
    return _read_chunks(path, delimiter, headers, compression, text)


class _BlankLines(io.RawIOBase):
    """A binary stream passed through unchanged that notes its blank lines (empty, or a lone ``\\r``).

    pandas skips blank lines, so row r of its frame is not line r of the file after one; ``blank()`` gives the
    0-based numbers of those lines, to number the rows as the file does (``line_number``).
    """

    def __init__(self, stream):
        self._stream = stream
        self._lines = 0  # newlines seen so far
        self._content = b""  # up to 2 bytes of the current line so far (enough to tell a blank one)
        self._blank: list[np.ndarray] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        if data:
            self._scan(bytes(data))
        return len(data)

    def _scan(self, data: bytes) -> None:
        view = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(view == 10)
        if ends.size:
            starts = np.concatenate([[-1], ends[:-1]]) + 1
            length = ends - starts
            blank = (length == 0) | ((length == 1) & (view[np.maximum(ends - 1, 0)] == 13))
            # the first line began in an earlier block: judge it with what it had there
            first = self._content + data[: ends[0]]
            blank[0] = first in (b"", b"\r")
            self._blank.append(np.flatnonzero(blank) + self._lines)
            self._lines += ends.size
            self._content = data[ends[-1] + 1 :][:2]
        else:
            self._content = (self._content + data)[:2]

    def blank(self) -> np.ndarray:
        """int64 [b]: the 0-based numbers of the blank lines read so far (a last line without newline aside)."""
        return np.concatenate(self._blank).astype(np.int64) if self._blank else np.zeros(0, np.int64)


def _undecodable_line(path: str, compression: str | None, text=None, headers: bool = False) -> tuple[int, bytes]:
    """(line number, the bytes that are not UTF-8) of the first such line of ``path`` (or of its ``text``, whose
    header line, with ``headers``, comes first); (0, b"") when none."""
    handle, stream = _open_binary(path, compression, text)
    start = 1 if text is None else text.first_line - int(headers)
    with handle, stream:
        for number, line in enumerate(stream, start=start):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return number, line[err.start : err.start + 8]
    return 0, b""


def _delimiter_hint(path: str, delimiter: str) -> str:
    with tf.io.gfile.GFile(path, "rb") as handle:
        head = handle.read(4096)
    if path.endswith(".gz"):
        import gzip
        import io

        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(head)).read(4096)
        except (OSError, EOFError):
            pass
    text = head.decode("utf-8", "replace")
    for candidate, example in (
        ("::", "ML-1M ratings.dat files"),
        (",", "CSV files such as ratings.csv"),
        ("\t", "u.data files"),
    ):
        if candidate != delimiter and candidate in text:
            flag = "'::'" if candidate == "::" else ("," if candidate == "," else "'\\t' (the default)")
            return f"; {example} use --delimiter {flag}"
    return ""


def bundled_path(name: str = "ratings.csv.gz") -> str:
    """Path of a file of the bundled MovieLens latest-small data set (see ``wals2/data/ml-latest-small``)."""
    return os.path.join(os.path.dirname(__file__), "data", "ml-latest-small", name)


def load_bundled() -> Ratings:
    """MovieLens latest-small (610 users, 9,724 rated movies, 100,836 half-star ratings, with timestamps), shipped
    in the package; the same ratings as TFDS ``movielens/latest-small-ratings``."""
    return read_ratings(bundled_path(), delimiter=",", headers=True)


def read_web_views(path: str, text: TextRange | None = None) -> Ratings:
    """Reads a Google Analytics export with header ``clientId,contentId,timeOnPage`` (local or ``gs://``).

    As in TF1, the time on page is summed per (clientId, contentId) pair and used as the rating, unscaled.
    ``text`` (a ``TextRange`` with the header line) reads one worker's lines instead of the whole file.
    """
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"web views file not found: {path}")
    try:
        handle, stream = _open_binary(path, None, text)
        with handle, stream:
            counter = _BlankLines(stream)
            frame = pd.read_csv(io.BufferedReader(counter), sep=",", dtype={"clientId": str, "contentId": str})
    except pd.errors.EmptyDataError:
        raise RatingsError(f"{path}: the file is empty") from None
    except pd.errors.ParserError as err:
        raise RatingsError(f"{path}: cannot parse as CSV: {err}") from err
    needed = ["clientId", "contentId", "timeOnPage"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise RatingsError(f"{path}: missing column(s) {missing} in the header; found {list(frame.columns)}")
    if len(frame) == 0:
        raise RatingsError(f"{path}: no data rows after the header")
    first_line = text.first_line if text is not None else 2
    blank = counter.blank()
    blank = blank[blank >= 1] + (first_line - 1)  # line j (0-based) after the header is file line first_line + j - 1

    def line(row) -> int:
        return int(line_number(first_line, blank, row))

    frame = frame.assign(timeOnPage=_finite_column(frame, "timeOnPage", "timeOnPage", path, line))
    summed = frame.groupby(["clientId", "contentId"], sort=True, as_index=False)["timeOnPage"].sum()
    summed.columns = list(COLUMNS)
    logger.info("read %d web-view rows (%d distinct pairs) from %s", len(frame), len(summed), path)
    return Ratings.from_dataframe(summed, source=path, first_line=first_line)


class TextRange(NamedTuple):
    """One worker's lines of a text file: ``content`` (the header line, if any, then the lines) and the line
    number of its first data line in the file."""

    content: bytes
    first_line: int


def line_range(path: str, rank: int, count: int, header: bool) -> tuple[bytes, bytes]:
    """(header line, data lines) of worker ``rank`` of ``count``: the lines that start in its byte range
    [s rank / count, s (rank + 1) / count) of the s-byte file (Hadoop-style splits, through ``tf.io.gfile``).

    A ``.gz`` file cannot be split by bytes: it is decompressed whole and the worker keeps its contiguous range of
    lines. ``header`` says the first line of the file is a header (returned apart, to every worker).
    """
    if path.endswith(".gz"):
        with tf.io.gfile.GFile(path, "rb") as handle:
            lines = gzip.decompress(handle.read()).splitlines(keepends=True)
        head = lines[0] if header and lines else b""
        lines = lines[1:] if header else lines
        bounds = np.linspace(0, len(lines), count + 1).astype(np.int64)
        return head, b"".join(lines[bounds[rank] : bounds[rank + 1]])
    size = tf.io.gfile.stat(path).length
    start, end = size * rank // count, size * (rank + 1) // count
    with tf.io.gfile.GFile(path, "rb") as handle:
        head = handle.readline() if header else b""
        if start > 0:
            handle.seek(start - 1)
            handle.readline()  # the line holding byte start - 1 belongs to the previous worker
        position = max(handle.tell(), len(head))
        handle.seek(position)
        text = handle.read(end - position) if position < end else b""
        if text and not text.endswith(b"\n"):
            text += handle.readline()
    return head, text
