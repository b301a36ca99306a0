"""Benchmark data: synthetic MovieLens-shaped ratings (cached on disk) and loaders of real MovieLens files.

The synthetic generator matches the shape, the number of ratings and the degree skew of real MovieLens 1M and
20M, following the recipe of the performance design note (section 4): one numpy generator seeded with 20240601,
drawn in the order user degrees, item weights, item sampling, ratings.

* User degrees: 20 + lognormal with the real median and mean, clipped to [20, real max], rescaled to sum to nnz.
* Item popularity: lognormal weights with the real median and mean, capped at the real max item degree.
* Sampling: every user draws its degree of distinct items with probability proportional to popularity, without
  replacement: exact Gumbel-top-k for users with more than items / 20 ratings, oversampling with replacement
  and keeping the first distinct draws for the others.
* Ratings: 3.6 + user bias N(0, 0.45^2) + item bias N(0, 0.55^2) + 0.8 (rank-8 latent dot product, entries
  N(0, 1/8)) + noise N(0, 0.8^2), rounded and clipped to 1..5.

Every data set is returned as ``Ratings`` (int32 rows and columns, ratings as stored, the shape). Run
``python -m benchmarks.synthetic ml-1m ml-20m`` to generate (or load) the caches and print their statistics.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import time
from typing import NamedTuple

import numpy as np

SEED = 20240601
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE_DIR = os.path.join(REPO_ROOT, "benchmarks", "cache")
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")
#: The file each real data set needs (relative to the repository root: ``../shared/data/...``).
REAL_FILES = {
    "real-ml-1m": os.path.join(SHARED_DATA, "ml-1m", "user-movie-pairs.all-1000209.dat.gz"),
    "real-ml-100k": os.path.join(SHARED_DATA, "ml-100k", "u.data"),
}
MIN_USER_DEGREE = 20
LATENT_RANK = 8


class Target(NamedTuple):
    """Shape and degree statistics of a real MovieLens release, the generator's targets."""

    users: int
    items: int
    nnz: int
    user_median: float
    user_max: int
    item_median: float
    item_max: int


TARGETS = {
    "ml-1m": Target(6040, 3706, 1000209, user_median=96, user_max=2314, item_median=123.5, item_max=3428),
    "ml-20m": Target(138493, 26744, 20000263, user_median=68, user_max=9254, item_median=18, item_max=67310),
}


class Ratings(NamedTuple):
    """COO ratings: ``rows`` and ``cols`` int32 [nnz], ``values`` [nnz] (int8 or float32), ``shape`` (m, n)."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]


def user_degrees(rng: np.random.Generator, target: Target) -> np.ndarray:
    """Per-user rating counts: 20 + lognormal, clipped to [20, max], summing exactly to ``target.nnz``."""
    m, nnz, low, high = target.users, target.nnz, MIN_USER_DEGREE, target.user_max
    mean = nnz / m
    mu = np.log(target.user_median - low)
    sigma = np.sqrt(2 * np.log((mean - low) / (target.user_median - low)))
    excess = rng.lognormal(mu, sigma, size=m)
    for _ in range(100):
        degree = np.clip(low + excess, low, high)
        if abs(degree.sum() - nnz) < 1:
            break
        excess = (degree - low) * (nnz - low * m) / (degree - low).sum()
    degree = np.floor(degree).astype(np.int64)
    residual = nnz - int(degree.sum())
    while residual:
        step = 1 if residual > 0 else -1
        room = np.flatnonzero(degree < high if step > 0 else degree > low)
        chosen = rng.choice(room, size=min(abs(residual), room.size), replace=False)
        degree[chosen] += step
        residual -= step * chosen.size
    return degree


def item_popularity(rng: np.random.Generator, target: Target) -> np.ndarray:
    """Item sampling probabilities: lognormal weights with the real median and mean, capped at the real max."""
    mean = target.nnz / target.items
    sigma = np.sqrt(2 * np.log(mean / target.item_median))
    weights = np.minimum(rng.lognormal(np.log(target.item_median), sigma, size=target.items), target.item_max)
    return weights / weights.sum()


def sample_items(rng: np.random.Generator, degree: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Distinct items of every user, users in order; user u gets ``degree[u]`` items drawn by popularity."""
    num_items = popularity.size
    heavy = degree > num_items // 20
    picks = [None] * degree.size
    log_p = np.log(popularity)
    for user in np.flatnonzero(heavy):  # exact Gumbel-top-k
        keys = log_p + rng.gumbel(size=num_items)
        picks[user] = np.argpartition(-keys, degree[user] - 1)[: degree[user]]
    light = np.flatnonzero(~heavy)
    for user, items in zip(light, _oversample(rng, degree[light], popularity)):
        picks[user] = items
    return np.concatenate(picks).astype(np.int32)


