"""Degree-bucketed, padded index layouts of the ratings, one per half-sweep, built once per fit on the host.

A half-sweep solves every row i of an m x n matrix A against the fixed factors Y of the other side. The layout
groups the rows by their number of observed entries (degree) into length buckets on a ladder that grows ~12.5 %
per step, pads each row to its bucket length with the index n (which points at an all-zero row appended to the
gathered factor table, so padding adds nothing), and cuts every bucket into chunks of about ``batch_entries``
gathered entries. Rows longer than ``max_row_length`` are cut into near-equal pieces that go through the same
buckets; their partial Gramians and right-hand sides are summed before one solve.

All chunks of a half are stored back to back in flat arrays (``Chunks``), chunk c holding ``rows`` units of
``length`` entries, so the solver runs them in a single ``tf.while_loop`` whose graph does not grow with the
number of buckets or chunks.

Per observed entry e = (i, j, a_ij) it stores the static coefficients of the normal equation

    (lambda I + w0 Y'Y + sum_j d_ij y_j y_j') x_i = sum_j (w0 + d_ij) a_ij y_j,      d_ij = R_i C_j,

in one of three forms (``kind``):

* ``"uniform"``: d = 0 everywhere (weights None, plain ALS): only b_e = w0 a_ij; every row shares one system.
* ``"separable"``: d_ij = R_i C_j with C_j > 0 on every observed column: with z_j = sqrt(C_j) y_j the Gram is
  R_i Z_g'Z_g, so the layout keeps ``row_scale`` R_i, ``fixed_scale`` sqrt(C) and b_e = (w0 + d_ij) a_ij / sqrt(C_j).
* ``"general"``: the per-entry Gram weight g_e = d_ij and b_e = (w0 + d_ij) a_ij. Per-entry weights that do
  not factorise (the implicit-feedback confidence alpha r_ij) always take this path.

Two options serve the explicit-feedback mode: ``bias_offsets`` keeps o_e = W_ij (in the units of the gathered
table) so that the solver can subtract the other side's bias c_j from every target, and
``scale_regularization`` keeps each row's count n_i so that lambda becomes lambda n_i (ALS-WR).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf


class Chunks(NamedTuple):
    """Units (rows, or pieces of long rows) padded to their bucket length and chunked, in flat arrays.

    Chunk c holds the units ``unit_bounds[c]:unit_bounds[c + 1]`` (b of them), whose entries are
    ``entry_bounds[c]:entry_bounds[c + 1]``, a row-major [b, lengths[c]] block.

    Attributes:
        indices: int32 [E], indices into the fixed factors; padding = num_fixed.
        rhs_weights: float32 [E], b_e (0 on padding).
        gram_weights: float32 [E], g_e ("general" kind), else None.
        offset_weights: float32 [E], o_e with ``bias_offsets``, else None.
        row_scale: float32 [U], R_i of each unit ("separable" kind), else None.
        owners: int32 [U], the solved row of each unit.
        entry_bounds: int32 [C + 1]; unit_bounds: int32 [C + 1]; lengths: int32 [C].
        num_chunks: C, a Python int.
    """

    indices: tf.Tensor
    rhs_weights: tf.Tensor
    gram_weights: tf.Tensor | None
    offset_weights: tf.Tensor | None
    row_scale: tf.Tensor | None
    owners: tf.Tensor
    entry_bounds: tf.Tensor
    unit_bounds: tf.Tensor
    lengths: tf.Tensor
    num_chunks: int


class Chunk(NamedTuple):
    """One chunk's tensors: [b, L] entries and [b] units (fields as in ``Chunks``, None where absent)."""

    indices: tf.Tensor
    rhs_weights: tf.Tensor
    gram_weights: tf.Tensor | None
    offset_weights: tf.Tensor | None
    row_scale: tf.Tensor | None
    owners: tf.Tensor


