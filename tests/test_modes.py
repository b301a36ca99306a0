"""The explicit (biased, ALS-WR) and implicit (Hu-Koren-Volinsky) modes against naive float64 numpy solves."""

import keras
import numpy as np
import pytest
from oracle import random_problem, solve_rows

from wals2 import Ratings, WALSModel

SHAPE = (45, 35)


@pytest.fixture(scope="module")
def ratings():
    rows, cols, values = random_problem(31, shape=SHAPE, nnz=600, empty_rows=(2,), empty_cols=(9,))
    return Ratings(
        rows.astype(np.int32),
        cols.astype(np.int32),
        values.astype(np.float32),
        np.arange(SHAPE[0]),
        np.arange(SHAPE[1]),
    )


def numpy_of(model, *names):
    return [keras.ops.convert_to_numpy(getattr(model, n)).astype(np.float64) for n in names]


def biased_half(rows, cols, values, shape, fixed, fixed_bias, mu, lam, scale):
    """argmin over [x_i, b_i] of sum_obs (a - mu - c_j - x.y_j - b)^2 + lam s_i (|x|^2 + b^2), one row at a time."""
    k = fixed.shape[1]
    out = np.zeros((shape[0], k + 1))
    for i in range(shape[0]):
        mask = rows == i
        if not mask.any():
            continue
        y = np.hstack([fixed[cols[mask]], np.ones((mask.sum(), 1))])
        target = values[mask] - mu - fixed_bias[cols[mask]]
        s = mask.sum() if scale else 1.0
        out[i] = np.linalg.solve(lam * s * np.eye(k + 1) + y.T @ y, y.T @ target)
    return out


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("solver_sizes, k", [((65536, 2048), 4), ((40, 6), 4), ((65536, 2048), 24)])
def test_explicit_mode_one_sweep_matches_oracle(ratings, scale, solver_sizes, k):
    """k = 24 solves most rows (fewer than 0.7 (k + 1) entries) in the L x L Woodbury form, with per-row lambda."""
    model = WALSModel(
        *SHAPE,
        mode="explicit",
        latent_factors=k,
        regularization=0.2,
        scale_regularization=scale,
        seed=1,
        batch_entries=solver_sizes[0],
        max_row_length=solver_sizes[1],
    )
    model.compile()
    (v0,) = numpy_of(model, "item_factors")
    model.fit(ratings, epochs=1, verbose=0)
    r, c, a = ratings.users, ratings.items, ratings.values.astype(np.float64)
    mu = a.mean()
    ub = biased_half(r, c, a, SHAPE, v0, np.zeros(SHAPE[1]), mu, 0.2, scale)
    vb = biased_half(c, r, a, SHAPE[::-1], ub[:, :k], ub[:, k], mu, 0.2, scale)
    u, bu, v, bv = numpy_of(model, "user_factors", "user_bias", "item_factors", "item_bias")
    np.testing.assert_allclose(np.hstack([u, bu[:, None]]), ub, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(np.hstack([v, bv[:, None]]), vb, rtol=2e-4, atol=2e-5)
    assert float(keras.ops.convert_to_numpy(model.global_mean)) == pytest.approx(mu, rel=1e-6)
    # Predictions: mu + b_i + c_j + x.y, clipped to the training range [1, 5].
    pairs = np.array([[i, j] for i in range(SHAPE[0]) for j in range(SHAPE[1])])
    raw = mu + bu[pairs[:, 0]] + bv[pairs[:, 1]] + np.sum(u[pairs[:, 0]] * v[pairs[:, 1]], axis=1)
    np.testing.assert_allclose(model.predict(pairs, verbose=0), np.clip(raw, 1, 5), rtol=1e-4, atol=1e-4)


def test_explicit_mode_objective_decreases_and_fits_better_than_tf1(ratings):
    train, test = ratings.split(0.2, seed=2)
    explicit = WALSModel(*SHAPE, mode="explicit", latent_factors=3, regularization=2.0, compute_loss=True)
    explicit.compile()
    history = explicit.fit(train, epochs=8, validation_data=(test.pairs(), test.values), verbose=0)
    losses = history.history["loss"]
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses
    tf1 = WALSModel(*SHAPE, latent_factors=3, regularization=2.0)
    tf1.compile()
    tf1_history = tf1.fit(train, epochs=8, validation_data=(test.pairs(), test.values), verbose=0)
    assert history.history["val_rmse"][-1] < tf1_history.history["val_rmse"][-1]


@pytest.mark.parametrize("sizes, k", [((65536, 2048), 5), ((40, 6), 5), ((65536, 2048), 24)])
def test_implicit_mode_one_sweep_matches_dense_hkv_oracle(ratings, sizes, k):
    alpha, lam = 3.0, 0.4
    model = WALSModel(
        *SHAPE,
        mode="implicit",
        alpha=alpha,
        latent_factors=k,
        regularization=lam,
        seed=2,
        batch_entries=sizes[0],
        max_row_length=sizes[1],
    )
    model.compile()
    (v0,) = numpy_of(model, "item_factors")
    model.fit(ratings, epochs=1, verbose=0)
    preference = np.zeros(SHAPE)
    confidence = np.ones(SHAPE)
    observed = np.zeros(SHAPE, bool)
    preference[ratings.users, ratings.items] = 1.0
    confidence[ratings.users, ratings.items] = 1.0 + alpha * ratings.values
    observed[ratings.users, ratings.items] = True
    u_ref = solve_rows(preference, confidence, observed, v0, lam)
    v_ref = solve_rows(preference.T, confidence.T, observed.T, u_ref, lam)
    u, v = numpy_of(model, "user_factors", "item_factors")
    assert np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref) < 1e-4
    assert np.linalg.norm(v - v_ref) / np.linalg.norm(v_ref) < 1e-4


