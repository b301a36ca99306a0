"""The half-sweep against a naive float64 numpy solve (tests/oracle.py), for every weighting and layout path."""

import numpy as np
import pytest
import tensorflow as tf
from oracle import block_descent_rows, build_layouts, cg_rows, dense_problem, objective, random_problem, solve_rows

from wals2 import solver
from wals2.config import WALSConfig
from wals2.engine import Partition, SweepEngine
from wals2.layout import group_order, length_ladder
from wals2.modes import Explicit, Implicit, Tf1

SHAPE = (60, 45)
K = 8
W0 = 0.1
LAM = 0.5


def engine_for(rows, cols, values, shape, r, c, w0, lam=LAM, **config):
    """The one-worker sweep engine of a tf1-mode problem with the given R and C (None, None: plain ALS)."""
    mode = Tf1(WALSConfig(unobs_weight=w0, regularization=lam, latent_factors=K, **config))
    return SweepEngine(mode, Partition.single(rows, cols, values, shape), given_weights=(r, c))


def rel_err(got, want):
    return np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want)


def weights_for(mode, rng, cols):
    m, n = SHAPE
    if mode == "none":
        return None, None
    if mode == "scalar":
        return np.full(m, 1.0, np.float32), np.full(n, 2.5, np.float32)
    r = rng.uniform(0.2, 2.0, m).astype(np.float32)
    c = rng.uniform(0.1, 3.0, n).astype(np.float32)
    if mode == "vector-with-zero":  # a zero weight on an observed column forces the general path
        c[cols[0]] = 0.0
    return r, c


@pytest.mark.parametrize(
    "mode, kinds",
    [
        ("none", ("uniform", "uniform")),
        ("scalar", ("separable", "separable")),
        ("vector", ("separable", "separable")),
        ("vector-with-zero", ("general", "separable")),
    ],
)
@pytest.mark.parametrize("batch_entries, max_row_length", [(65536, 2048), (8, 7)])
def test_half_sweeps_match_numpy_oracle(mode, kinds, batch_entries, max_row_length):
    rng = np.random.default_rng(7)
    rows, cols, values = random_problem(3, shape=SHAPE, nnz=900, empty_rows=(3, 17), empty_cols=(5, 30))
    r, c = weights_for(mode, rng, cols)
    layouts = build_layouts(
        rows, cols, values, SHAPE, r, c, W0, batch_entries=batch_entries, max_row_length=max_row_length
    )
    assert (layouts.rows.kind, layouts.cols.kind) == kinds
    if max_row_length == 7:  # the small sizes really exercise long-row pieces and multi-chunk blocks
        assert layouts.rows.num_long > 0 and layouts.cols.num_long > 0
        for half in layouts:  # some bucket is cut into several chunks, and long rows into pieces
            lengths = half.short.lengths.numpy()
            assert half.short.num_chunks > np.unique(lengths).size and half.pieces.num_chunks >= 1
    a, w, observed = dense_problem(rows, cols, values, SHAPE, r, c, W0)
    v = rng.standard_normal((SHAPE[1], K)).astype(np.float32)

    u_tf = solver.half_sweep(layouts.rows, v, LAM)
    u_ref = solve_rows(a, w, observed, v, LAM)
    assert rel_err(u_tf, u_ref) < 1e-4

    v_tf = solver.half_sweep(layouts.cols, u_ref.astype(np.float32), LAM)
    v_ref = solve_rows(a.T, w.T, observed.T, u_ref, LAM)
    assert rel_err(v_tf, v_ref) < 1e-4

    # Rows and columns without observations are exactly 0.
    np.testing.assert_array_equal(u_tf.numpy()[[3, 17]], 0.0)
    np.testing.assert_array_equal(v_tf.numpy()[[5, 30]], 0.0)


