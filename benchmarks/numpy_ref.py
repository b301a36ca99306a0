"""A vectorised numpy reference of the exact WALS sweep, with the same degree-bucketed layout as wals2.

With X the solved side, Y the fixed side, w0 the unobserved weight, lambda the regularisation and R, C the row
and column weights, every row i of a half-sweep solves

    (lambda I + w0 Y'Y + sum_{j in obs(i)} R_i C_j y_j y_j') x_i = sum_{j in obs(i)} (w0 + R_i C_j) a_ij y_j

and rows without entries get x_i = 0. Rows are grouped by degree into length buckets (a ladder growing ~12.5 %
per step), padded with an index that points at an appended zero row, and cut into sub-batches of at most
``batch_entries`` gathered entries. Per sub-batch: one gather, a batched Gram (``np.matmul``), a batched
right-hand side and a batched ``np.linalg.solve``. Rows longer than ``max_row_length`` are cut into pieces whose
Grams and right-hand sides are summed before one solve. When every observed column has C_j > 0 the weights are
applied through z_j = sqrt(C_j) y_j (Gram R_i Z_g'Z_g, no per-entry pass); otherwise per entry.

``sweep(..., pool=None)`` runs the sub-batches one after the other; pass a ``ThreadPoolExecutor`` to map them
over its threads (numpy releases the GIL in matmul and solve; keep BLAS at 1 thread then).
"""

from __future__ import annotations

import functools
from concurrent.futures import Executor
from typing import NamedTuple

import numpy as np

MAX_ROWS_PER_CHUNK = 16384


class Chunk(NamedTuple):
    """One sub-batch of ``b`` units padded to length ``L``.

    Attributes:
        indices: int32 [b, L], rows of the fixed factors; padding points at the zero row ``num_fixed``.
        coefs: [b, L], right-hand-side coefficient of every entry (0 on padding).
        gram_weights: [b, L], per-entry Gram weight R_i C_j (general weights), else None.
        row_scale: [b], R_i of each unit (separable weights), else None.
        targets: int64, the solved row of each unit (short rows), or for pieces the local long-row index of
            each segment of consecutive units.
        segment_starts: int64, first unit of each segment (pieces of long rows), else None.
    """

    indices: np.ndarray
    coefs: np.ndarray
    gram_weights: np.ndarray | None
    row_scale: np.ndarray | None
    targets: np.ndarray
    segment_starts: np.ndarray | None


class HalfLayout(NamedTuple):
    """Sub-batches of one half-sweep: short rows, pieces of long rows, and the long rows themselves."""

    num_rows: int
    dtype: np.dtype
    chunks: tuple[Chunk, ...]
    piece_chunks: tuple[Chunk, ...]
    long_rows: np.ndarray
    fixed_scale: np.ndarray | None


class Layouts(NamedTuple):
    """``rows`` solves X against Y; ``cols`` solves Y against X."""

    rows: HalfLayout
    cols: HalfLayout


def length_ladder(max_length: int) -> np.ndarray:
    """Bucket lengths 1, 2, ..., growing ~12.5 % per step, ending exactly at ``max_length``."""
    ladder = [1]
    while ladder[-1] < max_length:
        ladder.append(min(max_length, max(ladder[-1] + 1, int(np.ceil(ladder[-1] * 1.125)))))
    return np.asarray(ladder)


def build_layouts(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    row_weights: np.ndarray,
    col_weights: np.ndarray,
    unobserved_weight: float,
    dtype: type = np.float32,
    batch_entries: int = 65536,
    max_row_length: int = 2048,
) -> Layouts:
    """Builds both half-sweep layouts of a COO matrix (no duplicate entries).

    Args:
        rows: int [nnz], row index of every entry.
        cols: int [nnz], column index of every entry.
        values: [nnz], a_ij.
        shape: (m, n).
        row_weights: [m], R.
        col_weights: [n], C.
        unobserved_weight: w0.
        dtype: float dtype of the coefficients and of the solve.
        batch_entries: gathered entries per sub-batch.
        max_row_length: rows longer than this are cut into pieces.

    Returns:
        The ``Layouts`` of the row and the column half.
    """
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    values = np.asarray(values, np.float64)
    row_weights, col_weights = np.asarray(row_weights, np.float64), np.asarray(col_weights, np.float64)
    common = dict(
        unobserved_weight=unobserved_weight, dtype=dtype, batch_entries=batch_entries, max_row_length=max_row_length
    )
    return Layouts(
        rows=build_half(rows, cols, values, shape[0], shape[1], row_weights, col_weights, **common),
        cols=build_half(cols, rows, values, shape[1], shape[0], col_weights, row_weights, **common),
    )


