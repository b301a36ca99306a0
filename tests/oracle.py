"""A deliberately naive float64 reference of TF1 WALS: dense weight matrix, one np.linalg.solve per row."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from wals2.layout import HalfLayout, build_half


def dense_problem(rows, cols, values, shape, row_weights, col_weights, w0):
    """Dense A (targets, 0 where unobserved), W (TF1 weights) and the observed mask, all float64."""
    a = np.zeros(shape)
    observed = np.zeros(shape, dtype=bool)
    a[rows, cols] = values
    observed[rows, cols] = True
    if row_weights is None:
        w_obs = np.full(shape, w0)
    else:
        w_obs = w0 + np.outer(np.asarray(row_weights, float), np.asarray(col_weights, float))
    w = np.where(observed, w_obs, w0)
    return a, w, observed


def solve_rows(a, w, observed, fixed, lam):
    """argmin_x sum_j w_ij (a_ij - x.y_j)^2 + lam |x|^2 for every row; rows with no observation give 0."""
    return np.stack([np.linalg.solve(lhs, rhs) for lhs, rhs in row_systems(a, w, observed, fixed, lam)])


def row_systems(a, w, observed, fixed, lam):
    """(lhs_i, rhs_i) of every row's normal equation, lam I + Y' W_i Y and Y' W_i a_i (float64); for a row with no
    observation (lam I, 0), whose solution is 0."""
    fixed = np.asarray(fixed, dtype=np.float64)
    k = fixed.shape[1]
    for i in range(a.shape[0]):
        if not observed[i].any():
            yield lam * np.eye(k), np.zeros(k)
            continue
        yield lam * np.eye(k) + (fixed * w[i][:, None]).T @ fixed, fixed.T @ (w[i] * a[i])


def block_descent_rows(a, w, observed, fixed, lam, x, starts, size, exact_upto):
    """One pass of block Gauss-Seidel per row, from ``x``, on lhs_i x = rhs_i (the systems of ``solve_rows``): for
    each block B = [s, s + size) in turn, x_B += lhs_i[B, B]^-1 (rhs_i - lhs_i x)_B. Rows with at most
    ``exact_upto`` observations are solved exactly; rows with none give 0."""
    out = []
    for i, (lhs, rhs) in enumerate(row_systems(a, w, observed, fixed, lam)):
        xi = np.asarray(x[i], np.float64).copy()
        if observed[i].sum() <= exact_upto:
            out.append(np.linalg.solve(lhs, rhs))  # 0 for a row with no observation
            continue
        for s in starts:
            block = slice(s, s + size)
            xi[block] += np.linalg.solve(lhs[block, block], (rhs - lhs @ xi)[block])
        out.append(xi)
    return np.stack(out)


def cg_rows(a, w, observed, fixed, lam, x, steps, exact_longer_than):
    """``steps`` conjugate-gradient iterations per row from ``x`` on lhs_i x = rhs_i (the systems of
    ``solve_rows``); rows with more than ``exact_longer_than`` observations are solved exactly, rows with none
    give 0."""
    out = []
    for i, (lhs, rhs) in enumerate(row_systems(a, w, observed, fixed, lam)):
        count = observed[i].sum()
        if count == 0 or count > exact_longer_than:
            out.append(np.linalg.solve(lhs, rhs))
            continue
        xi = np.asarray(x[i], np.float64).copy()
        residual = rhs - lhs @ xi
        direction = residual.copy()
        for _ in range(steps):
            product = lhs @ direction
            step = (residual @ residual) / (direction @ product)
            xi += step * direction
            new_residual = residual - step * product
            direction = new_residual + (new_residual @ new_residual) / (residual @ residual) * direction
            residual = new_residual
        out.append(xi)
    return np.stack(out)


def objective(a, w, u, v, lam):
    """TF1's loss: sum_ij W_ij (A_ij - u_i.v_j)^2 + lam (|U|^2 + |V|^2)."""
    u = np.asarray(u, np.float64)
    v = np.asarray(v, np.float64)
    return float(np.sum(w * (a - u @ v.T) ** 2) + lam * (np.sum(u**2) + np.sum(v**2)))


def random_problem(seed, shape=(60, 45), nnz=700, empty_rows=(3, 17), empty_cols=(5,), skew=True):
    """A skewed random sparse problem with some empty rows and columns."""
    rng = np.random.default_rng(seed)
    m, n = shape
    p_rows = rng.zipf(1.6, m).astype(float) if skew else np.ones(m)
    p_cols = rng.zipf(1.6, n).astype(float) if skew else np.ones(n)
    p_rows[list(empty_rows)] = 0
    p_cols[list(empty_cols)] = 0
    prob = np.outer(p_rows, p_cols).ravel()
    prob /= prob.sum()
    nnz = min(nnz, int(np.count_nonzero(prob)))
    cells = rng.choice(m * n, size=nnz, replace=False, p=prob)
    rows, cols = np.divmod(cells, n)
    values = rng.integers(1, 6, size=nnz).astype(np.float64)
    return rows, cols, values


class Layouts(NamedTuple):
    """The two halves of a sweep: ``rows`` solves U against V, ``cols`` solves V against U."""

    rows: HalfLayout
    cols: HalfLayout


def build_layouts(
    rows,
    cols,
    values,
    shape,
    row_weights,
    col_weights,
    unobserved_weight,
    batch_entries=65536,
    max_row_length=2048,
    entry_weights=None,
    bias_offsets=False,
    scale_regularization=False,
) -> Layouts:
    """Both ``layout.build_half`` layouts of a COO matrix (the engine builds each worker's blocks the same way)."""
    common = dict(
        unobserved_weight=unobserved_weight,
        batch_entries=batch_entries,
        max_row_length=max_row_length,
        entry_weights=entry_weights,
        bias_offsets=bias_offsets,
        scale_regularization=scale_regularization,
    )
    rows, cols = np.asarray(rows), np.asarray(cols)
    return Layouts(
        rows=build_half(rows, cols, values, shape[0], shape[1], row_weights, col_weights, **common),
        cols=build_half(cols, rows, values, shape[1], shape[0], col_weights, row_weights, **common),
    )