def test_full_sweep_matches_oracle_with_rank_above_factors():
    """A dense, full-rank (rank 40 > k = 8) problem: the sweep is the two oracle halves in sequence."""
    rng = np.random.default_rng(11)
    m, n = 40, 50
    cells = rng.choice(m * n, size=1200, replace=False)
    rows, cols = np.divmod(cells, n)
    values = rng.normal(3.0, 1.0, cells.size)
    r = rng.uniform(0.5, 1.5, m).astype(np.float32)
    c = rng.uniform(0.5, 1.5, n).astype(np.float32)
    engine = engine_for(rows, cols, values, (m, n), r, c, W0, batch_entries=100, max_row_length=16)
    u0 = rng.standard_normal((m, K)).astype(np.float32)
    v0 = rng.standard_normal((n, K)).astype(np.float32)
    u_tf, v_tf = engine.sweep(u0, v0)
    a, w, observed = dense_problem(rows, cols, values, (m, n), r, c, W0)
    assert np.linalg.matrix_rank(np.where(observed, a, 0)) > K
    u_ref = solve_rows(a, w, observed, v0, LAM)
    v_ref = solve_rows(a.T, w.T, observed.T, u_ref, LAM)
    assert rel_err(u_tf, u_ref) < 1e-4
    assert rel_err(v_tf, v_ref) < 1e-4


def test_single_entry_hand_computed():
    """One rating a = 2 with weights: x = (w0 + d) a y / (lam + w0 y^2 + d y^2) for k = 1, by hand."""
    rows, cols, values = np.array([0]), np.array([0]), np.array([2.0])
    r, c = np.array([1.0], np.float32), np.array([3.0], np.float32)
    layouts = build_layouts(rows, cols, values, (1, 2), r, np.array([3.0, 1.0], np.float32), 0.5)
    y = np.array([[2.0], [1.0]], np.float32)  # the second column is unobserved but still in Y'Y
    x = solver.half_sweep(layouts.rows, y, 0.25).numpy()
    d = r[0] * c[0]
    want = (0.5 + d) * 2.0 * 2.0 / (0.25 + 0.5 * (4.0 + 1.0) + d * 4.0)
    np.testing.assert_allclose(x, [[want]], rtol=1e-6)