def _oversample(rng: np.random.Generator, degree: np.ndarray, popularity: np.ndarray) -> list[np.ndarray]:
    """First ``degree[u]`` distinct draws with replacement per user, redrawing users that came up short."""
    out = [None] * degree.size
    todo = np.arange(degree.size)
    factor = 1.5
    while todo.size:
        draws_per_user = np.ceil(degree[todo] * factor).astype(np.int64) + 8
        owner = np.repeat(np.arange(todo.size), draws_per_user)
        draws = rng.choice(popularity.size, size=owner.size, p=popularity)
        _, first = np.unique(owner * popularity.size + draws, return_index=True)
        first.sort()  # first occurrences, in draw order, grouped by user
        kept_owner, kept = owner[first], draws[first]
        distinct = np.bincount(kept_owner, minlength=todo.size)
        rank = np.arange(first.size) - np.repeat(np.cumsum(distinct) - distinct, distinct)
        keep = rank < degree[todo][kept_owner]
        done = distinct >= degree[todo]
        split = np.split(kept[keep], np.cumsum(np.minimum(distinct, degree[todo]))[:-1])
        for local in np.flatnonzero(done):
            out[todo[local]] = split[local]
        todo = todo[~done]
        factor *= 2
    return out


def ratings_model(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """int8 ratings 1..5 from user and item biases, a rank-8 latent dot product and noise."""
    m, n = shape
    user_bias = rng.normal(0, 0.45, size=m)
    item_bias = rng.normal(0, 0.55, size=n)
    user_latent = rng.normal(0, np.sqrt(1 / LATENT_RANK), size=(m, LATENT_RANK))
    item_latent = rng.normal(0, np.sqrt(1 / LATENT_RANK), size=(n, LATENT_RANK))
    noise = rng.normal(0, 0.8, size=rows.size)
    out = np.empty(rows.size, dtype=np.int8)
    step = 1 << 21
    for s in range(0, rows.size, step):
        r, c = rows[s : s + step], cols[s : s + step]
        dot = np.einsum("ij,ij->i", user_latent[r], item_latent[c])
        score = 3.6 + user_bias[r] + item_bias[c] + 0.8 * dot + noise[s : s + step]
        out[s : s + step] = np.clip(np.rint(score), 1, 5)
    return out


def generate(name: str) -> Ratings:
    """Generates the synthetic ``name`` ("ml-1m" or "ml-20m") from the fixed seed."""
    target = TARGETS[name]
    rng = np.random.default_rng(SEED)
    degree = user_degrees(rng, target)
    popularity = item_popularity(rng, target)
    cols = sample_items(rng, degree, popularity)
    rows = np.repeat(np.arange(target.users, dtype=np.int32), degree)
    shape = (target.users, target.items)
    return Ratings(rows, cols, ratings_model(rng, rows, cols, shape), shape)


def synthetic(name: str, verbose: bool = False) -> Ratings:
    """The synthetic ``name``, loaded from ``benchmarks/cache/`` or generated and cached there."""
    path = os.path.join(CACHE_DIR, f"synthetic-{name}-seed{SEED}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return Ratings(f["rows"], f["cols"], f["ratings"], tuple(int(s) for s in f["shape"]))
    start = time.perf_counter()
    data = generate(name)
    if verbose:
        print(f"generated synthetic {name} in {time.perf_counter() - start:.1f} s -> {path}")
    os.makedirs(CACHE_DIR, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, rows=data.rows, cols=data.cols, ratings=data.values, shape=np.asarray(data.shape))
    os.replace(tmp, path)
    return data


def real_ml_100k() -> Ratings | None:
    """MovieLens 100K from ``../shared/data/ml-100k/u.data`` (tab separated), or None when absent."""
    path = REAL_FILES["real-ml-100k"]
    if not os.path.exists(path):
        return None
    table = np.loadtxt(path, delimiter="\t", dtype=np.int64, usecols=(0, 1, 2))
    return _indexed(table[:, 0], table[:, 1], table[:, 2].astype(np.float32))


def real_ml_1m() -> Ratings | None:
    """MovieLens 1M sparsity pattern from ``../shared/data/ml-1m``, or None when absent.

    ``user-movie-pairs.all-1000209.dat.gz`` holds all 1,000,209 (user, movie) pairs but no ratings. The ratings
    are joined from ``ratings.first-487650-lines.dat.gz`` (all ratings of users 1..2999) where present; the
    other pairs (users 3000..6040) get the value 3.0. The sparsity pattern, which sets the sweep cost, is exact.
    """
    pairs_path = REAL_FILES["real-ml-1m"]
    if not os.path.exists(pairs_path):
        return None
    pairs = _read_colons(pairs_path)
    values = np.full(pairs.shape[0], 3.0, dtype=np.float32)
    ratings_path = os.path.join(os.path.dirname(pairs_path), "ratings.first-487650-lines.dat.gz")
    if os.path.exists(ratings_path):
        rated = _read_colons(ratings_path)
        width = int(max(pairs[:, 1].max(), rated[:, 1].max())) + 1
        rated_keys = rated[:, 0] * width + rated[:, 1]
        order = np.argsort(rated_keys)
        keys = pairs[:, 0] * width + pairs[:, 1]
        at = np.minimum(np.searchsorted(rated_keys[order], keys), order.size - 1)
        hit = rated_keys[order][at] == keys
        values[hit] = rated[order[at[hit]], 2]
    return _indexed(pairs[:, 0], pairs[:, 1], values)


def _read_colons(path: str) -> np.ndarray:
    """int64 table of a gzipped ``a::b[::c::d]`` file."""
    with gzip.open(path, "rb") as f:
        text = f.read().replace(b"::", b":")
    return np.loadtxt(io.BytesIO(text), delimiter=":", dtype=np.int64, ndmin=2)


def _indexed(users: np.ndarray, items: np.ndarray, values: np.ndarray) -> Ratings:
    """Maps raw ids to dense indices (sorted unique ids)."""
    user_ids, rows = np.unique(users, return_inverse=True)
    item_ids, cols = np.unique(items, return_inverse=True)
    return Ratings(rows.astype(np.int32), cols.astype(np.int32), values, (user_ids.size, item_ids.size))


LOADERS = {
    "ml-1m": lambda: synthetic("ml-1m"),
    "ml-20m": lambda: synthetic("ml-20m"),
    "real-ml-1m": real_ml_1m,
    "real-ml-100k": real_ml_100k,
}


def load(name: str) -> Ratings | None:
    """Any benchmark data set by name (see ``LOADERS``); None for a real data set whose files are absent."""
    return LOADERS[name]()


def statistics(data: Ratings) -> dict:
    """Shape, nnz, user and item degree statistics and the mean rating, as in the design note's table."""
    users = np.bincount(data.rows, minlength=data.shape[0])
    items = np.bincount(data.cols, minlength=data.shape[1])
    return {
        "shape": list(data.shape),
        "nnz": int(data.rows.size),
        "user_degree": [int(users.min()), float(np.median(users)), round(float(users.mean()), 1), int(users.max())],
        "item_degree": [float(np.median(items)), round(float(items.mean()), 1), int(items.max())],
        "empty_items": int(np.count_nonzero(items == 0)),
        "mean_rating": round(float(np.mean(data.values, dtype=np.float64)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["ml-1m"], choices=sorted(LOADERS))
    for name in parser.parse_args().names:
        data = synthetic(name, verbose=True) if name in TARGETS else load(name)
        if data is None:
            print(f"{name}: files not found under {os.path.normpath(SHARED_DATA)}, skipped")
            continue
        print(name, statistics(data))


if __name__ == "__main__":
    main()
