"""``benchmarks.objective``'s equal-objective comparison solves the same problem in wals2 and ``implicit``."""

import numpy as np
import pytest

from benchmarks import objective
from benchmarks.synthetic import Ratings


def small_problem(m=9, n=7, density=0.4, seed=3):
    rng = np.random.default_rng(seed)
    mask = rng.random((m, n)) < density
    mask[np.arange(m), rng.integers(0, n, m)] = True  # every row and column observed
    mask[rng.integers(0, m, n), np.arange(n)] = True
    rows, cols = np.nonzero(mask)
    values = rng.integers(1, 6, rows.size).astype(np.float32)
    return Ratings(rows.astype(np.int64), cols.astype(np.int64), values, (m, n))


def dense_hkv(u, v, data, alpha, regularization):
    """HKV's objective over the dense matrix, cell by cell: the independent oracle."""
    m, n = data.shape
    c, p = np.ones((m, n)), np.zeros((m, n))
    c[data.rows, data.cols] = 1 + alpha * data.values
    p[data.rows, data.cols] = 1
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return float(np.sum(c * (p - u @ v.T) ** 2) + regularization * (np.sum(u**2) + np.sum(v**2)))


def test_hkv_objective_is_the_dense_sum():
    data = small_problem()
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(9, 4)), rng.normal(size=(7, 4))
    confidence = 1 + 2.5 * data.values.astype(np.float64)
    got = objective.hkv_objective(u, v, data.rows, data.cols, confidence, 0.3, chunk=5)  # several chunks
    assert got == pytest.approx(dense_hkv(u, v, data, 2.5, 0.3), rel=1e-12)


def test_the_implicit_mode_engine_minimises_hkv_objective():
    """wals2's implicit-mode engine, as the benchmark builds it, reports and lowers the numpy objective."""
    import tensorflow as tf

    from benchmarks.worker import initial_factors, wals2_engine

    data = small_problem()
    ones = (np.ones(9, np.float32), np.ones(7, np.float32))
    engine = wals2_engine(
        *(data.rows, data.cols, data.values, data.shape, *ones, "cholesky", None, 4),
        mode="implicit",
        alpha=objective.ALPHA,
    )
    u, v = tf.constant(initial_factors(9, 4)), tf.constant(initial_factors(7, 4))
    hkv = objective.hkv_objective_of(data)
    before = hkv(u.numpy(), v.numpy())
    assert float(engine.metrics(u, v)["loss"]) == pytest.approx(before, rel=1e-5)
    u, v = engine.sweep(u, v)
    after = hkv(u.numpy(), v.numpy())
    assert float(engine.metrics(u, v)["loss"]) == pytest.approx(after, rel=1e-5)
    assert after < 0.9 * before


def test_implicit_solves_the_same_rows_as_wals2():
    """One ``implicit`` Cholesky iteration from the same factors gives wals2's exact sweep's factors."""
    pytest.importorskip("implicit", reason="the bench extra (implicit) is not installed")
    import scipy.sparse
    import tensorflow as tf
    from implicit.cpu.als import AlternatingLeastSquares

    from benchmarks.worker import REGULARIZATION, initial_factors, wals2_engine

    data = small_problem()
    ones = (np.ones(9, np.float32), np.ones(7, np.float32))
    engine = wals2_engine(
        *(data.rows, data.cols, data.values, data.shape, *ones, "cholesky", None, 4),
        mode="implicit",
        alpha=objective.ALPHA,
    )
    u, v = engine.sweep(tf.constant(initial_factors(9, 4)), tf.constant(initial_factors(7, 4)))
    confidence = (1 + objective.ALPHA * data.values).astype(np.float32)
    model = AlternatingLeastSquares(
        factors=4,
        regularization=REGULARIZATION,
        iterations=1,
        use_cg=False,
        num_threads=1,
        calculate_training_loss=False,
    )
    model.user_factors, model.item_factors = initial_factors(9, 4), initial_factors(7, 4)
    model.fit(scipy.sparse.csr_matrix((confidence, (data.rows, data.cols)), shape=data.shape), show_progress=False)
    np.testing.assert_allclose(model.user_factors, u.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.item_factors, v.numpy(), rtol=1e-4, atol=1e-5)


def test_time_to_target_and_the_table():
    curve = [[0.0, 10.0], [1.0, 5.0], [2.5, 4.0], [4.0, 3.99]]
    assert objective.time_to(curve, 4.02) == (2, 2.5)
    assert objective.time_to(curve, 3.0) is None
    common = {"data": "ml-1m", "k": 64, "cpu": "AMD EPYC", "lowest": 4.0, "target": 4.02}
    lines = [
        {**common, "system": "implicit-cg", "median_s": 0.5, "sweeps_to_target": 6, "seconds_to_target": 3.0},
        {**common, "system": "wals2-cg", "median_s": 0.4, "sweeps_to_target": 5, "seconds_to_target": 2.0},
    ]
    rows = objective.equal_objective_table(lines).splitlines()
    assert rows[2].endswith("| 6 | 3.00 | 1.00x |") and rows[3].endswith("| 5 | 2.00 | 1.50x |")
