"""A .keras file keeps the seen items and the raw-id vocabularies: after load_model, recommend with
filter_already_liked_items and the *_ids calls give what they gave before saving, and never a training item."""

import json
import os
import pathlib
import subprocess
import sys
import zipfile

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
    rows, cols, values = random_problem(13, shape=SHAPE, nnz=280, empty_rows=(2,), empty_cols=(4,))
    user_ids = np.arange(SHAPE[0]) * 3 + 1000
    item_ids = np.array([f"movie-{j:02d}" for j in range(SHAPE[1])])
    return Ratings(rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), user_ids, item_ids)


def test_load_model_keeps_seen_items_and_raw_ids(ratings, tmp_path):
    model = WALSModel(*SHAPE, mode="explicit", latent_factors=4, regularization=0.5, seed=2)
    model.compile()
    model.fit(ratings, epochs=2, verbose=0)
    users = np.arange(SHAPE[0])
    before = model.recommend(users, k=10, filter_already_liked_items=True)
    before_ids = model.recommend_ids(ratings.user_ids, k=10)
    before_similar = model.similar_items_ids(ratings.item_ids[:5], k=3)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    found, scores = loaded.recommend(users, k=10, filter_already_liked_items=True)
    np.testing.assert_array_equal(found, before[0])
    np.testing.assert_allclose(scores, before[1], rtol=1e-6)
    seen = sp.csr_array((np.ones(ratings.nnz), (ratings.users, ratings.items)), shape=SHAPE).toarray() > 0
    for user in users:  # the oracle: the training matrix itself
        assert not seen[user, found[user][found[user] >= 0]].any()
        assert (found[user] >= 0).sum() == min(10, SHAPE[1] - seen[user].sum())
    ids, id_scores = loaded.recommend_ids(ratings.user_ids, k=10)
    assert ids.tolist() == before_ids[0].tolist()
    np.testing.assert_allclose(id_scores, before_ids[1], rtol=1e-6)
    assert loaded.similar_items_ids(ratings.item_ids[:5], k=3)[0].tolist() == before_similar[0].tolist()
    assert loaded.recommend_ids([1000 + 3 * 7], k=2)[0].tolist() == before_ids[0][7:8, :2].tolist()


def test_a_partially_fitted_model_saves_its_new_rows_and_ids(ratings, tmp_path):
    model = WALSModel(*SHAPE, mode="implicit", latent_factors=3, seed=1)
    model.compile()
    model.fit(ratings, epochs=1, verbose=0)
    new_user = sp.csr_array(([3.0, 1.0], ([0, 0], [5, 9])), shape=(1, SHAPE[1]))
    model.partial_fit_users_ids([7777], new_user)
    path = tmp_path / "grown.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.num_users == SHAPE[0] + 1
    ids, _ = loaded.recommend_ids([7777], k=SHAPE[1] - 2)
    assert set(ids[0].tolist()) == set(ratings.item_ids.tolist()) - {"movie-05", "movie-09"}  # its seen items
    assert ids.tolist() == model.recommend_ids([7777], k=SHAPE[1] - 2)[0].tolist()


def test_a_model_without_seen_items_or_ids_loads_without_them(tmp_path):
    model = WALSModel(4, 3, latent_factors=2)
    model.compile()
    path = tmp_path / "bare.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    with pytest.raises(ValueError, match="needs the training items"):
        loaded.recommend([0], k=2)
    with pytest.raises(ValueError, match="needs the raw ids"):
        loaded.recommend_ids([0], k=2)
    assert loaded.recommend([0], k=2, exclude_seen=False)[0].shape == (1, 2)


def test_load_model_in_a_fresh_process_after_import_wals2(ratings, tmp_path):
    model = WALSModel(*SHAPE, mode="implicit", latent_factors=3, seed=5)
    model.compile()
    model.fit(ratings, epochs=1, verbose=0)
    path = tmp_path / "fresh.keras"
    model.save(path)
    script = f"""
import sys
import wals2
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "import wals2 imported TensorFlow"
import tensorflow  # imports Keras itself, after a first attempt that fails while TensorFlow is half initialised
import keras
assert "wals2.model" not in sys.modules
loaded = keras.models.load_model({str(path)!r})
print(type(loaded).__module__, loaded.recommend_ids([{int(ratings.user_ids[0])}], k=4)[0].tolist())
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    want = model.recommend_ids([ratings.user_ids[0]], k=4)[0].tolist()
    assert done.stdout.split()[0] == "wals2.model"
    assert done.stdout.strip().endswith(str(want)), (done.stdout, want)


def test_a_config_that_disagrees_with_the_weights_fails_before_allocating(ratings, tmp_path):
    model = WALSModel(*SHAPE, latent_factors=3)
    model.compile()
    path = tmp_path / "small.keras"
    model.save(path)
    edited = tmp_path / "edited.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(edited, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "config.json":
                config = json.loads(data)
                config["config"]["num_users"] = 50_000_000
                data = json.dumps(config).encode()
            target.writestr(name, data)
    with pytest.raises(ValueError, match=r"`user_factors` has shape \(30, 3\); the config \(num_users=50000000"):
        keras.models.load_model(edited)
    deferred = WALSModel.from_config(config["config"])  # what load_model builds first: no state yet
    assert deferred.variables == [] and deferred.num_users == 50_000_000