class HalfLayout(NamedTuple):
    """Everything a half-sweep needs besides the fixed factors.

    Attributes:
        kind: "uniform", "separable" or "general" (see the module docstring).
        num_rows: m, the rows solved.
        num_fixed: n, the rows of the fixed factor matrix.
        short: rows of at most ``max_row_length`` entries, one unit each, solved chunk by chunk.
        pieces: pieces of long rows; their Gramians and right-hand sides are reduced per long row.
        piece_segments: int32 [pieces], the long row (0..num_long-1) of each piece.
        num_long: number of long rows; their solutions follow the short rows'.
        long_rows: int32 [num_long], the rows cut into pieces, in the order of their solutions.
        fixed_scale: float32 [n], sqrt(C) ("separable" kind), else None.
        gather_order: int32 [m], position of row i in concat(short solutions, long solutions, [0]): rows
            without entries point at the final zero row.
        reg_scale: float32 [m], the multiplier of lambda per row (n_i with ``scale_regularization``), else None.
        bias_offsets: whether the chunks carry ``offset_weights``.
        unobserved_weight: w0, the weight its right-hand sides were built with (the solver's w0 Y'Y uses it).
    """

    kind: str
    num_rows: int
    num_fixed: int
    short: Chunks
    pieces: Chunks
    piece_segments: tf.Tensor
    num_long: int
    long_rows: tf.Tensor
    fixed_scale: tf.Tensor | None
    gather_order: tf.Tensor
    reg_scale: tf.Tensor | None
    bias_offsets: bool
    unobserved_weight: float


class Layouts(NamedTuple):
    """The two halves of a sweep: ``rows`` solves U against V, ``cols`` solves V against U."""

    rows: HalfLayout
    cols: HalfLayout


def length_ladder(max_length: int) -> np.ndarray:
    """Bucket lengths 1, 2, ..., growing ~12.5 % per step, ending exactly at ``max_length``."""
    ladder = [1]
    while ladder[-1] < max_length:
        ladder.append(min(max_length, max(ladder[-1] + 1, int(np.ceil(ladder[-1] * 1.125)))))
    return np.asarray(ladder, dtype=np.int64)


def build_layouts(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    row_weights: np.ndarray | None,
    col_weights: np.ndarray | None,
    unobserved_weight: float,
    batch_entries: int = 65536,
    max_row_length: int = 2048,
    entry_weights: np.ndarray | None = None,
    bias_offsets: bool = False,
    scale_regularization: bool = False,
) -> Layouts:
    """Builds both half-sweep layouts of a COO matrix.

    Args:
        rows, cols: int arrays [nnz], indices of the observed entries (no duplicates).
        values: float array [nnz], a_ij (the targets).
        shape: (m, n).
        row_weights, col_weights: float32 [m] and [n] (R and C), or both None for plain ALS.
        unobserved_weight: w0.
        batch_entries, max_row_length: chunk and piece sizes (see ``WALSConfig``).
        entry_weights: float [nnz], d_ij given per entry (instead of R_i C_j; R and C must then be None).
        bias_offsets: keep o_e = W_ij for the solver's bias offsets (explicit mode).
        scale_regularization: lambda n_i per row instead of lambda (ALS-WR).
    """
    num_rows, num_cols = shape
    if (row_weights is None) != (col_weights is None):
        raise ValueError("`row_weights` and `col_weights` should both be None (plain ALS) or both be given.")
    if entry_weights is not None and row_weights is not None:
        raise ValueError("Give either `entry_weights` or `row_weights`/`col_weights`, not both.")
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    d = None if entry_weights is None else np.asarray(entry_weights, dtype=np.float64)
    if d is not None and (d.shape != values.shape or not np.all(np.isfinite(d)) or np.any(d < 0)):
        raise ValueError(f"`entry_weights` should be {values.shape[0]} finite non-negative values.")
    common = dict(
        unobserved_weight=unobserved_weight,
        batch_entries=batch_entries,
        max_row_length=max_row_length,
        entry_weights=d,
        bias_offsets=bias_offsets,
        scale_regularization=scale_regularization,
    )
    return Layouts(
        rows=build_half(rows, cols, values, num_rows, num_cols, row_weights, col_weights, **common),
        cols=build_half(cols, rows, values, num_cols, num_rows, col_weights, row_weights, **common),
    )


