"""Fold-in of new users: a naive float64 solve, the row half-sweep of training users, top-k and bad input."""

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from oracle import dense_problem, random_problem, solve_rows

from wals2 import Ratings, WALSConfig, WALSModel, fold_in, foldin
from wals2.modes import Tf1
from wals2.solver import fixed_side, half_sweep
from wals2.weights import item_weights

SHAPE = (40, 30)


@pytest.fixture(scope="module")
def problem():
    rows, cols, values = random_problem(5, shape=SHAPE, nnz=500, empty_rows=(2,), empty_cols=(9,))
    return Ratings(
        rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), np.arange(SHAPE[0]) + 1, np.arange(30)
    )


def fitted(problem, **overrides):
    params = dict(latent_factors=4, regularization=0.2, unobs_weight=0.05, seed=1, init="scaled")
    params.update(overrides)
    model = WALSModel(*SHAPE, **params)
    model.compile(jit_compile=False)
    model.fit(problem, epochs=3, verbose=0)
    return model


def naive(v, items, ratings, c, lam, w0):
    """One dense float64 solve per user: the oracle row update against fixed V."""
    n = v.shape[0]
    out = []
    for row, rated in zip(items, ratings):
        a, w, observed = dense_problem(np.zeros(len(row), int), row, rated, (1, n), None if c is None else [1.0], c, w0)
        out.append(solve_rows(a, w, observed, v, lam)[0] if len(row) else np.zeros(v.shape[1]))
    return np.array(out)


@pytest.mark.parametrize("weighted", [True, False])
def test_solve_matches_naive_float64(weighted):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((25, 5)).astype(np.float32)
    c = item_weights(rng.integers(0, 9, 25), 1, 30.0, 0.08) if weighted else None
    items = [[3, 7, 11], [0], [], [24, 1, 2, 5, 8, 13]]
    ratings = [[5.0, 1.0, 3.5], [2.0], [], [1.0, 4.0, 4.0, 0.5, 3.0, 2.0]]
    padded = np.full((4, 6), -1)
    values = np.zeros((4, 6), np.float32)
    for b, (row, rated) in enumerate(zip(items, ratings)):
        padded[b, : len(row)] = row
        values[b, : len(row)] = rated
    mode = Tf1(WALSConfig(regularization=0.3, unobs_weight=0.02))
    state = foldin.FoldInState(0.02, np.zeros(25, np.float32) if c is None else c, np.zeros(25, np.float32), 0.0, 0.0)
    got = foldin.solve(mode, v, padded, values, 0.3, state).numpy()
    want = naive(v.astype(np.float64), items, ratings, c, 0.3, 0.02)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not got[2].any()  # no ratings: the factor 0


@pytest.mark.parametrize(
    "overrides", [dict(wt_type="linear", feature_wt_factor=40.0), dict(wt_type="log", feature_wt_exp=0.5), {}]
)
def test_folding_in_a_training_user_gives_its_row_half_sweep_factor(problem, overrides):
    weights = overrides != {}
    model = fitted(problem, weights=weights, **overrides)
    cfg = model.config
    v = tf.convert_to_tensor(model.item_factors)
    swept = half_sweep(model.engine.rows_layout, v, cfg.regularization).numpy()
    users = [0, 1, 2, 7, 39]
    items = [problem.items[problem.users == u] for u in users]
    ratings = [problem.values[problem.users == u] for u in users]
    got = fold_in(model, items, ratings)
    np.testing.assert_allclose(got, swept[users], rtol=1e-4, atol=1e-5)
    assert not got[2].any()  # user 2 has no training ratings


def test_recommend_matches_argsort_and_excludes_rated_items(problem):
    model = fitted(problem)
    items = tf.ragged.constant([[0, 4, 5], [29], list(range(28))])
    ratings = tf.ragged.constant([[5.0, 3.0, 1.0], [4.0], [3.0] * 28])
    top, scores = foldin.recommend(model, items, ratings, k=4)
    u = fold_in(model, items, ratings)
    dense = u @ keras.ops.convert_to_numpy(model.item_factors).T
    for b, rated in enumerate(items.to_list()):
        allowed = np.setdiff1d(np.arange(SHAPE[1]), rated)
        order = allowed[np.argsort(-dense[b, allowed], kind="stable")][:4]
        valid = top[b] >= 0
        np.testing.assert_array_equal(top[b][valid], order)
        np.testing.assert_allclose(scores[b][valid], dense[b, order], rtol=1e-5, atol=1e-6)
    assert list(top[2][2:]) == [-1, -1] and np.all(np.isneginf(scores[2][2:]))  # only 2 unrated items left


