"""WALSModel as a Keras model: fit/evaluate/predict/recommend, callbacks, determinism, weights round trip."""

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from oracle import dense_problem, objective, random_problem, solve_rows

from wals2 import NonFiniteFactorsError, Ratings, WALSConfig, WALSModel
from wals2.weights import item_weights

SHAPE = (50, 40)


@pytest.fixture(scope="module")
def problem():
    rows, cols, values = random_problem(21, shape=SHAPE, nnz=700, empty_rows=(4,), empty_cols=(7,))
    ids_u = np.arange(SHAPE[0]) * 10 + 3
    ids_i = np.arange(SHAPE[1]) * 100 + 1
    ratings = Ratings(rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), ids_u, ids_i)
    return ratings


def make_model(**overrides):
    params = dict(latent_factors=6, regularization=0.3, unobs_weight=0.05, seed=3, batch_entries=64, max_row_length=9)
    params.update(overrides)
    model = WALSModel(*SHAPE, **params)
    model.compile(jit_compile=False)
    return model


def test_one_epoch_is_one_oracle_sweep_with_tf1_weights(problem):
    model = make_model(wt_type="linear", feature_wt_factor=20.0)
    v0 = keras.ops.convert_to_numpy(model.item_factors).astype(np.float64)
    model.fit(problem, epochs=1, verbose=0)
    counts = np.bincount(problem.items[problem.values > 0], minlength=SHAPE[1])
    c = item_weights(counts, 1, 20.0, 0.08)
    a, w, observed = dense_problem(problem.users, problem.items, problem.values, SHAPE, np.ones(SHAPE[0]), c, 0.05)
    u_ref = solve_rows(a, w, observed, v0, 0.3)
    v_ref = solve_rows(a.T, w.T, observed.T, u_ref, 0.3)
    u = keras.ops.convert_to_numpy(model.user_factors)
    v = keras.ops.convert_to_numpy(model.item_factors)
    assert np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref) < 1e-4
    assert np.linalg.norm(v - v_ref) / np.linalg.norm(v_ref) < 1e-4
    # The reported TF1 objective equals the dense oracle objective.
    assert model.loss_value() == pytest.approx(objective(a, w, u, v, 0.3), rel=1e-4)