def build_half(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    num_rows: int,
    num_fixed: int,
    own_weights: np.ndarray | None,
    fixed_weights: np.ndarray | None,
    unobserved_weight: float,
    batch_entries: int,
    max_row_length: int,
    entry_weights: np.ndarray | None = None,
    bias_offsets: bool = False,
    scale_regularization: bool = False,
) -> HalfLayout:
    """The layout that solves the ``num_rows`` rows against ``num_fixed`` fixed factors.

    ``own_weights`` are the weights of the solved side (R for the row half), ``fixed_weights`` those of the
    fixed side (C for the row half); the column half is the same call with the roles swapped.
    """
    w0 = float(unobserved_weight)
    order = np.argsort(rows, kind="stable")  # entries grouped by row; their order within a row is free
    rows, cols, values = rows[order], cols[order], values[order]
    degree = np.bincount(rows, minlength=num_rows).astype(np.int64)
    starts = np.cumsum(degree) - degree

    if entry_weights is not None:
        d = entry_weights[order]
    elif own_weights is None:
        d = np.zeros_like(values)
    else:
        d = own_weights.astype(np.float64)[rows] * fixed_weights.astype(np.float64)[cols]
    rhs = (w0 + d) * values
    offsets = w0 + d if bias_offsets else None
    if not np.any(d):
        kind = "uniform"
    elif entry_weights is None and np.all(fixed_weights.astype(np.float64)[cols] > 0):
        kind = "separable"
    else:
        kind = "general"

    fixed_scale = None
    gram = None
    if kind == "separable":
        root = np.sqrt(fixed_weights.astype(np.float64))
        rhs = rhs / root[cols]
        if offsets is not None:  # o_e c~_j z~_j = W c_j y_j with c~ = sqrt(C_j) c_j and z~ = sqrt(C_j) y_j
            offsets = offsets / fixed_weights.astype(np.float64)[cols]
        fixed_scale = tf.constant(root.astype(np.float32))
    elif kind == "general":
        gram = d
    entry_cols = cols.astype(np.int32)
    limit = np.finfo(np.float32).max
    if not (np.all(np.abs(rhs) < limit) and (gram is None or np.all(gram < limit))):
        raise ValueError(
            "The weighted ratings (w0 + R_i C_j) a_ij overflow float32: lower the ratings' scale or the weights "
            f"(largest |(w0 + d) a| = {np.max(np.abs(rhs)):.3g})."
        )
    entry_rhs = rhs.astype(np.float32)
    entry_gram = None if gram is None else gram.astype(np.float32)
    entry_offsets = None if offsets is None else offsets.astype(np.float32)

    ladder = length_ladder(max_row_length)
    present = np.flatnonzero(degree > 0)
    short = present[degree[present] <= max_row_length]
    long_rows = present[degree[present] > max_row_length]
    entries = (entry_cols, entry_rhs, entry_gram, entry_offsets)
    unit_scale = None if kind != "separable" else own_weights.astype(np.float32)

    # Short rows: one unit each, in bucket order; position[i] = where row i's solution lands.
    short_chunks, short_order = _chunks(
        starts[short], degree[short], short, ladder, entries, unit_scale, num_fixed, batch_entries
    )
    position = np.full(num_rows, -1, dtype=np.int64)
    position[short[short_order]] = np.arange(short.size)

    # Long rows: near-equal pieces of at most max_row_length entries.
    num_pieces = -(-degree[long_rows] // max_row_length)
    piece_len = -(-degree[long_rows] // num_pieces)
    owner = np.repeat(np.arange(long_rows.size), num_pieces)
    first_piece = (np.cumsum(num_pieces) - num_pieces).astype(np.int64)
    index_in_row = np.arange(owner.size) - np.repeat(first_piece, num_pieces)
    piece_start = starts[long_rows][owner] + index_in_row * piece_len[owner]
    piece_length = np.minimum(piece_len[owner], degree[long_rows][owner] - index_in_row * piece_len[owner])
    piece_chunks, piece_order = _chunks(
        piece_start, piece_length, long_rows[owner], ladder, entries, unit_scale, num_fixed, batch_entries
    )
    position[long_rows] = short.size + np.arange(long_rows.size)
    position[position < 0] = short.size + long_rows.size  # rows without entries: the trailing zero row

    return HalfLayout(
        kind=kind,
        num_rows=int(num_rows),
        num_fixed=int(num_fixed),
        short=short_chunks,
        pieces=piece_chunks,
        piece_segments=tf.constant(owner[piece_order].astype(np.int32)),
        num_long=int(long_rows.size),
        long_rows=tf.constant(long_rows.astype(np.int32)),
        fixed_scale=fixed_scale,
        gather_order=tf.constant(position.astype(np.int32)),
        reg_scale=tf.constant(degree.astype(np.float32)) if scale_regularization else None,
        bias_offsets=bias_offsets,
        unobserved_weight=w0,
    )


def _chunks(unit_start, unit_len, unit_owner, ladder, entries, unit_scale, num_fixed, batch_entries):
    """Buckets units [start, start + len) of the sorted entries by length, pads and chunks them.

    Returns the ``Chunks`` and the permutation of the units into chunk order.
    """
    entry_cols, entry_rhs, entry_gram, entry_offsets = entries
    bucket = np.searchsorted(ladder, unit_len)
    order = np.argsort(bucket, kind="stable")
    lengths = ladder[bucket[order]]
    # Chunk boundaries: within each bucket, runs of at most batch_entries // L (<= 16384) units.
    per_chunk = np.clip(batch_entries // ladder, 1, 16384)
    chunk_lengths, chunk_units = [], []
    for b, count in zip(*np.unique(bucket, return_counts=True)):
        size = int(per_chunk[b])
        sizes = np.full(count // size, size)
        if count % size:
            sizes = np.append(sizes, count % size)
        chunk_units.append(sizes)
        chunk_lengths.append(np.full(sizes.size, ladder[b]))
    chunk_units = np.concatenate(chunk_units) if chunk_units else np.zeros(0, np.int64)
    chunk_lengths = np.concatenate(chunk_lengths) if chunk_lengths else np.zeros(0, np.int64)

    # Flat padded entries: unit u of length L_u occupies [offset_u, offset_u + L_u).
    unit_offset = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    slot_unit = np.repeat(np.arange(order.size), lengths)
    slot_pos = np.arange(total) - unit_offset[slot_unit]
    valid = slot_pos < unit_len[order][slot_unit]
    source = np.where(valid, unit_start[order][slot_unit] + slot_pos, 0)

    def flat(values, pad, dtype):
        return tf.constant(np.where(valid, values[source], pad).astype(dtype)) if values is not None else None

    return (
        Chunks(
            indices=flat(entry_cols, num_fixed, np.int32),
            rhs_weights=flat(entry_rhs, 0.0, np.float32),
            gram_weights=flat(entry_gram, 0.0, np.float32),
            offset_weights=flat(entry_offsets, 0.0, np.float32),
            row_scale=None if unit_scale is None else tf.constant(unit_scale[unit_owner[order]]),
            owners=tf.constant(unit_owner[order].astype(np.int32)),
            entry_bounds=tf.constant(np.concatenate([[0], np.cumsum(chunk_units * chunk_lengths)]).astype(np.int32)),
            unit_bounds=tf.constant(np.concatenate([[0], np.cumsum(chunk_units)]).astype(np.int32)),
            lengths=tf.constant(chunk_lengths.astype(np.int32)),
            num_chunks=int(chunk_units.size),
        ),
        order,
    )
