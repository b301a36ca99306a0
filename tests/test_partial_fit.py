"""partial_fit_users / partial_fit_items against a naive float64 solve of each row's normal equation (dense weights,
one np.linalg.solve per row), in every mode; new users and items; raw ids; seen items; bad input."""

import keras
import numpy as np
import pytest
import scipy.sparse as sp
from oracle import random_problem

from wals2 import Ratings, WALSModel

SHAPE = (30, 25)
MODES = {
    "tf1": dict(mode="tf1", weights=True, wt_type=1, feature_wt_factor=40.0, unobs_weight=0.1),
    "tf1-plain": dict(mode="tf1", weights=False, unobs_weight=0.1),
    "implicit": dict(mode="implicit", alpha=2.0),
    "explicit": dict(mode="explicit", scale_regularization=True),
}


@pytest.fixture(scope="module")
def ratings():
    rows, cols, values = random_problem(7, shape=SHAPE, nnz=260, empty_rows=(2,), empty_cols=(4,))
    item_ids = np.array([f"i{j:03d}" for j in range(SHAPE[1])])
    return Ratings(
        rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), np.arange(30) + 100, item_ids
    )


def fitted(ratings, name, raw_ids=False):
    """A model fitted on ``ratings`` (with its raw ids), or on their matrix (indices only: new indices may grow it)."""
    model = WALSModel(*SHAPE, latent_factors=3, regularization=0.3, seed=4, init="scaled", **MODES[name])
    model.compile()
    matrix = sp.csr_array((ratings.values, (ratings.users, ratings.items)), shape=SHAPE)
    model.fit(ratings if raw_ids else matrix, epochs=2, verbose=0)
    return model


def numpy_of(variable):
    return keras.ops.convert_to_numpy(variable).astype(np.float64)


def naive_rows(model, axis, dense, observed, counts):
    """argmin over each query row x of sum_j W_j (a_j - x.t_j)^2 + lambda_x |x|^2, float64, by the mode's rules.

    ``dense`` / ``observed``: the query rows [b, other] (ratings, mask); ``counts``: n_j of the tf1 item weights
    (the items' positive counts after the fit), the whole item axis.
    """
    cfg = model.config
    fixed = numpy_of([model.item_factors, model.user_factors][axis])
    offsets = numpy_of([model.item_bias, model.user_bias][axis]) + float(model.global_mean.numpy())
    out = []
    for q in range(dense.shape[0]):
        obs, r = observed[q], dense[q]
        table = fixed
        if cfg.mode == "tf1":
            w0 = cfg.unobs_weight
            c = np.where(counts > 0, cfg.feature_wt_factor / np.maximum(counts, 1), 0.0) if cfg.weights else None
            d = np.zeros(obs.shape) if c is None else (c if axis == 0 else np.full(obs.shape, c[q]))
            weights, targets = np.where(obs, w0 + d, w0), np.where(obs, r, 0.0)
        elif cfg.mode == "implicit":
            weights, targets = np.where(obs, 1.0 + cfg.alpha * r, 1.0), obs.astype(float)
        else:  # explicit: [x, b] against [t, 1], targets r - mu - offset, only the observed entries
            table = np.concatenate([fixed, np.ones((fixed.shape[0], 1))], axis=1)
            weights, targets = obs.astype(float), np.where(obs, r - offsets, 0.0)
        lam = cfg.regularization * (obs.sum() if cfg.scale_regularization else 1.0)
        lhs = lam * np.eye(table.shape[1]) + (table * weights[:, None]).T @ table
        out.append(np.linalg.solve(lhs, table.T @ (weights * targets)))
    return np.array(out)


def new_rows(seed, count, width, per_row=6):
    rng = np.random.default_rng(seed)
    dense = np.zeros((count, width))
    for q in range(count):
        dense[q, rng.choice(width, size=per_row, replace=False)] = rng.integers(1, 6, size=per_row)
    return dense


@pytest.mark.parametrize("name", sorted(MODES))
def test_partial_fit_users_is_the_naive_row_solve(ratings, name):
    model = fitted(ratings, name)
    before_u = numpy_of(model.user_factors)
    before_v = numpy_of(model.item_factors)
    users = np.array([0, 5, 2, 31])  # 2 had no training ratings; 31 is new (30 gets zero factors)
    dense = new_rows(1, users.size, SHAPE[1])
    train = sp.csr_array((ratings.values, (ratings.users, ratings.items)), shape=SHAPE).toarray()
    train = np.vstack([train, np.zeros((2, SHAPE[1]))])
    train[users] = dense  # the rows are replaced: the counts n_j follow
    counts = (train > 0).sum(axis=0)
    if name == "tf1-plain":  # a Ratings of shape (b, num_items) is accepted too
        r, c = np.nonzero(dense)
        model.partial_fit_users(users, Ratings(r, c, dense[r, c].astype(np.float32), np.arange(4), np.arange(25)))
    else:
        model.partial_fit_users(users, sp.csr_array(dense))
    want = naive_rows(model, 0, dense, dense != 0, counts)
    k = model.config.latent_factors
    assert model.num_users == 32 and model.user_factors.shape == (32, k)
    after = numpy_of(model.user_factors)
    np.testing.assert_allclose(after[users], want[:, :k], rtol=2e-4, atol=2e-5)
    if model.mode.biases:
        np.testing.assert_allclose(numpy_of(model.user_bias)[users], want[:, k], rtol=2e-4, atol=2e-5)
    others = np.setdiff1d(np.arange(30), users)
    np.testing.assert_array_equal(after[others], before_u[others])  # only the given rows move
    np.testing.assert_array_equal(after[30], 0.0)
    np.testing.assert_array_equal(numpy_of(model.item_factors), before_v)  # the other side is fixed
    top, _ = model.recommend(users, k=SHAPE[1] - 6, filter_already_liked_items=True)
    for row in range(users.size):  # exactly the unrated items of the new row remain
        assert set(top[row].tolist()) == set(np.flatnonzero(dense[row] == 0).tolist())