def test_loss_is_logged_and_never_increases(problem):
    model = make_model(compute_loss=True, wt_type="log", feature_wt_exp=0.5)
    history = model.fit(problem, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 6
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses


def test_same_seed_same_factors_and_different_seed_differs(problem):
    runs = []
    for seed in (3, 3, 4):
        model = make_model(seed=seed)
        model.fit(problem, epochs=3, verbose=0)
        runs.append(keras.ops.convert_to_numpy(model.item_factors))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_tf1_normal_init_and_scaled_init():
    big = WALSModel(400, 300, latent_factors=16, seed=1)
    v = keras.ops.convert_to_numpy(big.item_factors)
    assert abs(v.std() - 1.0) < 0.02
    scaled = WALSModel(400, 300, latent_factors=16, seed=1, init="scaled")
    assert abs(keras.ops.convert_to_numpy(scaled.item_factors).std() - 0.25) < 0.01


def test_fit_validation_and_early_stopping(problem):
    train, test = problem.split(0.2, seed=1)
    model = make_model(latent_factors=20, regularization=0.001, unobs_weight=0.0)
    stop = keras.callbacks.EarlyStopping(monitor="val_rmse", mode="min", patience=1)
    seen_epochs = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen_epochs.append((epoch, sorted(logs)))

    history = model.fit(
        train, epochs=40, validation_data=(test.pairs(), test.values), callbacks=[stop, Record()], verbose=0
    )
    assert set(history.history) == {"rmse", "val_rmse"}
    assert seen_epochs[0][1] == ["rmse", "val_rmse"]
    assert len(history.history["rmse"]) < 40  # an overfitting model (w0 = 0, tiny lambda) stops early
    # The logged val_rmse is the RMSE of predict() on the validation pairs.
    pred = model.predict(test.pairs(), verbose=0)
    rmse = np.sqrt(np.mean((pred - test.values) ** 2))
    assert model.evaluate(test.pairs(), test.values, verbose=0, return_dict=True)["rmse"] == pytest.approx(rmse, 1e-5)


def test_tensorboard_callback_writes_events(problem, tmp_path):
    model = make_model()
    model.fit(problem, epochs=2, callbacks=[keras.callbacks.TensorBoard(log_dir=str(tmp_path))], verbose=0)
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, "TensorBoard wrote no event file"
    tags = {v.tag for path in events for e in tf.compat.v1.train.summary_iterator(str(path)) for v in e.summary.value}
    assert "epoch_rmse" in tags and not any("learning_rate" in tag for tag in tags), tags  # no optimizer here


def test_predict_is_dot_product(problem):
    model = make_model()
    model.fit(problem, epochs=2, verbose=0)
    pairs = problem.pairs()[:37]
    u = keras.ops.convert_to_numpy(model.user_factors)
    v = keras.ops.convert_to_numpy(model.item_factors)
    want = np.sum(u[pairs[:, 0]] * v[pairs[:, 1]], axis=1)
    np.testing.assert_allclose(model.predict(pairs, verbose=0), want, rtol=1e-5, atol=1e-6)


def test_recommend_excludes_seen_and_matches_numpy_argsort(problem):
    model = make_model()
    model.fit(problem, epochs=3, verbose=0)
    u = keras.ops.convert_to_numpy(model.user_factors)
    v = keras.ops.convert_to_numpy(model.item_factors)
    users = np.arange(SHAPE[0])
    items, scores = model.recommend(users, k=5)
    seen = sp.csr_array((np.ones(problem.nnz), (problem.users, problem.items)), shape=SHAPE).toarray() > 0
    for user in users:
        valid = items[user] >= 0
        assert not seen[user, items[user][valid]].any()
        s = u[user] @ v.T
        s[seen[user]] = -np.inf
        want = np.argsort(-s, kind="stable")[:5]
        assert valid.sum() == min(5, np.isfinite(s).sum())
        np.testing.assert_allclose(scores[user], s[want], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(items[user][valid], want[valid])
    all_items, _ = model.recommend([0], k=5, exclude_seen=False)
    np.testing.assert_array_equal(all_items[0], np.argsort(-(u[0] @ v.T), kind="stable")[:5])


def test_recommend_pads_when_a_user_has_seen_almost_everything():
    rows = np.zeros(39, np.int32)
    cols = np.arange(39, dtype=np.int32)
    train = Ratings(rows, cols, np.ones(39, np.float32), np.arange(2), np.arange(40))
    model = WALSModel(2, 40, latent_factors=3)
    model.compile()
    model.fit(train, epochs=1, verbose=0)
    items, scores = model.recommend([0], k=3)
    assert items[0, 0] == 39 and list(items[0, 1:]) == [-1, -1]
    assert np.isneginf(scores[0, 1:]).all()


def test_recommend_rejects_bad_arguments(problem):
    model = make_model()
    with pytest.raises(ValueError, match="needs the training items"):
        model.recommend([0], k=3)
    model.fit(problem, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`k` should be an integer in"):
        model.recommend([0], k=0)
    with pytest.raises(ValueError, match="`user_indices` should be in"):
        model.recommend([SHAPE[0]], k=3)


def test_save_and_load_weights_round_trip(problem, tmp_path):
    model = make_model()
    model.fit(problem, epochs=2, verbose=0)
    path = str(tmp_path / "wals.weights.h5")
    model.save_weights(path)
    clone = WALSModel.from_config(model.get_config())
    clone.load_weights(path)
    pairs = problem.pairs()
    np.testing.assert_array_equal(model.predict(pairs, verbose=0), clone.predict(pairs, verbose=0))
    assert clone.config == model.config


def test_whole_model_keras_file_round_trip(problem, tmp_path):
    model = make_model()
    model.fit(problem, epochs=1, verbose=0)
    path = str(tmp_path / "wals.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(problem.pairs(), verbose=0), loaded.predict(problem.pairs(), verbose=0))


def test_accepts_sparse_tensor_and_scipy(problem):
    a = make_model()
    a.fit(problem, epochs=2, verbose=0)
    st = tf.SparseTensor(problem.pairs(), problem.values, SHAPE)
    b = make_model()
    b.fit(st, epochs=2, verbose=0)
    c = make_model()
    c.fit(sp.coo_matrix((problem.values, (problem.users, problem.items)), shape=SHAPE), epochs=2, verbose=0)
    for other in (b, c):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a.item_factors),
            keras.ops.convert_to_numpy(other.item_factors),
            rtol=1e-5,
            atol=1e-5,
        )


def test_plain_als_without_weights(problem):
    model = make_model(weights=False)
    v0 = keras.ops.convert_to_numpy(model.item_factors).astype(np.float64)
    model.fit(problem, epochs=1, verbose=0)
    a, w, observed = dense_problem(problem.users, problem.items, problem.values, SHAPE, None, None, 0.05)
    u_ref = solve_rows(a, w, observed, v0, 0.3)
    u = keras.ops.convert_to_numpy(model.user_factors)
    assert np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref) < 1e-4


def test_bad_inputs_are_named(problem):
    with pytest.raises(ValueError, match=r"`latent_factors` should be a positive integer. Received: latent_factors=0"):
        WALSModel(*SHAPE, latent_factors=0)
    with pytest.raises(ValueError, match="`regularization` should be a finite number > 0"):
        WALSModel(*SHAPE, regularization=0.0)
    with pytest.raises(ValueError, match="`num_users` should be a positive integer"):
        WALSModel(0, 3)
    model = make_model()
    with pytest.raises(ValueError, match=r"shape \(50, 40\)"):
        model.fit(tf.SparseTensor([[0, 0]], [1.0], [3, 3]), epochs=1)
    with pytest.raises(ValueError, match="`jit_compile` should be False"):
        model.compile(jit_compile=True)
    with pytest.raises(TypeError, match="should be a wals2.Ratings"):
        model.fit(np.ones((50, 40)), epochs=1)
    with pytest.raises(ValueError, match="no training data"):
        make_model().fit(epochs=1)


@pytest.mark.parametrize("mode", ["tf1", "explicit", "implicit"])
def test_out_of_range_sparse_tensor_indices_are_refused_and_leave_the_model_trainable(problem, mode):
    model = make_model(mode=mode, **({"unobs_weight": 0.0} if mode != "tf1" else {}))
    with pytest.raises(ValueError, match=r"column indices should be in \[0, 40\)\. Received: min 1, max 45"):
        model.fit(tf.SparseTensor([[0, 45], [1, 1]], [1.0, 1.0], [50, 40]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"row indices should be in \[0, 50\)\. Received: min -1, max 1"):
        model.fit(tf.SparseTensor([[-1, 0], [1, 1]], [1.0, 1.0], [50, 40]), epochs=1, verbose=0)
    assert model.engine is None
    model.fit(problem, epochs=1, verbose=0)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(model.user_factors)))


