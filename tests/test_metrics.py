"""Ranking metrics against hand-computed values, and the held-out evaluation's exclusions."""

import math

import numpy as np
import pytest

from wals2 import Ratings
from wals2.metrics import direction, heldout_ranking, ranking_metrics


def test_hand_computed_case():
    # user 0: top-3 (1, 2, 3), relevant {2, 9}: one hit at rank 2.
    # user 1: top-3 (4, 5, -1), relevant {7}: no hit.  user 2: no held-out items, skipped.
    got = ranking_metrics(np.array([[1, 2, 3], [4, 5, -1], [7, 8, 9]]), [np.array([2, 9]), np.array([7]), []])
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert got["users"] == 2
    assert got["precision@3"] == pytest.approx((1 / 3 + 0) / 2)
    assert got["recall@3"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["ndcg@3"] == pytest.approx(ndcg0 / 2)
    assert got["map@3"] == pytest.approx((0.5 / 2 + 0) / 2)  # P@2 = 1/2 at the hit, divided by min(3, 2)


def test_perfect_and_padding():
    perfect = ranking_metrics(np.array([[5, 6]]), [np.array([6, 5])])
    assert perfect == {"precision@2": 1.0, "recall@2": 1.0, "ndcg@2": 1.0, "map@2": 1.0, "users": 1}
    # -1 padding never hits, even if an item id could collide with the key encoding.
    padded = ranking_metrics(np.array([[-1, -1], [0, -1]]), [np.array([0]), np.array([0])])
    assert padded["precision@2"] == pytest.approx(0.25) and padded["recall@2"] == pytest.approx(0.5)
    assert math.isnan(ranking_metrics(np.zeros((1, 2), int), [[]])["ndcg@2"])
    with pytest.raises(ValueError, match="`recommended` should be"):
        ranking_metrics(np.zeros((2, 2), int), [[1]])


class FixedRanker:
    """Recommends items 0, 1, 2, ... in that order to everybody (training items are not excluded here)."""

    def recommend(self, users, k, exclude_seen=True):
        return np.tile(np.arange(k), (len(users), 1)), np.zeros((len(users), k), np.float32)


def ratings(pairs, shape=(2, 6)):
    users, items = np.array(pairs).T
    return Ratings(
        users.astype(np.int32), items.astype(np.int32), np.ones(len(pairs), np.float32), *map(np.arange, shape)
    )


def test_heldout_ranking_drops_excluded_items_before_cutting_to_k():
    heldout = ratings([(0, 2), (1, 5)])
    # Without exclusions user 0's top-2 is (0, 1): no hit. Excluding items 0 and 1 for user 0 moves 2 up.
    assert heldout_ranking(FixedRanker(), heldout, k=2)["precision@2"] == 0.0
    got = heldout_ranking(FixedRanker(), heldout, k=2, exclude=ratings([(0, 0), (0, 1)]))
    assert got["users"] == 2 and got["precision@2"] == pytest.approx((1 / 2 + 0) / 2)


def test_one_registry_gives_every_metric_direction():
    for key in ("val_rmse", "rmse", "loss", "train_rmse", "validation_rmse", "test_rmse"):
        assert direction(key) == "min", key
    for key in ("val_ndcg@10", "validation_ndcg@10", "test_map@5", "precision@3", "val_recall@2"):
        assert direction(key) == "max", key
    for bad in ("val_ndcg_at_10", "val_ndcg_at", "validation_bogus", "ndcg@x", "", None):  # one spelling
        with pytest.raises(ValueError, match=r"`metric` should be \[<split>_\]<name>\[@<k>\] .* Received: metric="):
            direction(bad)
    # its readers: the pipeline gate, the tuner's objective, the hypertune goal, the Keras logs' directions
    from pipeline.gate import higher_is_better
    from trainer.vertex import hypertune_metric
    from tuning.space import objective_name
    from wals2.config import WALSConfig
    from wals2.model import _log_directions
    from wals2.modes import mode_of

    assert higher_is_better("validation_ndcg@10") and not higher_is_better("validation_rmse")
    for mode, want in (("implicit", "max"), ("explicit", "min")):
        key, goal = objective_name(mode_of(WALSConfig(mode=mode)), 10)
        assert goal == want == direction(key)
        assert hypertune_metric(mode_of(WALSConfig(mode=mode)), 10)[1] == {"max": "MAXIMIZE", "min": "MINIMIZE"}[want]
    logs = {metric.name: metric._direction for metric in _log_directions((5, 10))[0].metrics}
    ranking = {f"{name}@{k}": "up" for k in (5, 10) for name in ("precision", "recall", "ndcg", "map")}
    assert logs == {"rmse": "down", "loss": "down", **ranking}