@pytest.mark.parametrize("name", sorted(MODES))
def test_partial_fit_items_new_and_existing_is_the_naive_column_solve(ratings, name):
    model = fitted(ratings, name)
    before_v = numpy_of(model.item_factors)
    items = np.array([26, 3])  # 25 gets zero factors
    dense = new_rows(2, items.size, SHAPE[0], per_row=8)
    counts = (dense > 0).sum(axis=1)  # n_j of each query item: its new column
    model.partial_fit_items(items, sp.csr_array(dense))
    want = naive_rows(model, 1, dense, dense != 0, np.asarray(counts))
    k = model.config.latent_factors
    after = numpy_of(model.item_factors)
    assert model.num_items == 27 and after.shape == (27, k)
    np.testing.assert_allclose(after[items], want[:, :k], rtol=2e-4, atol=2e-5)
    if model.mode.biases:
        np.testing.assert_allclose(numpy_of(model.item_bias)[items], want[:, k], rtol=2e-4, atol=2e-5)
    np.testing.assert_array_equal(after[25], 0.0)
    np.testing.assert_array_equal(after[:25][np.arange(25) != 3], before_v[np.arange(25) != 3])
    # Seen items: item 3's old users no longer have it, its new users do.
    raters = np.flatnonzero(dense[1])
    top, _ = model.recommend(np.arange(30), k=27, filter_already_liked_items=True)
    for user in range(30):
        assert (3 in top[user]) == (user not in raters)
        assert (26 in top[user]) == (user not in np.flatnonzero(dense[0]))


def test_partial_fit_by_raw_ids_grows_the_vocabularies_then_recommends_exports_and_saves(ratings, tmp_path):
    model = fitted(ratings, "implicit", raw_ids=True)
    new_item = Ratings(
        np.array([0, 1, 2]),
        np.zeros(3, np.int32),
        np.array([5.0, 4.0, 3.0], np.float32),
        np.array([100, 101, 107]),
        np.array(["i999"]),
    )
    model.partial_fit_items_ids(["i999"], new_item)
    assert model.num_items == 26
    ids, _ = model.similar_items_ids(["i999"], k=1)
    assert ids[0, 0] == "i999"
    users = np.array([100, 101, 107])
    seen = model.recommend_ids(users, k=25)[0]
    assert not (seen == "i999").any()  # seen for its raters
    model.partial_fit_users_ids(np.array([500.0, 100.0]), sp.csr_array(new_rows(3, 2, 26)))  # one new, one known
    assert model.num_users == 31  # 500.0 is the int id 500 of this vocabulary, as recommend_ids reads it
    item_ids = np.concatenate([ratings.item_ids, ["i999"]])
    assert model.recommend_ids([500], k=3)[0].tolist() == [item_ids[model.recommend([30], k=3)[0][0]].tolist()]
    # export: the grown model as it is, its vocabularies and seen items included
    module = model.export(str(tmp_path / "export"), top_k=3)
    for user in (105, 100, 500):  # one untouched, one refitted, one new
        served = module.recommend(user_id=np.array([str(user)]), k=3)
        want = model.recommend_ids([user], k=3)[0]
        assert [x.decode() for x in served["item_ids"].numpy()[0]] == want[0].tolist()
    served = module.recommend(user_id=np.array(["107"]), k=26)  # i999 is among 107's seen items
    assert b"i999" not in served["item_ids"].numpy()[0].tolist()
    # the state as saved: the grown counts, entries of the new item and the new user included
    grown = sp.csr_array(
        (
            np.concatenate([ratings.values, [5.0, 4.0, 3.0]]),
            (np.concatenate([ratings.users, [0, 1, 7]]), np.concatenate([ratings.items, [25, 25, 25]])),
        ),
        shape=(30, 26),
    ).toarray()
    grown = np.vstack([grown, np.zeros((1, 26))])
    grown[[30, 0]] = new_rows(3, 2, 26)
    np.testing.assert_array_equal(model.item_counts(), (grown != 0).sum(axis=0))
    grown = Ratings(
        *(np.nonzero(grown) + (grown[np.nonzero(grown)].astype(np.float32),)),
        np.concatenate([ratings.user_ids, [500]]),
        np.concatenate([ratings.item_ids, ["i999"]]),
    )
    path = tmp_path / "grown.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert (loaded.num_users, loaded.num_items) == (31, 26)
    np.testing.assert_array_equal(numpy_of(loaded.item_factors), numpy_of(model.item_factors))
    names = ["user_factors", "item_factors", "user_bias", "item_bias", "global_mean", "rating_range"]
    assert [v.name for v in model.weights] == names  # grown in place of the old variables, in their order
    with pytest.raises(ValueError, match="no training data was given to fit"):
        model.fit(epochs=1, verbose=0)  # the old training matrix is gone
    model.fit(grown, epochs=1, verbose=0)  # the grown shape trains
    assert model.recommend_all(k=2)[0].shape == (31, 2)