def test_an_explicit_model_needs_a_rating():
    model = WALSModel(4, 3, latent_factors=2, mode="explicit")
    model.compile()
    with pytest.raises(ValueError, match="explicit mode needs at least one rating"):
        model.fit(sp.coo_array((4, 3)), epochs=1, verbose=0)


def test_predict_and_evaluate_check_their_pairs(problem):
    model = make_model()
    model.fit(problem, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`x` pairs should be int"):
        model.predict(np.array([[0.7, 1.9]]), verbose=0)
    with pytest.raises(ValueError, match=r"`x` user indices should be in \[0, 50\)"):
        model.predict(np.array([[50, 0]]), verbose=0)
    with pytest.raises(ValueError, match=r"index pairs \[b, 2\]"):
        model.predict(np.array([1, 2]), verbose=0)
    with pytest.raises(ValueError, match=r"`evaluate\(x, y\)` item indices should be in \[0, 40\)"):
        model.evaluate(np.array([[0, 40]]), np.array([1.0]), verbose=0)
    with pytest.raises(ValueError, match="ratings should be finite"):
        model.evaluate(np.array([[0, 1]]), np.array([np.nan]), verbose=0)
    # nested lists as fit takes them, and no pairs at all
    u, v = (keras.ops.convert_to_numpy(f) for f in (model.user_factors, model.item_factors))
    np.testing.assert_allclose(model.predict([[0, 1], [2, 3]], verbose=0), [u[0] @ v[1], u[2] @ v[3]], rtol=1e-5)
    assert model.predict(np.zeros((0, 2), np.int64)).shape == (0,)
    want = model.evaluate(np.array([[0, 1]]), np.array([3.0]), verbose=0)
    assert model.evaluate([[0, 1]], [3.0], verbose=0) == pytest.approx(want)
    np.testing.assert_allclose(want, abs(3.0 - u[0] @ v[1]), rtol=1e-5)
    with pytest.raises(ValueError, match="`evaluate` needs at least one .* Received: 0 pairs"):
        model.evaluate(np.zeros((0, 2), np.int64), np.zeros(0), verbose=0)


def test_keras_arguments_without_a_meaning_here_are_refused(problem):
    with pytest.raises(ValueError, match=r"`dtype` should be float32 .* Received: dtype='float64'"):
        WALSModel(*SHAPE, dtype="float64")
    with pytest.raises(ValueError, match="`dtype` should be float32"):
        WALSModel(*SHAPE, dtype="mixed_float16")
    assert WALSModel(*SHAPE, dtype="float32").user_factors.dtype == "float32"
    model = make_model()
    for argument in (dict(metrics=["mae"]), dict(loss="mse"), dict(optimizer="adam")):
        with pytest.raises(ValueError, match=f"WALSModel.compile takes no `{next(iter(argument))}`"):
            model.compile(**argument)
    model.compile(optimizer=None, loss=None, metrics=None)  # None is what they are anyway
    with pytest.raises(ValueError, match="ReduceLROnPlateau sets an optimizer's learning rate"):
        model.fit(problem, epochs=1, verbose=0, callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="rmse")])
    assert model.engine is None  # refused before it took the training data
    # the caller's own CallbackList, as Keras takes it
    history = keras.callbacks.History()
    model.fit(problem, epochs=2, verbose=0, callbacks=keras.callbacks.CallbackList([history], model=model))
    assert len(history.history["rmse"]) == 2


