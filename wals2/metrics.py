"""Ranking metrics of top-k recommendations against held-out items.

For a user u with held-out (relevant) items R_u, |R_u| > 0, and a top-k list L_u = (l_1, ..., l_k), let
hit_i = 1 if l_i is in R_u, else 0 (padding items -1 never hit). Then

    precision@k = sum_i hit_i / k
    recall@k    = sum_i hit_i / |R_u|
    NDCG@k      = DCG / IDCG,  DCG = sum_i hit_i / log2(i + 1),  IDCG = sum_{i=1}^{min(k, |R_u|)} 1 / log2(i + 1)
    AP@k        = sum_i hit_i * precision@i / min(k, |R_u|)   (MAP@k is its mean)

each averaged over the users with at least one held-out item. Every held-out item counts as relevant, whatever its
rating: the task is to rank the items a user went on to rate above those the user did not.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # this module imports numpy only: the pipeline's gate reads its registry without TensorFlow
    from wals2.data import Ratings

METRICS = ("precision", "recall", "ndcg", "map")
#: The registry of metric names and directions ("min": lower is better, "max": higher is better). Every Keras log,
#: tuning objective, hypertune tag, ``metrics.json`` key and pipeline gate metric is ``[<split>_]<name>`` or
#: ``[<split>_]<name>@<k>`` of one of these (``direction`` reads it): one spelling each.
DIRECTIONS = {"rmse": "min", "loss": "min", **{name: "max" for name in METRICS}}
#: The split prefixes of the keys: Keras' ``val_`` logs, the ``train`` / ``validation`` / ``test`` parts of
#: ``metrics.json``.
SPLITS = ("val", "train", "validation", "test")
_KEY = re.compile(rf"^(?:(?:{'|'.join(SPLITS)})_)?(?P<name>[a-z]+)(?:@[0-9]+)?$")
#: The cutoff k of the held-out ranking logs (``callbacks.HeldoutRanking``, ``WALSModel.fit(ranking_k=...)``).
RANKING_K = 10


def rmse(targets, predictions) -> float | None:
    """sqrt(mean((targets - predictions)^2)) in float64 over [b] arrays; None for b = 0."""
    targets = np.asarray(targets, np.float64)
    if not targets.size:
        return None
    return float(np.sqrt(np.mean(np.square(targets - np.asarray(predictions, np.float64)))))


def direction(key: str) -> str:
    """ "min" or "max": the direction of a metric key (``val_rmse``, ``val_ndcg@10``, ``validation_ndcg@10``).

    Raises:
        ValueError: a key that names no metric of ``DIRECTIONS``.
    """
    match = _KEY.match(key) if isinstance(key, str) else None
    if match is None or match["name"] not in DIRECTIONS:
        raise ValueError(
            f"`metric` should be [<split>_]<name>[@<k>] with a name among {sorted(DIRECTIONS)} (e.g. validation_rmse, "
            f"validation_ndcg@10). Received: metric={key!r}"
        )
    return DIRECTIONS[match["name"]]


def ranking_metrics(recommended: np.ndarray, relevant: list[np.ndarray]) -> dict[str, float]:
    """Mean precision@k, recall@k, NDCG@k and MAP@k over users (formulas in the module docstring).

    Args:
        recommended: int [b, k] item indices per user, best first; -1 marks an empty slot.
        relevant: b int arrays, the held-out items of each user (users with none are skipped).

    Returns:
        ``{"precision@k": ..., "recall@k": ..., "ndcg@k": ..., "map@k": ..., "users": n}`` with n the users
        averaged over; the means are NaN when n = 0.
    """
    recommended = np.asarray(recommended, dtype=np.int64)
    if recommended.ndim != 2 or recommended.shape[0] != len(relevant):
        raise ValueError(
            f"`recommended` should be [b, k] with b = len(relevant) = {len(relevant)}. "
            f"Received shape {recommended.shape}"
        )
    b, k = recommended.shape
    sizes = np.array([len(r) for r in relevant], dtype=np.int64)
    width = int(max(recommended.max(initial=-1), max((int(np.max(r)) for r in relevant if len(r)), default=-1))) + 2
    # One key per (row, item) so that a single isin finds every hit; -1 padding maps to a key no item has.
    relevant_keys = np.concatenate([row * width + np.asarray(r, np.int64) for row, r in enumerate(relevant)] or [[]])
    hits = np.isin(np.arange(b)[:, None] * width + recommended, relevant_keys) & (recommended >= 0)
    keep = sizes > 0
    hits, sizes = hits[keep].astype(np.float64), sizes[keep]
    n = int(keep.sum())
    if n == 0:
        return {**{f"{m}@{k}": float("nan") for m in METRICS}, "users": 0}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(sizes, k) - 1]
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return {
        f"precision@{k}": float(np.mean(hits.sum(axis=1) / k)),
        f"recall@{k}": float(np.mean(hits.sum(axis=1) / sizes)),
        f"ndcg@{k}": float(np.mean(hits @ discounts / ideal)),
        f"map@{k}": float(np.mean((hits * precision_at_i).sum(axis=1) / np.minimum(sizes, k))),
        "users": n,
    }


def heldout_ranking(model, heldout: Ratings, k: int = 10, exclude: Ratings | None = None) -> dict[str, float]:
    """Ranking metrics of ``model.recommend`` for every user with held-out entries in ``heldout``.

    Training items are never recommended (``exclude_seen``); items of ``exclude`` (e.g. the validation set when
    scoring the test set) are removed from the lists too, which are then cut to k.

    Args:
        model: a trained ``WALSModel`` (anything with ``recommend(users, k, exclude_seen=True)``).
        heldout: the held-out entries; all of them count as relevant.
        k: the cutoff.
        exclude: further known entries that are neither candidates nor relevant.
    """
    users = np.unique(heldout.users)
    relevant = _items_by_user(heldout, users)
    skip = _items_by_user(exclude, users) if exclude is not None else [np.zeros(0, np.int64)] * users.size
    extra = max((len(s) for s in skip), default=0)
    items, _ = model.recommend(users.astype(np.int64), k=min(k + extra, heldout.num_items), exclude_seen=True)
    top = np.full((users.size, k), -1, np.int64)
    for row, (ranked, drop) in enumerate(zip(items, skip)):
        kept = ranked[~np.isin(ranked, drop)][:k] if drop.size else ranked[:k]
        top[row, : kept.size] = kept
    return ranking_metrics(top, relevant)


def logs(scores: dict, k: int, names=METRICS, prefix: str = "") -> dict[str, float]:
    """The metrics ``names`` of ``ranking_metrics`` / ``heldout_ranking`` scores at k, as logs named
    ``{prefix}{name}@{k}`` (e.g. ``val_ndcg@10``)."""
    return {f"{prefix}{name}@{k}": scores[f"{name}@{k}"] for name in names}


def _items_by_user(ratings: Ratings, users: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(ratings.users, kind="stable")
    sorted_users = ratings.users[order]
    starts = np.searchsorted(sorted_users, users, side="left")
    ends = np.searchsorted(sorted_users, users, side="right")
    items = ratings.items[order].astype(np.int64)
    return [items[s:e] for s, e in zip(starts, ends)]
