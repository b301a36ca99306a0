"""WALSModel's recommender API against numpy oracles: similar_items / similar_users (cosine by hand), recommend with
candidates and filters (brute force), recommend_all, raw ids, and the direction of the logs for Keras callbacks."""

import pathlib
import re

import keras
import numpy as np
import pytest
import scipy.sparse as sp
from oracle import random_problem

from wals2 import Ratings, WALSModel

SHAPE = (30, 25)
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ratings():
    rows, cols, values = random_problem(5, shape=SHAPE, nnz=260, empty_rows=(2,), empty_cols=(4,))
    user_ids = np.arange(SHAPE[0]) * 10 + 7
    item_ids = np.array([f"i{j:03d}" for j in range(SHAPE[1])])
    return Ratings(rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), user_ids, item_ids)


@pytest.fixture(scope="module")
def model(ratings):
    model = WALSModel(*SHAPE, mode="explicit", latent_factors=4, regularization=0.5, seed=2)
    model.compile()
    model.fit(ratings, epochs=2, verbose=0)
    return model


def numpy_of(variable):
    return keras.ops.convert_to_numpy(variable).astype(np.float64)


def check_ranking(got_items, got_scores, oracle_scores, allowed, k):
    """The returned slots are the k best allowed columns of ``oracle_scores`` (tie-robust), then -1 / -inf."""
    columns = np.flatnonzero(allowed)
    best = columns[np.argsort(-oracle_scores[columns], kind="stable")][:k]
    filled = min(k, columns.size)
    assert (got_items[:filled] >= 0).all() and (got_items[filled:] == -1).all()
    assert np.isneginf(got_scores[filled:]).all()
    assert allowed[got_items[:filled]].all()
    assert len(set(got_items[:filled].tolist())) == filled
    np.testing.assert_allclose(got_scores[:filled], oracle_scores[got_items[:filled]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_scores[:filled], oracle_scores[best], rtol=1e-5, atol=1e-5)


def cosine(factors):
    """Cosine similarity by hand; a zero vector (an empty row) has similarity 0 with everything, as in implicit."""
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    unit = factors / np.where(norms == 0, 1e-10, norms)
    return unit @ unit.T


def test_similar_items_and_users_are_the_cosine_of_the_factors(model):
    for method, factors in ((model.similar_items, model.item_factors), (model.similar_users, model.user_factors)):
        f = numpy_of(factors)
        sims = cosine(f)
        queries = np.arange(f.shape[0])
        found, scores = method(queries, k=6, batch_size=7)  # several batches
        assert found.shape == scores.shape == (f.shape[0], 6)
        assert found.dtype == np.int64 and scores.dtype == np.float32
        for q in queries:
            check_ranking(found[q], scores[q], sims[q], np.ones(f.shape[0], bool), 6)
        nonzero = np.linalg.norm(f, axis=1) > 0
        assert 1 <= (~nonzero).sum() <= 2  # the fixture's empty user row 2 / item column 4 have zero factors
        np.testing.assert_array_equal(found[nonzero, 0], queries[nonzero])  # the query itself first, as in implicit
        np.testing.assert_allclose(scores[nonzero, 0], 1.0, atol=1e-5)
        np.testing.assert_array_equal(scores[~nonzero], 0.0)


def test_similar_items_ignores_biases_and_handles_a_zero_vector():
    model = WALSModel(3, 4, mode="explicit", latent_factors=2)
    model.item_factors.assign(np.array([[1, 0], [2, 0.1], [0, 0], [-1, 0]], np.float32))
    model.item_bias.assign(np.array([0, -100, 100, 0], np.float32))
    found, scores = model.similar_items([0, 2], k=4)
    assert list(found[0]) == [0, 1, 2, 3]
    np.testing.assert_allclose(scores[0], [1, 2 / np.hypot(2, 0.1), 0, -1], atol=1e-6)
    np.testing.assert_allclose(scores[1], 0.0)  # a zero vector is similar to nothing


def test_similar_items_candidates_and_filters_by_brute_force(model):
    sims = cosine(numpy_of(model.item_factors))
    candidates, filtered = [0, 3, 5, 8, 9, 12, 20], [3, 9, 11]
    found, scores = model.similar_items([3, 5, 24], k=6, items=candidates, filter_items=filtered)
    allowed = np.zeros(SHAPE[1], bool)
    allowed[candidates] = True
    allowed[filtered] = False  # 4 candidates remain: two padded slots
    for row, query in enumerate([3, 5, 24]):
        check_ranking(found[row], scores[row], sims[query], allowed, 6)
    found, _ = model.similar_users([1], k=3, filter_users=[1])
    assert 1 not in found[0]


def test_recommend_candidates_filters_and_seen_by_brute_force(model, ratings):
    u, v = numpy_of(model.user_factors), numpy_of(model.item_factors)
    b, c, mu = numpy_of(model.user_bias), numpy_of(model.item_bias), float(model.global_mean.numpy())
    assert np.abs(c).max() > 0  # explicit mode: the biases take part in the ranking
    dense = mu + b[:, None] + c[None, :] + u @ v.T
    seen = sp.csr_array((np.ones(ratings.nnz), (ratings.users, ratings.items)), shape=SHAPE).toarray() > 0
    rng = np.random.default_rng(0)
    users = np.arange(SHAPE[0])
    for trial in range(4):
        candidates = rng.choice(SHAPE[1], size=12, replace=False) if trial % 2 else None
        filtered = rng.choice(SHAPE[1], size=5, replace=False) if trial >= 2 else None
        exclude = trial != 1
        found, scores = model.recommend(
            users, k=8, batch_size=9, items=candidates, filter_items=filtered, filter_already_liked_items=exclude
        )
        for user in users:
            allowed = np.ones(SHAPE[1], bool)
            if candidates is not None:
                allowed[:] = False
                allowed[candidates] = True
            if filtered is not None:
                allowed[filtered] = False
            if exclude:
                allowed &= ~seen[user]
            check_ranking(found[user], scores[user], dense[user], allowed, 8)


def test_exclude_seen_and_its_implicit_name_agree_or_raise(model):
    default = model.recommend([0, 1], k=5)
    np.testing.assert_array_equal(default[0], model.recommend([0, 1], k=5, exclude_seen=True)[0])
    np.testing.assert_array_equal(default[0], model.recommend([0, 1], k=5, filter_already_liked_items=True)[0])
    both = model.recommend([0, 1], k=5, exclude_seen=False, filter_already_liked_items=False)[0]
    np.testing.assert_array_equal(both, model.recommend([0, 1], k=5, exclude_seen=False)[0])
    with pytest.raises(ValueError, match="`exclude_seen` and `filter_already_liked_items` are one option"):
        model.recommend([0], k=5, exclude_seen=True, filter_already_liked_items=False)


def test_recommend_all_is_recommend_for_every_user(model):
    found, scores = model.recommend_all(k=4, batch_size=8, filter_items=[0, 1])
    want, want_scores = model.recommend(np.arange(SHAPE[0]), k=4, filter_items=[0, 1])
    assert found.shape == (SHAPE[0], 4)
    np.testing.assert_array_equal(found, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)  # other batch shapes: the matmul rounds apart
    assert not np.isin(found, [0, 1]).any()
    by_n, _ = model.recommend_all(N=5)  # implicit's name of k
    np.testing.assert_array_equal(by_n, model.recommend(np.arange(SHAPE[0]), k=5)[0])


def test_raw_ids_round_trip_through_the_index_calls(model, ratings):
    ids, scores = model.recommend_ids(ratings.user_ids[[3, 0]], k=4, filter_items=["i001", "i002"])
    found, want_scores = model.recommend([3, 0], k=4, filter_items=[1, 2])
    assert ids.shape == (2, 4)
    assert ids.tolist() == [[ratings.item_ids[j] if j >= 0 else None for j in row] for row in found]
    np.testing.assert_array_equal(scores, want_scores)
    ids, _ = model.similar_items_ids(["i005"], k=3, items=["i005", "i006"])
    assert ids[0, 0] == "i005" and set(ids[0, :2]) == {"i005", "i006"} and ids[0, 2] is None
    ids, _ = model.similar_users_ids([17], k=2)
    np.testing.assert_array_equal(ids[0], ratings.user_ids[model.similar_users([1], k=2)[0][0]])
    with pytest.raises(KeyError, match="unknown user id 8"):
        model.recommend_ids([7, 8, 9], k=2)
    with pytest.raises(KeyError, match="unknown item id 'nope'"):
        model.similar_items_ids(["i000"], k=2, filter_items=["i001", "nope"])


def test_set_vocabularies_in_any_order_and_its_errors(model, ratings):
    clone = WALSModel.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    clone.set_seen_items(ratings.users, ratings.items)
    with pytest.raises(ValueError, match=r"needs the raw ids: call fit\(ratings\)"):
        clone.recommend_ids([7], k=2)
    shuffled = np.random.default_rng(1).permutation(SHAPE[1])
    clone.set_vocabularies(ratings.user_ids, ratings.item_ids[shuffled])  # item index j has id item_ids[shuffled[j]]
    ids, _ = clone.similar_items_ids([ratings.item_ids[shuffled[6]]], k=3)
    found, _ = model.similar_items([6], k=3)
    assert ids[0].tolist() == ratings.item_ids[shuffled[found[0]]].tolist()
    with pytest.raises(ValueError, match=r"`item_ids` should be 1-D with 25 ids. Received shape \(3,\)"):
        clone.set_vocabularies(ratings.user_ids, ["a", "b", "c"])
    with pytest.raises(ValueError, match="`user_ids` should be distinct ids. Received 7 more than once"):
        clone.set_vocabularies(np.full(SHAPE[0], 7), ratings.item_ids)
    # float ids would be looked up as strings and never found: refused; Python ints in an object array are ints
    with pytest.raises(ValueError, match="`user_ids` should be integer or string ids .* Received dtype float64"):
        clone.set_vocabularies(np.arange(SHAPE[0]) + 0.5, ratings.item_ids)
    clone.set_vocabularies(np.array(ratings.user_ids.tolist(), dtype=object), ratings.item_ids)
    np.testing.assert_array_equal(clone.recommend_ids([17], k=3)[1], model.recommend([1], k=3)[1])


def test_bad_arguments_are_named(model):
    with pytest.raises(ValueError, match=r"`k` should be an integer in \[1, 25\]. Received: k=0"):
        model.similar_items([0], k=0)
    with pytest.raises(ValueError, match=r"`k` should be an integer in \[1, 30\]. Received: k=31"):
        model.similar_users([0], k=31)
    with pytest.raises(ValueError, match=r"`item_indices` should be in \[0, 25\). Received: min 0, max 25"):
        model.similar_items([0, 25], k=2)
    with pytest.raises(ValueError, match="`user_indices` should be a 1-D array of ints"):
        model.similar_users([0.5], k=2)
    with pytest.raises(ValueError, match=r"`filter_items` should be in \[0, 25\)"):
        model.recommend([0], k=2, filter_items=[-1])
    with pytest.raises(ValueError, match=r"`items` should be in \[0, 25\)"):
        model.recommend([0], k=2, items=[3, 99])
    with pytest.raises(ValueError, match="`items` should hold at least one index"):
        model.similar_items([0], k=2, items=[])
    with pytest.raises(ValueError, match="`filter_users` should be in"):
        model.similar_users([0], k=2, filter_users=[30])
    with pytest.raises(ValueError, match="`batch_size` should be a positive integer. Received: batch_size=0"):
        model.recommend_all(k=2, batch_size=0)
    with pytest.raises(ValueError, match=r"`N` should be an integer in \[1, 25\]. Received: N=0"):  # the name given
        model.recommend(0, N=0)
    with pytest.raises(ValueError, match=r"`N` should be an integer in \[1, 30\]. Received: N=31"):
        model.similar_users(0, N=31)


def test_early_stopping_on_val_rmse_needs_no_mode(ratings, tmp_path):
    """An overfitting fit (w0 = 0, tiny lambda, many factors): val_rmse rises and mode='auto' stops it."""
    train, test = ratings.split(0.3, seed=1)
    model = WALSModel(*SHAPE, latent_factors=12, regularization=1e-3, unobs_weight=0.0, seed=3)
    model.compile()
    stop = keras.callbacks.EarlyStopping(monitor="val_rmse", patience=1)
    metric_variables = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            metric_variables.extend(v for m in self.model.metrics for v in m.variables)

    history = model.fit(train, epochs=30, validation_data=test, callbacks=[stop, Record()], verbose=0)
    assert stop.monitor_op is keras.ops.less
    val = history.history["val_rmse"]
    assert len(val) < 30
    assert np.argmin(val) == len(val) - 2 and val[-1] > min(val)  # stopped at the first sweep that raised it
    assert metric_variables == []  # fit exposes no metric state to read
    loss_stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_rmse", save_best_only=True)
    checkpoint.set_model(model)
    checkpoint._set_monitor_op()
    assert checkpoint.monitor_op is keras.ops.less
    again = WALSModel(*SHAPE, latent_factors=3, compute_loss=True)
    again.compile()
    assert set(again.fit(train, epochs=2, callbacks=[loss_stop], verbose=0).history) == {"loss", "rmse"}
    assert loss_stop.monitor_op is keras.ops.less


def test_readme_library_examples_run(tmp_path, monkeypatch):
    """Every python block of the README's library section runs, in order, in one namespace (in a scratch dir)."""
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text()
    section = text.split("## The library", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2
    source = "\n".join(blocks).replace("epochs=20", "epochs=2")  # the same calls, fewer sweeps
    namespace = {}
    exec(compile(source, "README.md", "exec"), namespace)
    model, ratings = namespace["model"], namespace["ratings"]
    assert namespace["all_items"].shape == (ratings.num_users, 10)
    assert namespace["one"].shape == (10,) and namespace["one"].tolist() == namespace["all_items"][0].tolist()
    assert not np.isin(model.recommend([0], k=5, items=range(100), filter_items=[3, 7])[0], [3, 7]).any()
    np.testing.assert_array_equal(namespace["neighbours"][:, 0], [0, 1])
    assert 0 not in namespace["users"][0]
    assert namespace["ids"][0, 0] == ratings.item_ids[0]
    # partial fits: a new user and a new item, whose seen items are the rows given
    assert (model.num_users, model.num_items) == (ratings.num_users + 1, ratings.num_items + 1)
    assert not np.isin(namespace["later"], ratings.item_ids[[3, 7]]).any()
    new_item = model.num_items - 1  # rated by users 0 and 1
    assert set(model.recommend([0], k=model.num_items - 3)[0][0]) == set(range(model.num_items)) - {3, 7, new_item}
    # ranking logs, maximised by EarlyStopping, and the loaded model's answers
    ranked, history = namespace["ranked"], namespace["ranked_history"].history
    assert {"val_ndcg@10", "val_precision@10"} <= set(history) and namespace["stop"].monitor_op is keras.ops.greater
    assert 0 < history["val_ndcg@10"][-1] <= 1
    want, _ = ranked.recommend_ids(ratings.user_ids[:2], k=5, filter_already_liked_items=True)
    assert namespace["loaded_ids"].tolist() == want.tolist()


def test_implicit_calls_recommend_user_items_n_and_scalar_ids(model, ratings):
    u, v = numpy_of(model.user_factors), numpy_of(model.item_factors)
    b, c, mu = numpy_of(model.user_bias), numpy_of(model.item_bias), float(model.global_mean.numpy())
    dense = mu + b[:, None] + c[None, :] + u @ v.T
    # implicit: recommend(userid, user_items, N=...), user_items the users' rows, whose entries are excluded
    rng = np.random.default_rng(3)
    users = np.array([4, 11, 4])
    liked = (rng.random((3, SHAPE[1])) < 0.3).astype(np.float32)
    found, scores = model.recommend(users, sp.csr_array(liked), N=6, filter_already_liked_items=True)
    assert found.shape == scores.shape == (3, 6)
    for row, user in enumerate(users):
        check_ranking(found[row], scores[row], dense[user], liked[row] == 0, 6)
    one, one_scores = model.recommend(11, sp.csr_array(liked)[[1]], N=6)  # a scalar id: 1-D, as in implicit
    assert one.shape == one_scores.shape == (6,)
    np.testing.assert_array_equal(one, found[1])
    unfiltered, _ = model.recommend(4, sp.csr_array(liked)[[0]], N=SHAPE[1], filter_already_liked_items=False)
    assert sorted(unfiltered.tolist()) == list(range(SHAPE[1]))
    ids, _ = model.recommend_ids(ratings.user_ids[11], N=6)
    assert ids.shape == (6,) and ids.tolist() == ratings.item_ids[model.recommend(11, N=6)[0]].tolist()
    # similar_items(itemid, N=...): 1-D for a scalar id, 2-D for an array of ids
    sims = cosine(v)
    top, values = model.similar_items(3, N=4)
    assert top.shape == values.shape == (4,)
    check_ranking(top, values, sims[3], np.ones(SHAPE[1], bool), 4)
    assert model.similar_items([3], N=4)[0].shape == (1, 4)
    assert model.similar_users(5, N=3)[0].shape == (3,)
    assert model.similar_items_ids(ratings.item_ids[3], N=4)[0].tolist() == ratings.item_ids[top].tolist()
    # implicit's positional orders: recommend(userid, user_items, N, filter_already_liked_items, filter_items) and
    # similar_items(itemid, N, recalculate_item, item_users, filter_items)
    positional = model.recommend(users, sp.csr_array(liked), 6, True, [0, 1])
    keywords = model.recommend(users, sp.csr_array(liked), N=6, filter_already_liked_items=True, filter_items=[0, 1])
    np.testing.assert_array_equal(positional[0], keywords[0])
    assert not np.isin(positional[0], [0, 1]).any()
    by_position = model.similar_items(3, 4, False, None, [3])[0]
    np.testing.assert_array_equal(by_position, model.similar_items(3, 4, filter_items=[3])[0])
    with pytest.raises(ValueError, match="`k` and `N` are one option; pass one of them. Received: k=3, N=4"):
        model.recommend(0, k=3, N=4)
    with pytest.raises(ValueError, match=r"`user_items` should have shape \(2, 25\) \(one row per user\)"):
        model.recommend([0, 1], sp.csr_array(liked))


def test_keras_calls_fit_x_y_predict_and_export(ratings, tmp_path):
    pairs, values = ratings.pairs(), ratings.values
    by_pairs = WALSModel(*SHAPE, mode="explicit", latent_factors=4, regularization=0.5, seed=2)
    by_pairs.compile()
    by_pairs.fit(pairs, values, epochs=2, verbose=0)  # Keras' fit(x, y): x the (user, item) pairs, y the ratings
    by_matrix = WALSModel(*SHAPE, mode="explicit", latent_factors=4, regularization=0.5, seed=2)
    by_matrix.compile()
    by_matrix.fit(ratings.to_csr(), epochs=2, verbose=0)
    # the same sweeps (the entries in another order: float32 sums differ in the last bits)
    np.testing.assert_allclose(numpy_of(by_pairs.user_factors), numpy_of(by_matrix.user_factors), atol=1e-5)
    # predict: the default batch is 4,096 pairs (one step here), the numpy prediction clipped to the range
    u, v = numpy_of(by_pairs.user_factors), numpy_of(by_pairs.item_factors)
    b, c, mu = numpy_of(by_pairs.user_bias), numpy_of(by_pairs.item_bias), float(by_pairs.global_mean.numpy())
    want = np.clip(mu + b[pairs[:, 0]] + c[pairs[:, 1]] + np.sum(u[pairs[:, 0]] * v[pairs[:, 1]], axis=1), 1, 5)
    steps = []
    callback = keras.callbacks.LambdaCallback(on_predict_batch_end=lambda batch, logs: steps.append(batch))
    np.testing.assert_allclose(by_pairs.predict(pairs, verbose=0, callbacks=[callback]), want, rtol=1e-5, atol=1e-5)
    assert len(steps) == 1  # 260 pairs in one batch of 4,096, not 9 of Keras' 32
    with pytest.raises(ValueError, match=r"`fit\(x, y\)` should be \(pairs \[b, 2\], ratings \[b\]\)"):
        by_pairs.fit(pairs, values[:-1], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"`fit\(x, y\)` user indices should be in \[0, 30\)"):
        by_pairs.fit(pairs + [30, 0], values, epochs=1, verbose=0)
    # export(path): the serving SavedModel, whose score signature is the model's prediction
    by_pairs.set_vocabularies(ratings.user_ids, ratings.item_ids)
    module = by_pairs.export(str(tmp_path / "serving"))
    got = module.score(ratings.user_ids[pairs[:, 0]].astype(str), ratings.item_ids[pairs[:, 1]].astype(str))
    np.testing.assert_allclose(got["scores"].numpy(), want, rtol=1e-5, atol=1e-5)