@pytest.mark.parametrize(
    "items, ratings, message",
    [
        ([[1, 2]], [[1.0]], "same length"),
        ([[1]], [[1.0], [2.0]], "same number of users"),
        ([[30]], [[1.0]], r"item indices in \[0, 30\)"),
        ([[-1]], [[1.0]], r"item indices in \[0, 30\)"),
        ([[3, 3]], [[1.0, 2.0]], "should not repeat an item"),
        ([[3]], [[float("nan")]], "should be finite"),
        ([[3]], [[1e39]], "should be finite in float32"),
        ([[1.7]], [[1.0]], "should hold int item indices"),
        ([1, 2], [1.0, 2.0], "should hold one list per user"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(problem, items, ratings, message):
    model = fitted(problem)
    with pytest.raises(ValueError, match=message):
        fold_in(model, items, ratings)


def test_bad_k_and_a_weighted_model_without_seen_items(problem):
    model = fitted(problem)
    with pytest.raises(ValueError, match=r"`k` should be an integer in \[1, 30\]"):
        foldin.recommend(model, [[1]], [[1.0]], k=31)
    weighted = fitted(problem, weights=True, wt_type="linear", feature_wt_factor=40.0)
    weighted._seen = None  # as a model trained on several workers before set_seen_items
    with pytest.raises(ValueError, match="item_counts needs the training items"):
        fold_in(weighted, [[1]], [[1.0]])


@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_fold_in_reproduces_the_row_half_sweep_in_other_modes(problem, mode):
    model = fitted(problem, mode=mode, alpha=2.0, scale_regularization=mode == "explicit")
    cfg = model.config
    v = tf.convert_to_tensor(model.item_factors)
    if mode == "explicit":  # the row half solves [u, b] against [v, 1] with offsets c
        fixed = fixed_side(tf.concat([v, tf.convert_to_tensor(model.item_bias)[:, None]], axis=1), biases=True)
        swept = half_sweep(model.engine.rows_layout, fixed, cfg.regularization).numpy()
    else:
        swept = half_sweep(model.engine.rows_layout, v, cfg.regularization).numpy()
    users = [0, 1, 7, 39]
    items = [problem.items[problem.users == u] for u in users]
    ratings = [problem.values[problem.users == u] for u in users]
    got = fold_in(model, items, ratings)
    assert got.shape[1] == cfg.latent_factors + (mode == "explicit")
    np.testing.assert_allclose(got, swept[users], rtol=2e-4, atol=2e-5)


def test_the_implicit_mode_refuses_negative_ratings_as_fit_does(problem):
    model = fitted(problem, mode="implicit")
    with pytest.raises(ValueError, match=r"`ratings\[0\]` rating -5 is negative; the implicit mode needs ratings >= 0"):
        fold_in(model, [[1, 2]], [[-5.0, 3.0]])


def test_recalculate_user_and_recalculate_item_score_naive_solves(problem):
    """implicit's recalculate_user / recalculate_item: rows solved from the given entries (a naive float64 solve
    against the fixed other side), scored, nothing stored; the user indices only shape the result."""
    model = fitted(problem, weights=False)
    cfg = model.config
    u, v = (keras.ops.convert_to_numpy(f).astype(np.float64) for f in (model.user_factors, model.item_factors))
    items, ratings = [[3, 7, 11], [0, 5], [2, 9, 14, 20, 29]], [[5.0, 1.0, 3.5], [2.0, 4.0], [1.0, 1.0, 4.0, 2.5, 3.0]]
    user_items = sp.csr_array(
        (np.concatenate(ratings), np.concatenate(items), np.cumsum([0] + [len(r) for r in items])), shape=(3, SHAPE[1])
    )
    before = keras.ops.convert_to_numpy(model.user_factors).copy()
    # implicit's positional order: userid, user_items, N, filter_already_liked_items, filter_items, recalculate_user
    found, scores = model.recommend([500, 0, 7], user_items, 6, True, [13], True)
    want = naive(v, items, ratings, None, cfg.regularization, cfg.unobs_weight) @ v.T
    for row, rated in enumerate(items):
        allowed = np.ones(SHAPE[1], bool)
        allowed[rated + [13]] = False
        best = np.flatnonzero(allowed)[np.argsort(-want[row][allowed], kind="stable")][:6]
        np.testing.assert_allclose(scores[row], want[row][best], rtol=1e-4, atol=1e-5)
        assert set(found[row]) <= set(np.flatnonzero(allowed))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.user_factors), before)  # nothing stored
    one, _ = model.recommend(0, user_items[[1]], N=6, recalculate_user=True)
    np.testing.assert_array_equal(one, found[1])
    # an item solved from its users' ratings, against fixed U, then its cosine with every item factor
    users, by_users = [[1, 4, 8, 30]], [[4.0, 2.0, 5.0, 1.0]]
    item_users = sp.csr_array((by_users[0], users[0], [0, 4]), shape=(1, SHAPE[0]))
    top, sims = model.similar_items(6, 5, True, item_users)
    factor = naive(u, users, by_users, None, cfg.regularization, cfg.unobs_weight)[0]
    cosine = v @ factor / np.maximum(np.linalg.norm(v, axis=1) * np.linalg.norm(factor), 1e-10)
    np.testing.assert_allclose(sims, np.sort(cosine)[::-1][:5], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.recommend(0, user_items[1], N=6, recalculate_user=True)[0], one)  # 1-D row
    with pytest.raises(ValueError, match=r"`recalculate_user=True` solves the users from their rows of `user_items`"):
        model.recommend([0], recalculate_user=True)
    with pytest.raises(ValueError, match=r"`item_users` should have shape \(1, 40\)"):
        model.similar_items([6], recalculate_item=True, item_users=sp.csr_array((1, 30)))


def test_recalculate_item_weighs_the_item_by_its_given_row_as_partial_fit_items(problem):
    """tf1 mode with item weights: the recalculated item's C_j counts its given ratings, as partial_fit_items."""
    model = fitted(problem, weights=True, wt_type="linear", feature_wt_factor=40.0)
    item_users = sp.csr_array(([4.0, 2.0], ([0, 0], [1, 8])), shape=(1, SHAPE[0]))
    recalculated = model._recalculated(1, np.array([3]), item_users, ("item_indices", "item_users"))[0].numpy()
    clone = WALSModel.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    clone.set_seen_items(problem.users, problem.items, problem.values)
    clone.partial_fit_items([3], item_users)
    np.testing.assert_allclose(recalculated[0], keras.ops.convert_to_numpy(clone.item_factors)[3], rtol=1e-5, atol=1e-6)