def build_half(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    num_rows: int,
    num_fixed: int,
    own_weights: np.ndarray,
    fixed_weights: np.ndarray,
    unobserved_weight: float,
    dtype: type,
    batch_entries: int,
    max_row_length: int,
) -> HalfLayout:
    """The layout solving ``num_rows`` rows (weights ``own_weights``) against ``num_fixed`` fixed rows."""
    order = np.argsort(rows, kind="stable")
    rows, cols, values = rows[order], cols[order], values[order]
    degree = np.bincount(rows, minlength=num_rows)
    starts = np.cumsum(degree) - degree
    d = own_weights[rows] * fixed_weights[cols]
    coefs = (unobserved_weight + d) * values
    separable = bool(np.all(fixed_weights[cols] > 0))
    fixed_scale = np.sqrt(fixed_weights) if separable else None
    entries = {"indices": cols.astype(np.int32)}
    if separable:
        entries["coefs"] = (coefs / fixed_scale[cols]).astype(dtype)
    else:
        entries["coefs"] = coefs.astype(dtype)
        entries["gram_weights"] = d.astype(dtype)
    scale = own_weights.astype(dtype) if separable else None
    pack = functools.partial(
        _pack, entries=entries, pad_index=num_fixed, ladder=length_ladder(max_row_length), batch_entries=batch_entries
    )

    short = np.flatnonzero((degree > 0) & (degree <= max_row_length))
    chunks = pack(starts[short], degree[short], short, None if scale is None else scale[short], pieces=False)

    long_rows = np.flatnonzero(degree > max_row_length)
    num_pieces = -(-degree[long_rows] // max_row_length)
    owner = np.repeat(np.arange(long_rows.size), num_pieces)
    piece_len = np.repeat(-(-degree[long_rows] // num_pieces), num_pieces)
    index_in_row = np.arange(owner.size) - np.repeat(np.cumsum(num_pieces) - num_pieces, num_pieces)
    piece_start = starts[long_rows][owner] + index_in_row * piece_len
    piece_length = np.minimum(piece_len, degree[long_rows][owner] - index_in_row * piece_len)
    piece_scale = None if scale is None else scale[long_rows][owner]
    piece_chunks = pack(piece_start, piece_length, owner, piece_scale, pieces=True)
    return HalfLayout(
        num_rows=int(num_rows),
        dtype=np.dtype(dtype),
        chunks=chunks,
        piece_chunks=piece_chunks,
        long_rows=long_rows,
        fixed_scale=None if fixed_scale is None else fixed_scale.astype(dtype),
    )


def _pack(
    unit_start: np.ndarray,
    unit_len: np.ndarray,
    unit_target: np.ndarray,
    unit_scale: np.ndarray | None,
    pieces: bool,
    entries: dict[str, np.ndarray],
    pad_index: int,
    ladder: np.ndarray,
    batch_entries: int,
) -> tuple[Chunk, ...]:
    """Pads units (runs ``[start, start + len)`` of the sorted entries) to their bucket length and chunks them.

    For ``pieces``, the units of a chunk are ordered by target and grouped into segments, one per target.
    """
    chunks = []
    bucket = np.searchsorted(ladder, unit_len)
    for b in np.unique(bucket):
        members = np.flatnonzero(bucket == b)
        if pieces:
            members = members[np.argsort(unit_target[members], kind="stable")]
        length = int(ladder[b])
        offsets = np.arange(length)
        valid = offsets[None, :] < unit_len[members, None]
        take = np.where(valid, unit_start[members, None] + offsets[None, :], 0)
        padded = {
            key: np.where(valid, source[take], pad_index if key == "indices" else 0).astype(source.dtype)
            for key, source in entries.items()
        }
        per_chunk = max(1, min(batch_entries // length, MAX_ROWS_PER_CHUNK))
        for s in range(0, members.size, per_chunk):
            part = slice(s, s + per_chunk)
            targets = unit_target[members[part]]
            segment_starts = None
            if pieces:
                segment_starts = np.flatnonzero(np.r_[True, targets[1:] != targets[:-1]])
                targets = targets[segment_starts]
            chunks.append(
                Chunk(
                    indices=padded["indices"][part],
                    coefs=padded["coefs"][part],
                    gram_weights=padded["gram_weights"][part] if "gram_weights" in padded else None,
                    row_scale=None if unit_scale is None else unit_scale[members[part]],
                    targets=targets,
                    segment_starts=segment_starts,
                )
            )
    return tuple(chunks)


def _gram_and_rhs(table: np.ndarray, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit Gram [b, k, k] and right-hand side [b, k] of one chunk."""
    gathered = table[chunk.indices]  # [b, L, k]
    rhs = np.matmul(chunk.coefs[:, None, :], gathered)[:, 0, :]
    if chunk.gram_weights is None:
        gram = np.matmul(gathered.transpose(0, 2, 1), gathered) * chunk.row_scale[:, None, None]
    else:
        gram = np.matmul((gathered * chunk.gram_weights[..., None]).transpose(0, 2, 1), gathered)
    return gram, rhs


def _solve_chunk(table: np.ndarray, g0: np.ndarray, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
    """(rows, solutions) of a chunk of short rows."""
    gram, rhs = _gram_and_rhs(table, chunk)
    return chunk.targets, np.linalg.solve(gram + g0, rhs[..., None])[..., 0]


def _reduce_chunk(table: np.ndarray, chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(long rows, summed Grams, summed right-hand sides) of a chunk of long-row pieces."""
    gram, rhs = _gram_and_rhs(table, chunk)
    starts = chunk.segment_starts
    return chunk.targets, np.add.reduceat(gram, starts, axis=0), np.add.reduceat(rhs, starts, axis=0)


def half_sweep(
    layout: HalfLayout,
    fixed: np.ndarray,
    regularization: float,
    unobserved_weight: float,
    pool: Executor | None = None,
) -> np.ndarray:
    """Solves every row of ``layout`` exactly against ``fixed`` [n, k]; returns the new factors [m, k].

    ``pool``: an executor whose ``map`` runs the sub-batches concurrently; None runs them in order.
    """
    dtype = layout.dtype
    fixed = np.asarray(fixed, dtype)
    k = fixed.shape[1]
    g0 = regularization * np.eye(k, dtype=dtype) + unobserved_weight * (fixed.T @ fixed)
    scaled = fixed if layout.fixed_scale is None else fixed * layout.fixed_scale[:, None]
    table = np.concatenate([scaled, np.zeros((1, k), dtype)])
    run = map if pool is None else pool.map
    out = np.zeros((layout.num_rows, k), dtype)
    for targets, solution in run(functools.partial(_solve_chunk, table, g0), layout.chunks):
        out[targets] = solution
    if layout.long_rows.size:
        gram = np.zeros((layout.long_rows.size, k, k), dtype)
        rhs = np.zeros((layout.long_rows.size, k), dtype)
        for targets, piece_gram, piece_rhs in run(functools.partial(_reduce_chunk, table), layout.piece_chunks):
            gram[targets] += piece_gram
            rhs[targets] += piece_rhs
        out[layout.long_rows] = np.linalg.solve(gram + g0, rhs[..., None])[..., 0]
    return out


def sweep(
    layouts: Layouts,
    row_factors: np.ndarray,
    col_factors: np.ndarray,
    regularization: float,
    unobserved_weight: float,
    pool: Executor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One full sweep: all rows against ``col_factors``, then all columns against the new rows.

    ``row_factors`` (the previous rows, a warm start for an iterative solve) is unused by the exact solve.
    """
    del row_factors
    rows = half_sweep(layouts.rows, col_factors, regularization, unobserved_weight, pool)
    return rows, half_sweep(layouts.cols, rows, regularization, unobserved_weight, pool)