def test_objective_decreases_every_sweep():
    rng = np.random.default_rng(5)
    rows, cols, values = random_problem(9, shape=SHAPE, nnz=800)
    r, c = weights_for("vector", rng, cols)
    engine = engine_for(rows, cols, values, SHAPE, r, c, W0, batch_entries=64, max_row_length=9)
    a, w, _ = dense_problem(rows, cols, values, SHAPE, r, c, W0)
    u = rng.standard_normal((SHAPE[0], K)).astype(np.float32)
    v = rng.standard_normal((SHAPE[1], K)).astype(np.float32)
    losses = [objective(a, w, u, v, LAM)]
    for _ in range(8):
        u, v = engine.sweep(u, v)
        losses.append(objective(a, w, u, v, LAM))
    assert all(b <= a_ * (1 + 1e-6) for a_, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.5 * losses[0]


def test_gramian_is_lambda_plus_w0_yty():
    y = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    g = solver.gramian(tf.constant(y), tf.constant(0.3), tf.constant(0.2)).numpy()
    np.testing.assert_allclose(g, 0.3 * np.eye(3) + 0.2 * y.T @ y, rtol=1e-6)


def test_length_ladder_grows_and_ends_at_max():
    ladder = length_ladder(2048)
    assert ladder[0] == 1 and ladder[-1] == 2048
    assert np.all(np.diff(ladder) >= 1)
    assert np.all(ladder[1:] <= np.ceil(ladder[:-1] * 1.125) + 1)


@pytest.mark.parametrize("mode", ["vector", "vector-with-zero", "none"])
def test_cg_with_enough_steps_reaches_the_exact_solution(mode):
    """CG on an SPD k x k system converges in k steps in exact arithmetic; 3k float32 steps get close."""
    rng = np.random.default_rng(2)
    rows, cols, values = random_problem(4, shape=SHAPE, nnz=900)
    r, c = weights_for(mode, rng, cols)
    layouts = build_layouts(rows, cols, values, SHAPE, r, c, W0, batch_entries=48, max_row_length=7)
    a, w, observed = dense_problem(rows, cols, values, SHAPE, r, c, W0)
    v = rng.standard_normal((SHAPE[1], K)).astype(np.float32)
    start = rng.standard_normal((SHAPE[0], K)).astype(np.float32)
    u_cg = solver.half_sweep(layouts.rows, v, LAM, "cg", start, 3 * K)
    assert rel_err(u_cg, solve_rows(a, w, observed, v, LAM)) < 2e-3
    one_step = solver.half_sweep(layouts.rows, v, LAM, "cg", start, 1)
    if mode != "none":  # a single step from a random start is far from exact
        assert rel_err(one_step, solve_rows(a, w, observed, v, LAM)) > 1e-2


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("mode, kind", [("vector", "separable"), ("vector-with-zero", "general")])
@pytest.mark.parametrize("max_row_length", [2048, 12])
def test_cg_steps_match_a_float64_cg_from_the_same_start(steps, mode, kind, max_row_length):
    """A few CG steps, matrix-free or on the formed systems (``cg_max_length``), against numpy's float64 CG."""
    k = 16  # weighted: every row matrix-free at 1 step, split at k / 2 at 2; unweighted: split at k / 2
    rng = np.random.default_rng(5)
    rows, cols, values = random_problem(6, shape=SHAPE, nnz=900)
    r, c = weights_for(mode, rng, cols)
    layouts = build_layouts(rows, cols, values, SHAPE, r, c, W0, batch_entries=64, max_row_length=max_row_length)
    assert layouts.rows.kind == kind
    lengths = np.bincount(rows, minlength=SHAPE[0])
    limit = solver.cg_max_length(k, steps, weighted=kind == "general")
    assert limit == (2**31 - 1 if (kind, steps) == ("general", 1) else k // 2)
    assert np.any((lengths > k // 2) & (lengths <= max_row_length))  # rows past k / 2 take each path in turn
    a, w, observed = dense_problem(rows, cols, values, SHAPE, r, c, W0)
    v = rng.standard_normal((SHAPE[1], k)).astype(np.float32)
    start = rng.standard_normal((SHAPE[0], k)).astype(np.float32)
    got = solver.half_sweep(layouts.rows, v, LAM, "cg", start, steps)
    want = cg_rows(a, w, observed, v, LAM, start, steps, exact_longer_than=max_row_length)
    assert rel_err(got, want) < 1e-4
    assert rel_err(start, want) > 1e-2  # the steps moved the rows


def test_cg_loss_after_ten_sweeps_within_half_percent_of_exact():
    rng = np.random.default_rng(8)
    m, n = 300, 200
    rows, cols, values = random_problem(12, shape=(m, n), nnz=6000, empty_rows=(), empty_cols=())
    r = rng.uniform(0.5, 1.5, m).astype(np.float32)
    c = rng.uniform(0.5, 2.0, n).astype(np.float32)
    a, w, _ = dense_problem(rows, cols, values, (m, n), r, c, W0)
    u0 = rng.standard_normal((m, 16)).astype(np.float32)
    v0 = rng.standard_normal((n, 16)).astype(np.float32)
    losses = {}
    for name in ("cholesky", "cg"):
        engine = engine_for(
            rows, cols, values, (m, n), r, c, W0, 0.05, batch_entries=512, max_row_length=64, solver=name, cg_steps=3
        )
        u, v = u0, v0
        for _ in range(10):
            u, v = engine.sweep(u, v)
        losses[name] = objective(a, w, u, v, 0.05)
    assert losses["cg"] <= losses["cholesky"] * 1.005, losses


SUBSPACE_CASES = [  # (mode, config): every weighting kind, biases, per-row lambda, the uniform layout
    ("tf1", {}),  # separable (C_j = f / n_j)
    ("tf1", {"weights": False}),  # uniform: falls back to the exact solve
    ("implicit", {"alpha": 2.0}),  # general: per-entry weights
    ("explicit", {}),  # bias offsets (w0 = 0)
    ("explicit", {"scale_regularization": True}),  # and lambda n_i per row
]


def subspace_engine(mode, config, max_row_length, k=K, block=3):
    rows, cols, values = random_problem(4, shape=SHAPE, nnz=900, empty_rows=(3, 17), empty_cols=(5, 30))
    modes = {"tf1": Tf1, "implicit": Implicit, "explicit": Explicit}
    cfg = WALSConfig(
        mode=mode,
        latent_factors=k,
        regularization=LAM,
        unobs_weight=W0,
        solver="subspace",
        subspace_block=block,
        batch_entries=48,
        max_row_length=max_row_length,
        **config,
    )
    engine = SweepEngine(modes[mode](cfg), Partition.single(rows, cols, values, SHAPE))
    return engine, (rows, cols, values)


@pytest.mark.parametrize("max_row_length", [2048, 7])  # 7: long rows cut into pieces
@pytest.mark.parametrize("mode, config", SUBSPACE_CASES)
def test_subspace_half_sweeps_converge_to_the_exact_solution(mode, config, max_row_length):
    """Block Gauss-Seidel on an SPD system: repeated half-sweeps on a fixed side reach the Cholesky solution, and
    none raises the objective. Blocks of 3 of k = 8 (9 with the bias) coordinates: the last block overlaps."""
    engine, (rows, cols, values) = subspace_engine(mode, config, max_row_length)
    assert solver.subspace_starts(engine.width, 3)[-1] == engine.width - 3
    if max_row_length == 7:
        assert engine.rows_layout.num_long > 0 and engine.cols_layout.num_long > 0
    rng = np.random.default_rng(3)
    m, n = SHAPE
    u = tf.constant(rng.standard_normal((m, engine.width)).astype(np.float32))
    v = tf.constant(rng.standard_normal((n, engine.width)).astype(np.float32))
    biases = engine.mode.biases
    for layout, fixed, start in ((engine.rows_layout, v, u), (engine.cols_layout, u, v)):
        table = solver.fixed_side(fixed, biases)
        exact = solver.half_sweep(layout, table, LAM).numpy().astype(np.float64)
        if mode == "tf1" and layout is engine.rows_layout:  # the exact solver is itself the float64 oracle's
            c = engine._weight_of_rows.col_weights
            r = None if c is None else np.ones(m)
            a, w, observed = dense_problem(rows, cols, values, SHAPE, r, c, W0)
            assert rel_err(exact, solve_rows(a, w, observed, fixed.numpy(), LAM)) < 1e-5

        def loss(x, fixed=fixed, rows_half=layout is engine.rows_layout):
            x = tf.constant(x, tf.float32)
            return float(engine.metrics(*((x, fixed) if rows_half else (fixed, x)))["loss"])

        x = start.numpy()
        losses = [loss(x)]
        for _ in range(100):  # the worst conditioned case here needs ~80 to reach 1e-6
            x = solver.half_sweep(layout, table, LAM, "subspace", x, subspace_block=3).numpy()
            losses.append(loss(x))
        assert all(b <= a_ * (1 + 1e-5) + 1e-4 for a_, b in zip(losses, losses[1:])), losses
        assert rel_err(x, exact) < 1e-4, (mode, config)
        if layout.kind == "uniform":  # the uniform kind is solved exactly at once
            first = solver.half_sweep(layout, table, LAM, "subspace", start, subspace_block=3)
            assert rel_err(first, exact) < 1e-5
        else:  # one pass from a random start is not the exact solution yet
            first = solver.half_sweep(layout, table, LAM, "subspace", start, subspace_block=3)
            assert rel_err(first, exact) > 1e-3


@pytest.mark.parametrize("weights", ["vector", "vector-with-zero"])  # separable; general rows
@pytest.mark.parametrize("batch_entries, max_row_length", [(65536, 2048), (8, 7)])  # whole rows; long-row pieces
def test_subspace_pass_matches_numpy_block_gauss_seidel(weights, batch_entries, max_row_length):
    """One subspace half-sweep is one pass of block Gauss-Seidel per row (float64 numpy oracle), whether a row is
    whole or cut into pieces; rows of at most b entries are solved exactly. k = 8 in blocks of 3 (0, 3, 5)."""
    rng = np.random.default_rng(11)
    rows, cols, values = random_problem(5, shape=SHAPE, nnz=900, empty_rows=(3, 17), empty_cols=(5, 30))
    r, c = weights_for(weights, rng, cols)
    layouts = build_layouts(
        rows, cols, values, SHAPE, r, c, W0, batch_entries=batch_entries, max_row_length=max_row_length
    )
    if max_row_length == 7:
        assert layouts.rows.num_long > 0 and layouts.cols.num_long > 0 and layouts.cols.pieces.num_chunks > 1
    a, w, observed = dense_problem(rows, cols, values, SHAPE, r, c, W0)
    starts, exact_upto = solver.subspace_starts(K, 3), solver.subspace_max_woodbury(K, 3)
    assert starts == [0, 3, 5]
    for layout, (a_, w_, obs_), (m, n) in (
        (layouts.rows, (a, w, observed), SHAPE),
        (layouts.cols, (a.T, w.T, observed.T), SHAPE[::-1]),
    ):
        fixed = rng.standard_normal((n, K)).astype(np.float32)
        start = rng.standard_normal((m, K)).astype(np.float32)
        got = solver.half_sweep(layout, fixed, LAM, "subspace", start, subspace_block=3)
        want = block_descent_rows(a_, w_, obs_, fixed, LAM, start, starts, 3, exact_upto)
        assert rel_err(got, want) < 1e-4, layout.kind
        assert rel_err(want, solve_rows(a_, w_, obs_, fixed, LAM)) > 1e-2  # one pass is not the exact solve yet


@pytest.mark.parametrize("mode, config", SUBSPACE_CASES[::2])
def test_subspace_with_one_block_is_the_exact_solve(mode, config):
    """b >= k: one block holding every coordinate, solved exactly from any start (as are the uniform rows)."""
    engine, _ = subspace_engine(mode, config, 7, block=64)
    rng = np.random.default_rng(4)
    v = solver.fixed_side(rng.standard_normal((SHAPE[1], engine.width)).astype(np.float32), engine.mode.biases)
    start = rng.standard_normal((SHAPE[0], engine.width)).astype(np.float32)
    exact = solver.half_sweep(engine.rows_layout, v, LAM).numpy().astype(np.float64)
    got = solver.half_sweep(engine.rows_layout, v, LAM, "subspace", start, subspace_block=64, subspace_sweeps=2)
    assert rel_err(got, exact) < 1e-5


def test_subspace_needs_the_previous_factors():
    engine, _ = subspace_engine("tf1", {}, 2048)
    with pytest.raises(ValueError, match="`initial` should be the previous factors"):
        solver.half_sweep(engine.rows_layout, np.ones((SHAPE[1], K), np.float32), LAM, "subspace")


def test_subspace_sweeps_lower_the_objective_and_more_passes_track_the_exact_sweeps():
    """k = 32 in blocks of 8: every subspace sweep lowers the objective; with one pass per half-sweep it trails the
    exact sweeps (this small problem converges slowly), with 10 passes it is within 0.5 % of them after 10 sweeps."""
    rng = np.random.default_rng(8)
    m, n, k = 300, 200, 32
    rows, cols, values = random_problem(12, shape=(m, n), nnz=6000, empty_rows=(), empty_cols=())
    r = rng.uniform(0.5, 1.5, m).astype(np.float32)
    c = rng.uniform(0.5, 2.0, n).astype(np.float32)
    a, w, _ = dense_problem(rows, cols, values, (m, n), r, c, W0)
    u0 = rng.standard_normal((m, k)).astype(np.float32)
    v0 = rng.standard_normal((n, k)).astype(np.float32)
    losses = {}
    for name, passes in (("cholesky", 1), ("subspace", 1), ("subspace", 10)):
        mode = Tf1(
            WALSConfig(
                unobs_weight=W0,
                regularization=0.05,
                latent_factors=k,
                batch_entries=512,
                max_row_length=64,
                solver=name,
                subspace_block=8,
                subspace_sweeps=passes,
            )
        )
        engine = SweepEngine(mode, Partition.single(rows, cols, values, (m, n)), given_weights=(r, c))
        u, v = u0, v0
        history = [objective(a, w, u, v, 0.05)]
        for _ in range(10):
            u, v = engine.sweep(u, v)
            history.append(objective(a, w, u, v, 0.05))
        assert all(b <= a_ * (1 + 1e-6) for a_, b in zip(history, history[1:])), (name, history)
        losses[name, passes] = history[-1]
    assert losses["cholesky", 1] < losses["subspace", 1] < 1.5 * losses["cholesky", 1], losses
    assert losses["subspace", 10] <= losses["cholesky", 1] * 1.005, losses


@pytest.mark.gpu
@pytest.mark.parametrize("solver_name", ["cholesky", "cg", "subspace"])
def test_gpu_sweep_matches_cpu(solver_name):
    """The same sweep placed on the GPU and on the CPU gives the same factors (skipped without a GPU)."""
    rng = np.random.default_rng(6)
    rows, cols, values = random_problem(14, shape=SHAPE, nnz=900)
    r, c = weights_for("vector", rng, cols)
    engine = engine_for(rows, cols, values, SHAPE, r, c, W0, batch_entries=64, max_row_length=9, solver=solver_name)
    u0 = rng.standard_normal((SHAPE[0], K)).astype(np.float32)
    v0 = rng.standard_normal((SHAPE[1], K)).astype(np.float32)
    results = {}
    for device in ("/CPU:0", "/GPU:0"):
        with tf.device(device):
            u, v = u0, v0
            for _ in range(3):
                u, v = engine.sweep(u, v)
            results[device] = (u.numpy(), v.numpy())
    for cpu, gpu in zip(results["/CPU:0"], results["/GPU:0"]):
        assert rel_err(gpu, cpu.astype(np.float64)) < 1e-4


@pytest.mark.parametrize("mode", ["scalar", "vector", "vector-with-zero"])
def test_short_rows_solved_in_the_woodbury_form_match_oracle(mode):
    """k = 24: most rows have fewer than 0.7 k entries (the L x L form), the others take the k x k solve."""
    k = 24
    rng = np.random.default_rng(5)
    rows, cols, values = random_problem(9, shape=SHAPE, nnz=900, empty_rows=(3, 17), empty_cols=(5, 30))
    r, c = weights_for(mode, rng, cols)
    layouts = build_layouts(rows, cols, values, SHAPE, r, c, W0, batch_entries=64, max_row_length=40)
    threshold = solver.woodbury_max_length(k)
    for half in layouts:  # both forms occur in both halves
        lengths = half.short.lengths.numpy()
        assert (lengths <= threshold).any() and (lengths > threshold).any()
    a, w, observed = dense_problem(rows, cols, values, SHAPE, r, c, W0)
    v = rng.standard_normal((SHAPE[1], k)).astype(np.float32)
    u_ref = solve_rows(a, w, observed, v, LAM)
    assert rel_err(solver.half_sweep(layouts.rows, v, LAM), u_ref) < 1e-4
    v_ref = solve_rows(a.T, w.T, observed.T, u_ref, LAM)
    assert rel_err(solver.half_sweep(layouts.cols, u_ref.astype(np.float32), LAM), v_ref) < 1e-4


def test_woodbury_form_reports_divergence_as_nan():
    """Non-finite fixed factors give NaN solutions (the model's divergence check), not an eigensolver error."""
    rows, cols, values = random_problem(9, shape=SHAPE, nnz=300)
    layouts = build_layouts(rows, cols, values, SHAPE, np.ones(SHAPE[0]), np.ones(SHAPE[1]), W0)
    v = np.ones((SHAPE[1], 16), np.float32)
    v[0, 0] = np.inf
    assert np.isnan(solver.half_sweep(layouts.rows, v, LAM).numpy()).any()


@pytest.mark.parametrize("num_keys", [1, 300, 65536, 65537, 200_000])
def test_group_order_is_a_stable_sort(num_keys):
    """The radix grouping equals numpy's stable argsort, with one 16-bit pass or two (keys above 65,535)."""
    keys = np.random.default_rng(num_keys).integers(0, num_keys, 50_000).astype(np.int32)
    order = group_order(keys, num_keys)
    if num_keys == 1:  # one key: already grouped
        assert order is None
    else:
        np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    assert group_order(np.sort(keys), num_keys) is None  # already grouped: no permutation


def test_integer_ratings_are_kept_and_give_the_float_ratings_sweep():
    rows, cols, values = random_problem(11, shape=SHAPE, nnz=700, empty_rows=(2,), empty_cols=(4,))
    ratings = np.rint(values * 2).astype(np.int8)  # small whole numbers
    m, n = SHAPE
    r, c = np.full(m, 1.0, np.float32), np.linspace(0.5, 2.0, n).astype(np.float32)
    as_int = engine_for(rows, cols, ratings, SHAPE, r, c, W0)
    as_float = engine_for(rows, cols, ratings.astype(np.float32), SHAPE, r, c, W0)
    assert as_int.partition.by_row.values.dtype == np.int8  # no float copy of the ratings
    u0 = tf.constant(np.random.default_rng(0).normal(size=(m, K)).astype(np.float32))
    v0 = tf.constant(np.random.default_rng(1).normal(size=(n, K)).astype(np.float32))
    for got, want in zip(as_int.sweep(u0, v0), as_float.sweep(u0, v0)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    got, want = as_int.metrics(u0, v0), as_float.metrics(u0, v0)
    assert float(got["loss"]) == float(want["loss"]) and float(got["rmse"]) == float(want["rmse"])


@pytest.mark.parametrize("weights", ["none", "scalar", "vector", "vector-with-zero"])
@pytest.mark.parametrize(
    "ratings, dtype", [("whole", np.int8), ("large", np.int16), ("half-stars", np.float16), ("real", np.float32)]
)
def test_chunks_form_the_float32_weighted_ratings_of_every_entry_once(weights, ratings, dtype):
    m, n = SHAPE
    rows, cols, values = random_problem(5, shape=SHAPE, nnz=800, empty_rows=(3,), empty_cols=(7,))
    rng = np.random.default_rng(2)
    values = {
        "whole": values.astype(np.int64),
        "large": values * 1000,
        "half-stars": values - 0.5 * rng.integers(0, 2, values.size),
        "real": values + rng.uniform(-0.3, 0.3, values.size),
    }[ratings]
    r, c = weights_for(weights, rng, cols)
    half = build_layouts(rows, cols, values, SHAPE, r, c, W0, batch_entries=8, max_row_length=7, bias_offsets=True).rows
    assert half.short.targets.dtype == dtype and half.num_long > 0  # a_e kept in the narrowest exact dtype

    def entries(chunk):
        owners = tf.broadcast_to(chunk.owners[:, None], tf.shape(chunk.indices))
        return tuple(tf.reshape(x, [-1]) for x in (owners, chunk.indices, chunk.rhs_weights, chunk.offset_weights))

    kinds = (tf.int32, tf.int32, tf.float32, tf.float32)
    parts = [solver._map_chunks(c, entries, ([],) * 4, dtypes=kinds) for c in (half.short, half.pieces)]
    got_rows, got_cols, got_rhs, got_offsets = [np.concatenate([p[i].numpy() for p in parts]) for i in range(4)]
    real = got_cols != n  # padding entries point at row n
    np.testing.assert_array_equal(got_rhs[~real], 0.0)
    key = got_rows[real] * n + got_cols[real]
    order = np.argsort(key)
    np.testing.assert_array_equal(key[order], np.sort(rows * n + cols))  # every entry exactly once

    # The oracle: W = w0 + R_i C_j in float32, b = W a (/ sqrt(C_j)), o = W (/ C_j) when the C_j differ.
    want_order = np.argsort(rows * n + cols)
    i, j, a = rows[want_order], cols[want_order], np.asarray(values, np.float32)[want_order]
    weight = np.full(i.size, np.float32(W0)) if r is None else r[i] * c[j] + np.float32(W0)
    rhs, offsets = weight * a, weight
    if half.fixed_scale is not None:
        rhs, offsets = rhs / np.sqrt(c)[j], offsets / c[j]
    np.testing.assert_array_equal(got_rhs[real][order], rhs)
    np.testing.assert_array_equal(got_offsets[real][order], offsets)


@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 3, 5, 4)])
def test_rows_dot_is_each_entrys_dot_product_with_its_units_vector(shape):
    rng = np.random.default_rng(7)
    gathered = rng.standard_normal(shape)
    x = rng.standard_normal(shape[:-2] + shape[-1:])
    expected = np.einsum("...lw,...w->...l", gathered, x)  # float64
    got = solver.rows_dot(tf.constant(gathered, tf.float32), tf.constant(x, tf.float32)).numpy()
    assert got.shape == shape[:-1]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
