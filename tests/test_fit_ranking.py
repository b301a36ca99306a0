"""fit(ranking_k=k) / evaluate(ranking_k=k): val_ndcg@<k> and val_precision@<k> against a numpy computation
(dense scores, argsort, DCG by hand), a hand case, and their direction for EarlyStopping."""

import math

import keras
import numpy as np
import pytest
from oracle import random_problem

from wals2 import Ratings, WALSModel

SHAPE = (30, 25)


@pytest.fixture(scope="module")
def split():
    rows, cols, values = random_problem(11, shape=SHAPE, nnz=300, empty_rows=(2,), empty_cols=(4,))
    ratings = Ratings(
        rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), np.arange(30), np.arange(25)
    )
    return ratings.split(0.25, seed=3)


def numpy_ranking(model, train, heldout, k):
    """Mean NDCG@k and precision@k over the held-out users: dense u.v scores, training items masked, argsort."""
    u = keras.ops.convert_to_numpy(model.user_factors).astype(np.float64)
    v = keras.ops.convert_to_numpy(model.item_factors).astype(np.float64)
    scores = u @ v.T
    scores[train.users, train.items] = -np.inf
    ndcg, precision = [], []
    for user in np.unique(heldout.users):
        relevant = set(heldout.items[heldout.users == user].tolist())
        top = np.argsort(-scores[user], kind="stable")[:k]
        hits = [int(item) in relevant for item in top]
        dcg = sum(1 / math.log2(rank + 2) for rank, hit in enumerate(hits) if hit)
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
        ndcg.append(dcg / ideal)
        precision.append(sum(hits) / k)
    return float(np.mean(ndcg)), float(np.mean(precision))


def test_fit_logs_the_ranking_of_the_validation_users_every_sweep(split):
    train, test = split
    model = WALSModel(*SHAPE, mode="implicit", latent_factors=4, regularization=0.5, alpha=2.0, seed=1)
    model.compile()
    history = model.fit(train, epochs=2, validation_data=test, ranking_k=5, verbose=0).history
    assert set(history) == {"rmse", "val_rmse", "val_ndcg@5", "val_precision@5"}
    assert len(history["val_ndcg@5"]) == 2
    ndcg, precision = numpy_ranking(model, train, test, 5)  # the last sweep's factors are the model's
    assert history["val_ndcg@5"][-1] == pytest.approx(ndcg, abs=1e-9)
    assert history["val_precision@5"][-1] == pytest.approx(precision, abs=1e-9)
    results = model.evaluate(test, ranking_k=5, return_dict=True, verbose=0)
    assert results["ndcg@5"] == pytest.approx(ndcg, abs=1e-9)
    assert results["precision@5"] == pytest.approx(precision, abs=1e-9)
    assert results["rmse"] == pytest.approx(history["val_rmse"][-1], rel=1e-5)


def test_evaluate_ranking_on_a_hand_case():
    """Items score j for user 0 (u = [1, 0]) and -j for user 1; user 0 saw item 4; k = 2.

    User 0: top (3, 2), relevant {0, 2}: a hit at rank 2, DCG 1/log2(3), IDCG 1 + 1/log2(3), precision 1/2.
    User 1: top (0, 1), relevant {1}: a hit at rank 2, DCG 1/log2(3), IDCG 1, precision 1/2. User 2: none, skipped.
    """
    model = WALSModel(3, 5, latent_factors=2)
    model.compile()
    model.user_factors.assign(np.array([[1, 0], [-1, 0], [0, 1]], np.float32))
    model.item_factors.assign(np.array([[j, 0] for j in range(5)], np.float32))
    model.set_seen_items([0], [4])
    heldout = Ratings(np.array([0, 0, 1]), np.array([0, 2, 1]), np.ones(3, np.float32), np.arange(3), np.arange(5))
    rmse, ndcg, precision = model.evaluate(heldout, ranking_k=2, verbose=0)
    third = 1 / math.log2(3)
    assert ndcg == pytest.approx((third / (1 + third) + third) / 2)
    assert precision == pytest.approx(0.5)
    assert rmse == pytest.approx(math.sqrt(((1 - 0) ** 2 + (1 - 2) ** 2 + (1 - -1) ** 2) / 3), rel=1e-6)


def test_early_stopping_maximises_val_ndcg_without_a_mode(split):
    train, test = split
    model = WALSModel(*SHAPE, mode="implicit", latent_factors=12, regularization=1e-3, alpha=20.0, seed=5)
    model.compile()
    stop = keras.callbacks.EarlyStopping(monitor="val_ndcg@10", patience=1)
    val = model.fit(train, epochs=12, validation_data=test, ranking_k=10, callbacks=[stop], verbose=0).history
    val = val["val_ndcg@10"]
    assert stop.monitor_op is keras.ops.greater
    # patience 1: it stops at the first sweep that does not beat the best so far (a maximum)
    improving = [val[i] > max(val[:i]) for i in range(1, len(val))]
    assert all(improving[:-1]) and (len(val) == 12 or not improving[-1])
    assert 2 <= len(val) < 12  # the overfitting fit does stop


def test_a_heldout_ranking_callback_tells_early_stopping_its_direction(split):
    """Any metric of a HeldoutRanking at any k (here MAP@4, given as one name) is one mode="auto" maximises."""
    from wals2.callbacks import HeldoutRanking

    train, test = split
    model = WALSModel(*SHAPE, mode="implicit", latent_factors=6, seed=5)
    model.compile()
    stop = keras.callbacks.EarlyStopping(monitor="val_map@4", patience=1)
    history = model.fit(train, epochs=3, callbacks=[HeldoutRanking(test, 4, names="map"), stop], verbose=0).history
    assert stop.monitor_op is keras.ops.greater
    assert {"rmse", "val_map@4"} <= set(history)
    with pytest.raises(ValueError, match="`k` should be a positive integer. Received: k=0"):
        HeldoutRanking(test, 0)


def test_ranking_arguments_are_checked(split):
    train, test = split
    model = WALSModel(*SHAPE, latent_factors=2)
    model.compile()
    with pytest.raises(ValueError, match=r"`ranking_k` should be an integer in \[1, 25\]. Received: ranking_k=0"):
        model.fit(train, epochs=1, validation_data=test, ranking_k=0, verbose=0)
    with pytest.raises(ValueError, match="`ranking_k` needs `validation_data` as a wals2.Ratings"):
        model.fit(train, epochs=1, validation_data=(test.pairs(), test.values), ranking_k=5, verbose=0)
    with pytest.raises(ValueError, match="`ranking_k` needs `x` as a wals2.Ratings"):
        model.evaluate(test.pairs(), test.values, ranking_k=5, verbose=0)


def test_keras_tuner_maximises_the_ranking_log(split, tmp_path):
    kt = pytest.importorskip("keras_tuner")
    train, test = split

    def build(hp):
        model = WALSModel(*SHAPE, mode="implicit", latent_factors=hp.Choice("k", [2, 4]), seed=1)
        model.compile()
        return model

    tuner = kt.GridSearch(build, objective=kt.Objective("val_ndcg@5", "max"), directory=str(tmp_path), project_name="p")
    tuner.search(train, epochs=1, validation_data=test, ranking_k=5, verbose=0)
    trials = tuner.oracle.get_best_trials(2)
    assert len(trials) == 2 and trials[0].score >= trials[1].score  # best first: the larger NDCG
    best = tuner.get_best_models(1)[0]
    best.set_seen_items(train.users, train.items)
    assert trials[0].score == pytest.approx(numpy_ranking(best, train, test, 5)[0], abs=1e-9)
