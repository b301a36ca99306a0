"""Degree-bucketed, padded index layouts of the ratings, one per half-sweep, built once per fit on the host.

A half-sweep solves every row i of an m x n matrix A against the fixed factors Y of the other side. The layout
groups the rows by their number of observed entries (degree) into length buckets on a ladder that grows ~12.5 %
per step, pads each row to its bucket length with the index n (which points at an all-zero row appended to the
gathered factor table, so padding adds nothing), and cuts every bucket into chunks of about ``batch_entries``
gathered entries. Rows longer than ``max_row_length`` are cut into near-equal pieces that go through the same
buckets; their partial Gramians and right-hand sides are summed before one solve.

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


class Block(NamedTuple):
    """One length bucket, chunked: ``num_chunks`` chunks of ``rows`` units of ``length`` entries each.

    Attributes:
        indices: int32 [num_chunks, rows, length], indices into the fixed factors; padding = num_fixed.
        rhs_weights: float32 [num_chunks, rows, length], b_e (0 on padding).
        gram_weights: float32 [num_chunks, rows, length], g_e ("general" kind), else None.
        row_scale: float32 [num_chunks, rows], R_i ("separable" kind), else None.
        offset_weights: float32 [num_chunks, rows, length], o_e with ``bias_offsets``, else None.
        owners: int32 [num_chunks, rows], the solved row of each unit (num_rows for padding units).
    """

    indices: tf.Tensor
    rhs_weights: tf.Tensor
    gram_weights: tf.Tensor | None
    row_scale: tf.Tensor | None
    offset_weights: tf.Tensor | None
    owners: tf.Tensor


class HalfLayout(NamedTuple):
    """Everything a half-sweep needs besides the fixed factors.

    Attributes:
        kind: "uniform", "separable" or "general" (see the module docstring).
        num_rows: m, the rows solved.
        num_fixed: n, the rows of the fixed factor matrix.
        blocks: short rows, solved chunk by chunk; their solutions concatenate in block order.
        piece_blocks: pieces of long rows; their Gramians and right-hand sides are reduced per long row.
        piece_segments: int32 [total piece units], the long row of each piece unit (num_long for padding).
        num_long: number of long rows; their solutions follow the short rows'.
        fixed_scale: float32 [n], sqrt(C) ("separable" kind), else None.
        gather_order: int32 [m], position of row i in concat(short solutions, long solutions, [0]): rows
            without entries point at the final zero row.
        reg_scale: float32 [m + 1], the multiplier of lambda per row (n_i with ``scale_regularization``, and 0
            for the padding row m), else None (lambda for every row).
        long_rows: int32 [num_long], the rows cut into pieces, in the order of their solutions.
        bias_offsets: whether blocks carry ``offset_weights``.
    """

    kind: str
    num_rows: int
    num_fixed: int
    blocks: tuple[Block, ...]
    piece_blocks: tuple[Block, ...]
    piece_segments: tf.Tensor
    num_long: int
    fixed_scale: tf.Tensor | None
    gather_order: tf.Tensor
    long_rows: tf.Tensor | None = None
    reg_scale: tf.Tensor | None = None
    bias_offsets: bool = False


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
    order = np.lexsort((cols, rows))
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
    unit_scale_source = None if kind != "separable" else own_weights.astype(np.float32)

    ladder = length_ladder(max_row_length)
    present = np.flatnonzero(degree > 0)
    short = present[degree[present] <= max_row_length]
    long_rows = present[degree[present] > max_row_length]

    def pack(unit_start, unit_len, unit_owner):
        bucket = np.searchsorted(ladder, unit_len)
        blocks, units_in_order = [], []
        for b in np.unique(bucket):
            members = np.flatnonzero(bucket == b)
            blocks.append(
                _block(
                    unit_start[members],
                    unit_len[members],
                    unit_owner[members],
                    int(ladder[b]),
                    entry_cols,
                    entry_rhs,
                    entry_gram,
                    entry_offsets,
                    unit_scale_source,
                    num_fixed,
                    num_rows,
                    batch_entries,
                )
            )
            units_in_order.append((members, blocks[-1].indices.shape[0] * blocks[-1].indices.shape[1]))
        return tuple(blocks), units_in_order

    # Short rows: one unit each; each block's output has num_chunks * rows slots, padding slots at its end.
    blocks, short_order = pack(starts[short], degree[short], short)
    position = np.full(num_rows, -1, dtype=np.int64)
    offset = 0
    for members, slots in short_order:
        position[short[members]] = offset + np.arange(members.size)
        offset += slots

    # Long rows: near-equal pieces of at most max_row_length entries.
    num_pieces = -(-degree[long_rows] // max_row_length)
    piece_len = -(-degree[long_rows] // num_pieces)
    owner = np.repeat(np.arange(long_rows.size), num_pieces)
    first_piece = (np.cumsum(num_pieces) - num_pieces).astype(np.int64)
    index_in_row = np.arange(owner.size) - np.repeat(first_piece, num_pieces)
    piece_start = starts[long_rows][owner] + index_in_row * piece_len[owner]
    piece_length = np.minimum(piece_len[owner], degree[long_rows][owner] - index_in_row * piece_len[owner])
    piece_blocks, piece_order = pack(piece_start, piece_length, long_rows[owner])
    segments = []
    for members, slots in piece_order:
        seg = np.full(slots, long_rows.size, dtype=np.int32)
        seg[: members.size] = owner[members]
        segments.append(seg)
    piece_segments = np.concatenate(segments) if segments else np.zeros([0], np.int32)
    position[long_rows] = offset + np.arange(long_rows.size)
    offset += long_rows.size
    position[position < 0] = offset  # rows without entries: the trailing zero row

    return HalfLayout(
        kind=kind,
        num_rows=int(num_rows),
        num_fixed=int(num_fixed),
        blocks=blocks,
        piece_blocks=piece_blocks,
        piece_segments=tf.constant(piece_segments, dtype=tf.int32),
        num_long=int(long_rows.size),
        fixed_scale=fixed_scale,
        gather_order=tf.constant(position.astype(np.int32)),
        long_rows=tf.constant(long_rows.astype(np.int32)),
        reg_scale=tf.constant(np.append(degree, 0).astype(np.float32)) if scale_regularization else None,
        bias_offsets=bias_offsets,
    )


def _block(
    unit_start,
    unit_len,
    unit_owner,
    length,
    entry_cols,
    entry_rhs,
    entry_gram,
    entry_offsets,
    own_weights,
    num_fixed,
    num_rows,
    batch_entries,
) -> Block:
    """Pads units [start, start + len) of the sorted entries to ``length`` and chunks them."""
    count = unit_start.size
    per_chunk = int(max(1, min(count, batch_entries // length, 16384)))
    num_chunks = -(-count // per_chunk)
    slots = num_chunks * per_chunk
    offsets = np.arange(length, dtype=np.int64)
    valid = offsets[None, :] < unit_len[:, None]
    take = np.where(valid, unit_start[:, None] + offsets[None, :], 0)

    def lay_out(source, pad, dtype):
        out = np.full((slots, length), pad, dtype=dtype)
        out[:count] = np.where(valid, source[take], pad)
        return tf.constant(out.reshape(num_chunks, per_chunk, length))

    owners = np.full(slots, num_rows, dtype=np.int32)
    owners[:count] = unit_owner
    scale = None
    if own_weights is not None:
        s = np.zeros(slots, dtype=np.float32)
        s[:count] = own_weights[unit_owner]
        scale = tf.constant(s.reshape(num_chunks, per_chunk))
    return Block(
        indices=lay_out(entry_cols, num_fixed, np.int32),
        rhs_weights=lay_out(entry_rhs, 0.0, np.float32),
        gram_weights=None if entry_gram is None else lay_out(entry_gram, 0.0, np.float32),
        row_scale=scale,
        offset_weights=None if entry_offsets is None else lay_out(entry_offsets, 0.0, np.float32),
        owners=tf.constant(owners.reshape(num_chunks, per_chunk)),
    )