def test_divergence_raises_a_clear_error():
    """Finite inputs whose second half-sweep overflows float32: NonFiniteFactorsError, not NaN factors.

    k = 1, so that the one-entry rows take the k x k path: at k = 2 the L x L (Woodbury) form of the same rows
    stays finite.
    """
    train = Ratings(
        np.array([0, 1], np.int32),
        np.array([0, 1], np.int32),
        np.array([1e8, -1e8], np.float32),
        np.arange(2),
        np.arange(2),
    )
    model = WALSModel(2, 2, latent_factors=1, regularization=1e-3, feature_wt_factor=1e30)
    model.compile()
    with pytest.raises(NonFiniteFactorsError, match="diverged"):
        model.fit(train, epochs=2, verbose=0)


def test_weighted_ratings_overflowing_float32_are_refused():
    train = Ratings(
        np.array([0], np.int32), np.array([0], np.int32), np.array([3e30], np.float32), np.arange(1), np.arange(1)
    )
    model = WALSModel(1, 1, latent_factors=1, feature_wt_factor=1e20)
    with pytest.raises(ValueError, match="overflow float32"):
        model.fit(train, epochs=1, verbose=0)


def test_config_round_trip_through_get_config():
    config = WALSConfig(latent_factors=7, wt_type="log", feature_wt_exp=0.3)
    model = WALSModel(5, 4, config, regularization=2.0)
    assert model.config == config.replace(regularization=2.0)
    assert WALSModel.from_config(model.get_config()).config == model.config


def test_summary_lists_the_state_variables():
    model = make_model()
    printed = []
    model.summary(print_fn=printed.append)
    text = printed[0]
    m, n, k = model.num_users, model.num_items, model.config.latent_factors
    assert f"{m} users x {n} items" in text and f"k = {k}" in text
    assert "user_factors" in text and f"({m}, {k})" in text and "item_bias" in text
    assert f"{m * k + n * k + m + n + 1 + 2:,} non-trainable values" in text


def test_repeated_fits_reuse_the_traced_sweep_until_what_it_captured_changes(problem):
    model = make_model()
    validation = (np.stack([problem.users[:20], problem.items[:20]], axis=1), problem.values[:20])
    model.fit(problem, epochs=1, verbose=0, validation_data=validation)
    traced = model.train_function
    for _ in range(3):  # the same engine and the same (pairs, ratings) tuple: no new trace
        logs = model.fit(epochs=1, verbose=0, validation_data=validation).history
        assert model.train_function is traced and "val_rmse" in logs
    model.fit(epochs=1, verbose=0)  # other validation data (none)
    assert model.train_function is not traced
    traced = model.train_function
    model.fit(problem, epochs=1, verbose=0)  # new training data: a new engine
    assert model.train_function is not traced


def test_unknown_keyword_arguments_are_named_with_their_walsconfig_fields():
    with pytest.raises(
        TypeError,
        match=r"unknown keyword arguments \['factors', 'iterations'\]\. `factors` is "
        r"`latent_factors` here\. `iterations` is `num_iters` here\.",
    ):
        WALSModel(*SHAPE, factors=3, iterations=4)
    assert WALSModel(*SHAPE, name="named", latent_factors=3).name == "named"