def test_implicit_mode_rejects_negative_values():
    train = Ratings(
        np.array([0], np.int32), np.array([0], np.int32), np.array([-1.0], np.float32), np.arange(1), np.arange(1)
    )
    model = WALSModel(1, 1, mode="implicit", latent_factors=1)
    with pytest.raises(ValueError, match="needs ratings >= 0"):
        model.fit(train, epochs=1, verbose=0)


def test_cg_solver_runs_in_every_mode(ratings):
    """CG lowers the objective at every sweep in every mode and ends near the exact solver's objective.

    Every CG row starts from its previous factors, so its objective cannot rise. On this 45 x 35 problem at k = 4
    the two solvers take different paths to different stationary points: after 10 sweeps CG's objective was
    measured between 1.9 % below and 1.7 % above the exact one's depending on which rows it takes, so the bound
    here is 3 %; the 0.5 % criterion is tested on a larger problem in tests/test_solver.py.
    """
    for mode in ("tf1", "explicit", "implicit"):
        exact = WALSModel(*SHAPE, mode=mode, latent_factors=4, regularization=0.5, compute_loss=True)
        cg = WALSModel(*SHAPE, mode=mode, latent_factors=4, regularization=0.5, compute_loss=True, solver="cg")
        histories = []
        for model in (exact, cg):
            model.compile()
            histories.append(model.fit(ratings, epochs=10, verbose=0).history["loss"])
        losses = histories[1]
        assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), (mode, losses)
        assert cg.loss_value() <= exact.loss_value() * 1.03, mode


def dense_objective(mode, ratings, u, v, bu, bv, mu, lam, scale, w0=0.01, c=None, alpha=0.0):
    """The mode's objective, cell by cell over the dense float64 matrix (the oracle of ``WALSModel.loss_value``).

    tf1: sum_all W (A - UV')^2 with W = w0 + C_j on observed cells, w0 elsewhere. explicit: sum_obs
    (a - mu - b_i - c_j - u_i.v_j)^2. implicit: sum_all (1 + alpha r [observed]) (p - UV')^2, p = 1 on observed
    cells. Plus sum_i lambda_i (|u_i|^2 + b_i^2) + sum_j lambda_j (|v_j|^2 + c_j^2), lambda_i = lambda (n_i).
    """
    m, n = SHAPE
    observed = np.zeros((m, n), bool)
    observed[ratings.users, ratings.items] = True
    a = np.zeros((m, n))
    a[ratings.users, ratings.items] = ratings.values
    p = u @ v.T + mu + bu[:, None] + bv[None, :]
    if mode == "tf1":
        weight = np.where(observed, w0 + (c[None, :] if c is not None else 0.0), w0)
        fit = np.sum(weight * (a - p) ** 2)
    elif mode == "explicit":
        fit = np.sum(np.where(observed, (a - p) ** 2, 0.0))
    else:
        fit = np.sum((1.0 + alpha * a * observed) * (observed - p) ** 2)
    s_u = observed.sum(axis=1) if scale else np.ones(m)
    s_v = observed.sum(axis=0) if scale else np.ones(n)
    penalty = lam * (np.sum(s_u * (np.sum(u**2, axis=1) + bu**2)) + np.sum(s_v * (np.sum(v**2, axis=1) + bv**2)))
    return fit + penalty


@pytest.mark.parametrize(
    "mode, overrides",
    [
        ("tf1", {}),
        ("tf1", {"weights": False}),
        ("explicit", {}),
        ("explicit", {"scale_regularization": True}),
        ("implicit", {"alpha": 3.0}),
        ("implicit", {"alpha": 0.5, "scale_regularization": True}),
    ],
)
def test_every_mode_objective_equals_the_dense_oracle(ratings, mode, overrides):
    model = WALSModel(*SHAPE, mode=mode, latent_factors=3, regularization=0.4, compute_loss=True, **overrides)
    model.compile(jit_compile=False)
    history = model.fit(ratings, epochs=2, verbose=0).history
    u, v, bu, bv, mu = numpy_of(model, "user_factors", "item_factors", "user_bias", "item_bias", "global_mean")
    c = None
    if mode == "tf1" and model.config.weights:  # TF1's linear item weights f / n_j over positive ratings
        counts = np.bincount(ratings.items[ratings.values > 0], minlength=SHAPE[1]).astype(np.float64)
        c = np.divide(model.config.feature_wt_factor, counts, out=np.zeros(SHAPE[1]), where=counts > 0)
    want = dense_objective(
        mode, ratings, u, v, bu, bv, float(mu), 0.4, model.config.scale_regularization, c=c, alpha=model.config.alpha
    )
    assert model.loss_value() == pytest.approx(want, rel=1e-4)
    assert history["loss"][-1] == pytest.approx(want, rel=1e-4)
