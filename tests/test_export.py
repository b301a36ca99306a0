"""The serving SavedModel: fresh-process reload, top-k against the Keras model and a numpy argsort, size, errors."""

import ast
import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from oracle import random_problem

import wals2
from wals2 import Ratings, WALSModel, export_saved_model, foldin

TOP_K = 10
USERS = ["1", "2", "77", "300", "610", "0", "611", "not-a-user", ""]  # the last four are not in latest-small
ITEMS = ["1", "50", "260", "2571", "4993", "no-item", ""]  # the last two are not in latest-small
# recommend_from: user 1 rated items 1, 3 and 6 (excluded); "no-item" and "" are ignored, a repeat counts once.
FROM_USERS = ["1", "610", "nobody"]
CANDIDATES = [
    ["1", "3", "6", "2", "no-item", "4", "", "2"],
    ["1", "50", "260", "2571", "2", "3", "4", "5"],
    ["296", "1", "no-item", "318", "", "", "", ""],
]


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    ratings = wals2.load_bundled()
    train, _ = ratings.split(0.1, seed=0)
    model = WALSModel(ratings.num_users, ratings.num_items, latent_factors=5, seed=0)
    model.compile(jit_compile=False)
    model.fit(train, epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("export") / "saved"
    module = export_saved_model(model, str(path), top_k=TOP_K)
    return model, train, path, module


def oracle_top_k(model, train, user_index, k):
    """float64 scores of one user, training items at -inf, and the top k by a stable argsort."""
    u = keras.ops.convert_to_numpy(model.user_factors).astype(np.float64)[user_index]
    scores = keras.ops.convert_to_numpy(model.item_factors).astype(np.float64) @ u
    scores[train.items[train.users == user_index]] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores


def assert_same_top_k(item_ids, scores, train, order, oracle_scores, vocabulary=None):
    """Same items in the same order, except where the oracle's neighbouring scores tie within float32 noise.

    ``vocabulary`` (default: the item ids of ``train``) names the indices in ``order``."""
    want = (train.item_ids if vocabulary is None else vocabulary)[order].astype(str)
    np.testing.assert_allclose(scores, oracle_scores[order], rtol=1e-4, atol=1e-4)
    gaps = np.abs(np.diff(oracle_scores[np.argsort(-oracle_scores, kind="stable")[: len(order) + 1]]))
    clear = (np.concatenate([[np.inf], gaps[:-1]]) > 1e-4) & (gaps > 1e-4)
    assert [i for i, c in zip(item_ids, clear) if c] == [w for w, c in zip(want, clear) if c]


def never_rated(train, count=2) -> list[str]:
    """Ids of items in the vocabulary without training ratings (their factor is 0: "unknown" to serving)."""
    return train.item_ids[train.item_counts() == 0][:count].astype(str).tolist()


def cosine_oracle(factors, query):
    """float64 cosine of row ``query`` of ``factors`` with every row (a zero row has cosine 0 with everything)."""
    factors = keras.ops.convert_to_numpy(factors).astype(np.float64)
    norms = np.linalg.norm(factors, axis=1)
    unit = factors / np.where(norms > 0, norms, 1.0)[:, None]
    return unit @ unit[query]


FRESH_PROCESS = """
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
users = tf.constant(json.loads(sys.argv[2]))
out = {}
for name, kwargs in [
    ("serving_default", dict(user_id=users)),
    ("recommend", dict(user_id=users, k=tf.constant(7))),
    ("score", dict(user_id=tf.constant(["1", "1", "nobody"]), item_id=tf.constant(["1", "no-item", "1"]))),
    ("fold_in_recommend", dict(item_ids=tf.constant([["1", "50", "260"], ["x", "", ""]]),
                               ratings=tf.constant([[5.0, 4.0, 1.0], [3.0, 0.0, 0.0]]))),
    ("similar_items", dict(item_id=tf.constant(json.loads(sys.argv[3])), k=tf.constant(7))),
    ("similar_users", dict(user_id=users, k=tf.constant(6))),
    ("recommend_from", dict(user_id=tf.constant(json.loads(sys.argv[4])),
                            candidate_item_ids=tf.constant(json.loads(sys.argv[5])), k=tf.constant(4))),
]:
    result = loaded.signatures[name](**kwargs)
    out[name] = {key: value.numpy().tolist() for key, value in result.items()}
print(json.dumps(out, default=lambda b: b.decode()))
"""


@pytest.fixture(scope="module")
def fresh(bundled):
    _, train, path, _ = bundled
    out = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(path), json.dumps(USERS), json.dumps(ITEMS + never_rated(train))]
        + [json.dumps(FROM_USERS), json.dumps(CANDIDATES)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_process_top_k_matches_the_model_and_a_numpy_argsort(bundled, fresh):
    model, train, _, module = bundled
    in_process = module.serve(tf.constant(USERS))
    for name, k in (("serving_default", TOP_K), ("recommend", 7)):
        got = fresh[name]
        assert np.array(got["item_ids"]).shape == (len(USERS), k)
        assert got["known_user"] == [True] * 5 + [False] * 4
        for row, user in enumerate(USERS[:5]):
            index = int(train.user_index([int(user)])[0])
            order, oracle_scores = oracle_top_k(model, train, index, k)
            assert_same_top_k(got["item_ids"][row], got["scores"][row], train, order, oracle_scores)
            items, scores = model.recommend([index], k=k)
            assert got["item_ids"][row] == train.item_ids[items[0]].astype(str).tolist()
            np.testing.assert_allclose(got["scores"][row], scores[0], rtol=1e-5, atol=1e-5)
    # The reloaded SavedModel answers exactly as the module did in process.
    assert fresh["serving_default"]["item_ids"] == in_process["item_ids"].numpy().astype(str).tolist()
    np.testing.assert_array_equal(fresh["serving_default"]["scores"], in_process["scores"].numpy())


def test_unknown_users_get_the_most_popular_items_flagged(bundled, fresh):
    _, train, _, _ = bundled
    counts = train.item_counts()
    popular = train.item_ids[np.lexsort((np.arange(counts.size), -counts))[:TOP_K]].astype(str).tolist()
    for row in range(5, len(USERS)):
        assert fresh["serving_default"]["item_ids"][row] == popular
        assert fresh["serving_default"]["scores"][row] == [0.0] * TOP_K
        assert fresh["recommend"]["item_ids"][row] == popular[:7]


def test_score_and_fold_in_signatures(bundled, fresh):
    model, train, _, _ = bundled
    u = keras.ops.convert_to_numpy(model.user_factors)[train.user_index([1])[0]]
    v = keras.ops.convert_to_numpy(model.item_factors)[train.item_index([1])[0]]
    score = fresh["score"]
    assert score["known_user"] == [True, True, False] and score["known_item"] == [True, False, True]
    np.testing.assert_allclose(score["scores"], [u @ v, 0.0, 0.0], rtol=1e-5)
    # fold_in_recommend agrees with the library's fold-in; a row with no known item falls back to popularity.
    rated = train.item_index([1, 50, 260])
    items, scores = foldin.recommend(model, [rated], [[5.0, 4.0, 1.0]], k=TOP_K)
    got = fresh["fold_in_recommend"]
    assert got["num_known_items"] == [3, 0]
    assert got["item_ids"][0] == train.item_ids[items[0]].astype(str).tolist()
    np.testing.assert_allclose(got["scores"][0], scores[0], rtol=1e-4, atol=1e-5)
    assert got["item_ids"][1] == fresh["serving_default"]["item_ids"][-1] and got["scores"][1] == [0.0] * TOP_K


def test_similar_items_and_users_match_the_library_and_a_numpy_cosine(bundled, fresh):
    model, train, _, _ = bundled
    for signature, queries, vocabulary, factors, k in (
        ("similar_items", ITEMS + never_rated(train), train.item_ids, model.item_factors, 7),
        ("similar_users", USERS, train.user_ids, model.user_factors, 6),
    ):
        got = fresh[signature]
        ids_key, flag = ("item_ids", "known_item") if signature == "similar_items" else ("user_ids", "known_user")
        assert np.array(got[ids_key]).shape == (len(queries), k)
        known = queries[:5]  # then ids not in the vocabulary and, for items, items without training ratings
        assert got[flag] == [True] * 5 + [False] * (len(queries) - 5), signature
        library = getattr(model, signature + "_ids")
        lib_ids, lib_scores = library(np.array([int(q) for q in known]), k=k)
        assert got[ids_key][:5] == lib_ids.astype(str).tolist(), signature
        np.testing.assert_array_equal(got["scores"][:5], lib_scores)
        for row, query in enumerate(known):
            index = int(np.flatnonzero(vocabulary == int(query))[0])
            oracle = cosine_oracle(factors, index)
            order = np.argsort(-oracle, kind="stable")[:k]
            assert_same_top_k(got[ids_key][row], got["scores"][row], train, order, oracle, vocabulary)
            assert got[ids_key][row][0] == query  # the query itself is a candidate, first with cosine 1
        # Unknown queries: the k items (users) with the most training ratings, ties by index, scores 0.0.
        counts = train.item_counts() if signature == "similar_items" else train.user_counts()
        busiest = vocabulary[np.lexsort((np.arange(counts.size), -counts))[:k]].astype(str).tolist()
        for row in range(5, len(queries)):
            assert got[ids_key][row] == busiest and got["scores"][row] == [0.0] * k, (signature, queries[row])


def test_recommend_from_matches_the_library_with_candidates_and_a_numpy_argsort(bundled, fresh):
    model, train, _, _ = bundled
    got = fresh["recommend_from"]
    assert got["known_user"] == [True, True, False]
    assert np.array(got["item_ids"]).shape == (3, 4)
    for row, user in enumerate(FROM_USERS[:2]):
        candidates = sorted({int(c) for c in CANDIDATES[row] if c.isdigit()})
        lib_ids, lib_scores = model.recommend_ids(np.array([int(user)]), k=4, items=np.array(candidates))
        assert got["item_ids"][row] == ["" if i is None else str(i) for i in lib_ids[0]]
        np.testing.assert_allclose(got["scores"][row], lib_scores[0], rtol=1e-5, atol=1e-5)
        # numpy: the user's scores, non-candidates and training items at -inf, a stable argsort.
        index = int(train.user_index([int(user)])[0])
        order, oracle_scores = oracle_top_k(model, train, index, train.num_items)
        allowed = np.zeros(train.num_items, bool)
        allowed[train.item_index(candidates)] = True
        oracle_scores = np.where(allowed, oracle_scores, -np.inf)
        unseen = int(np.isfinite(oracle_scores).sum())
        order = np.argsort(-oracle_scores, kind="stable")[: min(4, unseen)]
        assert_same_top_k(
            got["item_ids"][row][: order.size], got["scores"][row][: order.size], train, order, oracle_scores
        )
        assert got["item_ids"][row][order.size :] == [""] * (4 - order.size)
        assert np.isneginf(got["scores"][row][order.size :]).all()
    assert got["item_ids"][0][2:] == ["", ""]  # user 1 rated candidates 1, 3 and 6: two remain
    # An unknown user gets the known candidates by popularity, scores 0.0; the rest of the slots are empty.
    counts = dict(zip(train.item_ids.astype(str), train.item_counts()))
    listed = ["296", "1", "318"]
    by_popularity = sorted(listed, key=lambda i: (-counts[i], int(train.item_index([int(i)])[0])))
    assert got["item_ids"][2] == by_popularity + [""]
    assert got["scores"][2][:3] == [0.0] * 3 and np.isneginf(got["scores"][2][3])


def saved_model_cli():
    found = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable)) or shutil.which("saved_model_cli")
    return [found] if found else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_saved_model_cli_lists_the_named_signatures(bundled):
    _, _, path, _ = bundled
    out = subprocess.run(
        [*saved_model_cli(), "show", "--dir", str(path), "--all"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    names = ("serving_default", "recommend", "score", "fold_in_recommend", "recommend_from")
    for name in names + ("similar_items", "similar_users"):
        assert f"signature_def['{name}']" in text
    for tensor in ("inputs['user_id']", "inputs['k']", "inputs['item_id']", "inputs['item_ids']", "inputs['ratings']"):
        assert tensor in text
    for tensor in ("outputs['item_ids']", "outputs['scores']", "outputs['known_user']", "outputs['known_item']"):
        assert tensor in text
    for tensor in ("outputs['num_known_items']", "inputs['candidate_item_ids']", "outputs['user_ids']"):
        assert tensor in text


@pytest.fixture(scope="module")
def tf1_session(bundled):
    """The bundled SavedModel loaded by TensorFlow's TF1 loader (a Session over the MetaGraph, as TF Serving's C++
    loader and ``saved_model_cli run`` load it), not by ``tf.saved_model.load``; (session, MetaGraphDef)."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(bundled[2]))
    yield session, meta_graph
    session.close()


@pytest.mark.parametrize(
    "signature, input_exprs, call",
    [
        ("serving_default", 'user_id=["1", "610", "nobody"]', lambda m: m.serve(tf.constant(["1", "610", "nobody"]))),
        # `k` is a scalar: TF Serving's row format cannot feed it, the columnar format and input_exprs can.
        ("recommend", 'user_id=["1", "2"];k=3', lambda m: m.recommend(tf.constant(["1", "2"]), tf.constant(3))),
        (
            "similar_items",
            'item_id=["1", "50", "no-item"];k=4',
            lambda m: m.similar_items(tf.constant(["1", "50", "no-item"]), tf.constant(4)),
        ),
        ("similar_users", 'user_id=["1", "x"];k=3', lambda m: m.similar_users(tf.constant(["1", "x"]), tf.constant(3))),
        (
            "recommend_from",
            'user_id=["1", "2"];candidate_item_ids=[["1", "2", "4", ""], ["50", "x", "260", "1"]];k=3',
            lambda m: m.recommend_from(
                tf.constant(["1", "2"]), tf.constant([["1", "2", "4", ""], ["50", "x", "260", "1"]]), tf.constant(3)
            ),
        ),
    ],
)
def test_the_tf1_session_loader_of_tf_serving_runs_the_signatures(tf1_session, bundled, signature, input_exprs, call):
    """Every signature run by the TF1 loader gives the in-process module's outputs."""
    session, meta_graph = tf1_session
    spec = meta_graph.signature_def[signature]
    feeds = {}
    for expression in input_exprs.split(";"):
        name, value = expression.split("=", 1)
        feeds[spec.inputs[name].name] = np.array(ast.literal_eval(value), dtype=object if "[" in value else np.int32)
    names = sorted(spec.outputs)
    outputs = dict(zip(names, session.run([spec.outputs[n].name for n in names], feed_dict=feeds)))
    expected = call(bundled[3])
    assert sorted(outputs) == sorted(expected)
    for key, value in expected.items():
        got = outputs[key]
        if key == "scores":
            np.testing.assert_allclose(got, value.numpy(), rtol=1e-6)
        else:
            np.testing.assert_array_equal(got.astype(value.numpy().dtype), value.numpy())


def directory_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_saved_model_is_small_and_its_graph_does_not_grow_with_the_data(bundled, tmp_path):
    model, train, path, _ = bundled
    total = directory_bytes(path)
    data_bytes = 4 * (model.num_users + model.num_items) * 5 + 4 * train.nnz  # U, V and the seen items
    assert total < 1.5 * 1024 * 1024, total  # about 1 MB for latest-small
    assert directory_bytes(path / "variables") < 2 * data_bytes
    # The same export of a 30 x 20 toy problem has a saved_model.pb of the same size: the graph holds no data.
    rows, cols, values = random_problem(0, shape=(30, 20), nnz=150)
    toy = Ratings(rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), np.arange(30), np.arange(20))
    small = WALSModel(30, 20, latent_factors=5)
    small.compile(jit_compile=False)
    small.fit(toy, epochs=1, verbose=0)
    export_saved_model(small, str(tmp_path / "toy"), top_k=TOP_K)
    pb, toy_pb = (p / "saved_model.pb" for p in (path, tmp_path / "toy"))
    assert abs(pb.stat().st_size - toy_pb.stat().st_size) < 1024


def test_a_user_with_few_unseen_items_and_one_with_no_training_ratings(tmp_path):
    # User 0 rated 4 of 5 items; user 1 has no training ratings (its factor is 0): it counts as unknown.
    train = Ratings(
        np.array([0, 0, 0, 0, 2, 2], np.int32),
        np.array([0, 1, 2, 3, 0, 4], np.int32),
        np.array([5, 4, 3, 2, 1, 5], np.float32),
        np.array(["a", "b", "c"]),
        np.array(["i0", "i1", "i2", "i3", "i4"]),
    )
    model = WALSModel(3, 5, latent_factors=2, regularization=0.5)
    model.compile(jit_compile=False)
    model.fit(train, epochs=2, verbose=0)
    module = export_saved_model(model, str(tmp_path / "m"), top_k=3)
    out = module.serve(tf.constant(["a", "b"]))
    assert out["item_ids"].numpy()[0].tolist() == [b"i4", b"", b""]
    assert np.isneginf(out["scores"].numpy()[0, 1:]).all()
    assert out["known_user"].numpy().tolist() == [True, False]
    assert out["item_ids"].numpy()[1].tolist() == [b"i0", b"i1", b"i2"]  # i0 has 2 ratings, then ties by index
    with pytest.raises(tf.errors.InvalidArgumentError, match="`k` should be >= 1"):
        module.recommend(tf.constant(["a"]), tf.constant(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`k` should be <= the number of items"):
        module.recommend(tf.constant(["a"]), tf.constant(6))
    # similar_users: "b" has no training ratings, so it is unknown and gets the users by training count.
    similar = module.similar_users(tf.constant(["b", "a"]), tf.constant(3))
    assert similar["user_ids"].numpy()[0].tolist() == [b"a", b"c", b"b"] and similar["user_ids"].numpy()[1, 0] == b"a"
    assert similar["known_user"].numpy().tolist() == [False, True]
    assert similar["scores"].numpy()[0].tolist() == [0.0] * 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="`k` should be <= the number of users"):
        module.similar_users(tf.constant(["a"]), tf.constant(4))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`k` should be >= 1"):
        module.similar_items(tf.constant(["i0"]), tf.constant(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per `user_id`"):
        module.recommend_from(tf.constant(["a", "c"]), tf.constant([["i4"]]), tf.constant(1))


def test_export_rejects_bad_arguments(bundled, tmp_path):
    model, train, path, _ = bundled
    with pytest.raises(ValueError, match=r"`top_k` should be an integer in \[1, 9724\]. Received: top_k=0"):
        export_saved_model(model, str(tmp_path / "a"), top_k=0)
    with pytest.raises(ValueError, match="`path` should be a new or empty directory"):
        export_saved_model(model, str(path))
    with pytest.raises(ValueError, match='`format` should be "tf_saved_model"'):
        model.export(str(tmp_path / "b"), format="onnx")
    # A model fitted on an index matrix has no raw ids (nor, on several workers, seen items) to serve.
    indices = WALSModel(model.num_users, model.num_items, latent_factors=2)
    with pytest.raises(ValueError, match=r"export_saved_model needs the raw ids: call fit\(ratings\)"):
        export_saved_model(indices, str(tmp_path / "c"))
    indices.set_vocabularies(train.user_ids, train.item_ids)
    with pytest.raises(ValueError, match="export_saved_model needs the training items"):
        export_saved_model(indices, str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_export_of_other_modes_matches_the_keras_model(mode, tmp_path):
    rows, cols, values = random_problem(5, shape=(40, 30), nnz=500, empty_rows=(), empty_cols=())
    train = Ratings(
        rows.astype(np.int32),
        cols.astype(np.int32),
        values.astype(np.float32),
        np.arange(40) + 100,
        np.arange(30) + 500,
    )
    model = WALSModel(40, 30, mode=mode, latent_factors=4, regularization=0.5, alpha=2.0)
    model.compile()
    model.fit(train, epochs=3, verbose=0)
    module = model.export(tmp_path / mode, top_k=5)  # Keras' name; the same SavedModel
    users = np.array([0, 3, 17])
    items, scores = model.recommend(users, k=5)
    out = module.recommend(tf.constant([str(100 + u) for u in users]), tf.constant(5))
    np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-5, atol=1e-5)
    assert out["item_ids"].numpy().astype(str).tolist() == (train.item_ids[items]).astype(str).tolist()
    pairs = train.pairs()[:20]
    got = module.score(tf.constant((pairs[:, 0] + 100).astype(str)), tf.constant((pairs[:, 1] + 500).astype(str)))
    np.testing.assert_allclose(got["scores"].numpy(), model.predict(pairs, verbose=0), rtol=1e-5, atol=1e-5)


def test_a_failed_export_leaves_nothing_and_can_be_retried(bundled, tmp_path, monkeypatch):
    model, _, _, _ = bundled
    real_save = tf.saved_model.save

    def save_then_fail(module, path, signatures=None):
        real_save(module, path, signatures=signatures)  # everything written, then the disk "fills up"
        raise tf.errors.ResourceExhaustedError(None, None, "disk full")

    for target, existed in ((tmp_path / "new", False), (tmp_path / "empty", True)):
        if existed:
            target.mkdir()
        monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
        with pytest.raises(tf.errors.ResourceExhaustedError, match="disk full"):
            export_saved_model(model, str(target))
        assert target.exists() == existed and (not existed or not list(target.iterdir()))
        monkeypatch.setattr(tf.saved_model, "save", real_save)
        export_saved_model(model, str(target))  # the same call again
        assert (target / "saved_model.pb").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"`path` should be a new or empty directory. Received: .* \(a file\)"):
        export_saved_model(model, str(tmp_path / "afile"))


def test_fold_in_recommend_checks_its_ratings_in_the_graph(bundled, tmp_path):
    """The SavedModel refuses what the library's fold-in refuses: ratings of another shape (no broadcasting), a
    non-finite rating, and a negative rating in the implicit mode."""
    _, _, _, module = bundled
    with pytest.raises(tf.errors.InvalidArgumentError, match="`ratings` should have the shape of `item_ids`"):
        module.fold_in_recommend(tf.constant([["1", "50"]]), tf.constant([[5.0]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`ratings` should be finite"):
        module.fold_in_recommend(tf.constant([["1", "50"]]), tf.constant([[5.0, np.nan]]))
    rows, cols, values = random_problem(5, shape=(40, 30), nnz=500, empty_rows=(), empty_cols=())
    train = Ratings(
        rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), np.arange(40), np.arange(30)
    )
    model = WALSModel(40, 30, mode="implicit", latent_factors=4, regularization=0.5)
    model.compile()
    model.fit(train, epochs=1, verbose=0)
    implicit = model.export(tmp_path / "implicit", top_k=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`ratings`: a rating is negative; the implicit mode"):
        implicit.fold_in_recommend(tf.constant([["1", "2"]]), tf.constant([[-1.0, 2.0]]))
    # a negative rating of an unknown item (ignored) or of padding is no error
    implicit.fold_in_recommend(tf.constant([["nope", ""]]), tf.constant([[-1.0, -2.0]]))