def test_bad_partial_fit_input_is_named(ratings):
    model = fitted(ratings, "implicit", raw_ids=True)
    rows = sp.csr_array(new_rows(4, 2, SHAPE[1]))
    with pytest.raises(ValueError, match=r"`user_indices` should be distinct indices >= 0. Received: \[3, 3\]"):
        model.partial_fit_users([3, 3], rows)
    with pytest.raises(ValueError, match=r"`user_items` should have shape \(2, 25\). Received: \(2, 24\)"):
        model.partial_fit_users([3, 4], sp.csr_array(np.ones((2, 24))))
    with pytest.raises(ValueError, match="`item_users` rating -1 is negative"):
        model.partial_fit_items([0], sp.csr_array(-np.ones((1, SHAPE[0]))))
    with pytest.raises(
        ValueError, match="new rows without a raw id: the model has raw ids, call partial_fit_users_ids"
    ):
        model.partial_fit_users([40, 4], rows)
    with pytest.raises(KeyError, match="unknown item id 'nope'"):
        model.partial_fit_users_ids(
            [100],
            Ratings(np.array([0]), np.array([0]), np.array([1.0], np.float32), np.array([100]), np.array(["nope"])),
        )
    with pytest.raises(TypeError, match="`user_items` should be a wals2.Ratings, a tf.SparseTensor or a scipy"):
        model.partial_fit_users([0], [[1, 2]])
    with pytest.raises(
        ValueError, match="`max_new_users` should be a non-negative integer. Received: max_new_users=-1"
    ):
        model.partial_fit_users([0], sp.csr_array(np.ones((1, 25))), max_new_users=-1)
    assert (model.num_users, model.num_items) == SHAPE  # nothing grew


def test_growth_is_bounded_before_anything_is_allocated(ratings):
    model = fitted(ratings, "implicit")
    row = sp.csr_array(new_rows(5, 1, SHAPE[1]))
    with pytest.raises(
        ValueError,
        match=r"`user_indices` would add 19999971 users \(up to index 20000000; the model "
        r"has 30\), more than `max_new_users`=100000",
    ):
        model.partial_fit_users([2 * 10**7], row)  # fails fast: no 2.4 GB of factors
    with pytest.raises(ValueError, match="`item_indices` would add 3 items .* more than `max_new_items`=2"):
        model.partial_fit_items([27], sp.csr_array(new_rows(6, 1, SHAPE[0])), max_new_items=2)
    assert (model.num_users, model.num_items) == SHAPE and model.user_factors.shape == (30, 3)
    model.partial_fit_users([31], row, max_new_users=2)  # within the bound
    assert model.num_users == 32


@pytest.mark.parametrize("name", ["implicit", "tf1"])
def test_a_failed_partial_fit_changes_nothing(ratings, name):
    model = fitted(ratings, name)
    state = [numpy_of(v) for v in model.weights]
    seen = (model._seen.indptr.copy(), model._seen.items.copy(), model._seen.positive.copy())
    raters = ratings.users[ratings.items == 10]
    dense = np.zeros((2, SHAPE[0]))
    dense[0, raters[:1]] = 3e38  # finite, but its solve overflows float32
    dense[1, :4] = 1.0
    with pytest.raises(
        ValueError,
        match=r"`item_users` row 0 \(item 10\): the solution is not finite, .*\(largest "
        r"\|rating\| 3e\+38\); the model is unchanged",
    ):
        model.partial_fit_items([10, 30], sp.csr_array(dense))
    assert (model.num_users, model.num_items) == SHAPE  # item 30 was not added
    for before, variable in zip(state, model.weights):
        np.testing.assert_array_equal(numpy_of(variable), before)
    for before, after in zip(seen, (model._seen.indptr, model._seen.items, model._seen.positive)):
        np.testing.assert_array_equal(after, before)
    top, _ = model.recommend(raters, k=SHAPE[1] - 1)
    assert not (top == 10).any()  # item 10 stays seen for its raters
