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

Per observed entry e = (i, j, a_ij) it stores the fixed row j, the target a_ij in a compact dtype and what is
needed to form the static coefficients of the normal equation per chunk (``Coefficients``)

    (lambda I + w0 Y'Y + sum_j d_ij y_j y_j') x_i = sum_j (w0 + d_ij) a_ij y_j,      d_ij = R_i C_j,

in one of three forms (``kind``):

* ``"uniform"``: d = 0 everywhere (weights None, plain ALS): only b_e = w0 a_ij; every row shares one system.
* ``"separable"``: d_ij = R_i C_j with C_j > 0 on every observed column: with z_j = sqrt(C_j) y_j the Gram is
  R_i Z_g'Z_g, so the layout keeps ``row_scale`` R_i, ``fixed_scale`` sqrt(C) and b_e = (w0 + d_ij) a_ij / sqrt(C_j).
  When every C_j is the same C, ``row_scale`` is R_i C and the fixed factors are gathered unscaled (no
  ``fixed_scale``, b_e = (w0 + d_ij) a_ij).
* ``"general"``: the per-entry Gram weight g_e = d_ij and b_e = (w0 + d_ij) a_ij. Per-entry weights that do
  not factorise (the implicit-feedback confidence alpha r_ij) always take this path.

Two options serve the explicit-feedback mode: ``bias_offsets`` forms o_e = W_ij (in the units of the gathered
table) so that the solver can subtract the other side's bias c_j from every target, and
``scale_regularization`` keeps each row's count n_i so that lambda becomes lambda n_i (ALS-WR).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from wals2.host import aligned_full, host_tensor


class Coefficients(NamedTuple):
    """How a chunk's right-hand-side weights b_e and offset weights o_e are formed from its targets a_e.

    With W_e = w0 + d_e (d_e = g_e for the "general" kind, R_i C_j for the "separable" one, 0 for "uniform"):

        b_e = W_e a_e (/ sqrt(C_j) with ``fixed_scale``),      o_e = W_e (/ C_j with ``fixed_scale``),

    in float32 and in this order, the products the layout's build checks for overflow. Forming them per chunk
    keeps a_e in its compact dtype instead of two float32 arrays per half.

    Attributes:
        unobserved_weight: w0.
        column_weights: C [n + 1], float32, 1 at the padding index, when the C_j differ ("separable" kind with
            ``fixed_scale``), else None.
        column_root: sqrt(C) [n + 1] likewise, else None.
        offsets: whether o_e is formed (``bias_offsets``).
    """

    unobserved_weight: float
    column_weights: tf.Tensor | None
    column_root: tf.Tensor | None
    offsets: bool

    def weights(self, targets, gram_weights, row_scale, indices):
        """(b_e, o_e or None), float32 [b, L], of a chunk's targets [b, L], Gram weights g_e [b, L] or None, unit
        scales R_i [b] or None and fixed-row indices [b, L] (``num_fixed`` on padding, where a_e = 0)."""
        w0 = tf.constant(self.unobserved_weight, tf.float32)
        column = None if self.column_weights is None else tf.gather(self.column_weights, indices)  # C_j [b, L]
        if gram_weights is not None:
            weight = gram_weights + w0
        elif row_scale is not None:
            weight = (row_scale[:, None] if column is None else row_scale[:, None] * column) + w0
        else:
            weight = w0
        rhs = weight * tf.cast(targets, tf.float32)
        offsets = None
        if column is not None:
            rhs /= tf.gather(self.column_root, indices)
            if self.offsets:
                offsets = weight / column
        elif self.offsets:
            offsets = tf.broadcast_to(weight, tf.shape(rhs))
        return rhs, offsets


class Chunks(NamedTuple):
    """Units (rows, or pieces of long rows) padded to their bucket length and chunked, in flat arrays.

    Chunk c holds the units ``unit_bounds[c]:unit_bounds[c + 1]`` (b of them), whose entries are
    ``entry_bounds[c]:entry_bounds[c + 1]``, a row-major [b, lengths[c]] block.

    Attributes:
        indices: int32 [E], indices into the fixed factors; padding = num_fixed.
        targets: [E], a_e in the narrowest of int8, int16, float16 and float32 that holds every float32 a_e
            exactly (0 on padding).
        gram_weights: float32 [E], g_e ("general" kind), else None.
        row_scale: float32 [U], R_i of each unit ("separable" kind), else None.
        owners: int32 [U], the solved row of each unit.
        entry_bounds: int32 [C + 1]; unit_bounds: int32 [C + 1]; lengths: int32 [C].
        num_chunks: C, a Python int.
        coefficients: the ``Coefficients`` that form b_e and o_e per chunk.
    """

    indices: tf.Tensor
    targets: tf.Tensor
    gram_weights: tf.Tensor | None
    row_scale: tf.Tensor | None
    owners: tf.Tensor
    entry_bounds: tf.Tensor
    unit_bounds: tf.Tensor
    lengths: tf.Tensor
    num_chunks: int
    coefficients: Coefficients


class Chunk(NamedTuple):
    """One chunk's tensors: [b, L] entries and [b] units (fields as in ``Chunks``, None where absent), with
    rhs_weights b_e and offset_weights o_e (None without ``bias_offsets``) formed by ``Coefficients.weights``."""

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
        num_long: number of long rows; their solutions follow the short rows'.
        long_rows: int32 [num_long], the rows cut into pieces, ascending (the order of their solutions).
        fixed_scale: float32 [n], sqrt(C) ("separable" kind), else None.
        empty_rows: int32 [m - rows with entries], the rows without entries (their solution is 0).
        reg_scale: float32 [m], the multiplier of lambda per row (n_i with ``scale_regularization``), else None.
        bias_offsets: whether the chunks form ``offset_weights`` (``Coefficients``).
        unobserved_weight: w0, the weight its right-hand sides were built with (the solver's w0 Y'Y uses it).
    """

    kind: str
    num_rows: int
    num_fixed: int
    short: Chunks
    pieces: Chunks
    num_long: int
    long_rows: tf.Tensor
    fixed_scale: tf.Tensor | None
    empty_rows: tf.Tensor
    reg_scale: tf.Tensor | None
    bias_offsets: bool
    unobserved_weight: float


def length_ladder(max_length: int) -> np.ndarray:
    """Bucket lengths 1, 2, ..., growing ~12.5 % per step, ending exactly at ``max_length``."""
    ladder = [1]
    while ladder[-1] < max_length:
        ladder.append(min(max_length, max(ladder[-1] + 1, int(np.ceil(ladder[-1] * 1.125)))))
    return np.asarray(ladder, dtype=np.int64)


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
    fixed side (C for the row half); the column half is the same call with the roles swapped. The per-entry
    coefficients are computed in float32, in the entries' own order, and copied once into the padded chunks.
    """
    w0 = float(unobserved_weight)
    rows, cols = np.asarray(rows), np.asarray(cols)
    degree = np.bincount(rows, minlength=num_rows).astype(np.int64)
    starts = np.cumsum(degree) - degree
    order = group_order(rows, num_rows)  # entries grouped by row; their order within a row is free
    terms = _entry_terms(rows, cols, values, num_fixed, own_weights, fixed_weights, w0, entry_weights)
    entries = (cols, compact_targets(values), terms.gram)
    coefficients = Coefficients(w0, *terms.column_weights, bias_offsets)

    ladder = length_ladder(max_row_length)
    present = np.flatnonzero(degree > 0)
    short = present[degree[present] <= max_row_length]
    long_rows = present[degree[present] > max_row_length]
    unit_scale = None if terms.kind != "separable" else np.asarray(own_weights, np.float32) * terms.column_scale

    # Short rows: one unit each, in bucket order (each unit names its row in ``owners``).
    short_chunks = _chunks(
        starts[short], degree[short], short, ladder, entries, order, unit_scale, num_fixed, batch_entries, coefficients
    )
    # Long rows: near-equal pieces of at most max_row_length entries.
    piece_start, piece_length, owner = _pieces(starts[long_rows], degree[long_rows], max_row_length)
    piece_chunks = _chunks(
        piece_start,
        piece_length,
        long_rows[owner],
        ladder,
        entries,
        order,
        unit_scale,
        num_fixed,
        batch_entries,
        coefficients,
    )

    return HalfLayout(
        kind=terms.kind,
        num_rows=int(num_rows),
        num_fixed=int(num_fixed),
        short=short_chunks,
        pieces=piece_chunks,
        num_long=int(long_rows.size),
        long_rows=host_tensor(long_rows, np.int32),
        fixed_scale=terms.fixed_scale,
        empty_rows=host_tensor(np.flatnonzero(degree == 0), np.int32),
        reg_scale=host_tensor(degree, np.float32) if scale_regularization else None,
        bias_offsets=bias_offsets,
        unobserved_weight=w0,
    )


class _EntryTerms(NamedTuple):
    """The kind and Gram coefficients of one half (``_entry_terms``)."""

    kind: str  # "uniform" (no d), "separable" (d = R_i C_j, C > 0) or "general"
    gram: np.ndarray | None  # g_e = d_e, float32 [nnz], "general" only
    fixed_scale: tf.Tensor | None  # sqrt(C_j) [num_fixed], separable with differing C_j
    column_scale: np.float32  # the one C of every column, separable with equal C_j (else 1)
    # (C, sqrt(C)), [num_fixed + 1] tensors (1 at the padding index), with fixed_scale; else (None, None)
    column_weights: tuple


def _entry_terms(rows, cols, values, num_fixed, own_weights, fixed_weights, w0, entry_weights):
    """The half's kind and Gram coefficients, computed in float32 in the entries' own order.

    Raises:
        ValueError: a right-hand-side weight b_e = (w0 + d) a (``Coefficients``) that overflows float32.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if entry_weights is not None:
            d = np.array(entry_weights, np.float32)
        elif own_weights is not None:
            d = _product(_entry_values(own_weights, rows), _entry_values(fixed_weights, cols))
        else:
            d = None
        if d is not None and not np.any(d):
            d = None
        if d is None:
            kind = "uniform"
        elif entry_weights is None and np.all(fixed_weights[np.bincount(cols, minlength=num_fixed) > 0] > 0):
            kind = "separable"
        else:
            kind = "general"
        gram = d if kind == "general" else None
        if d is None:
            weight = np.float32(w0)
        elif gram is None:  # d is not needed beyond W: reuse its memory
            weight = d
            weight += np.float32(w0)
        else:
            weight = d + np.float32(w0)  # W_ij = w0 + d_ij
        del d
        rhs = np.multiply(weight, values, dtype=np.float32)  # b_e, formed here only to check it is finite
        del weight
        fixed_scale, column_scale, column_weights = None, np.float32(1), (None, None)
        if kind == "separable":
            fixed = np.asarray(fixed_weights, np.float32)
            if _single_value(fixed) is not None:  # one C for every column: the Gram is R_i C Y_g'Y_g
                column_scale = _single_value(fixed)
            else:
                root = np.sqrt(fixed)
                rhs /= root[cols]
                fixed_scale = host_tensor(root)
                column_weights = tuple(host_tensor(np.append(x, np.float32(1))) for x in (fixed, root))
        finite = np.all(np.isfinite(rhs))
        del rhs
    if not (finite and (gram is None or np.all(np.isfinite(gram)))):
        weight = w0
        if entry_weights is not None:
            weight = w0 + np.asarray(entry_weights, np.float64)
        elif own_weights is not None:
            weight = w0 + np.asarray(own_weights, np.float64)[rows] * np.asarray(fixed_weights, np.float64)[cols]
        largest = np.max(np.abs(weight * np.asarray(values, np.float64)))
        raise ValueError(
            "The weighted training ratings (each entry's weight times its target) overflow float32: lower the "
            f"ratings' scale or the weights (the largest |weight x target| is {largest:.3g})."
        )
    return _EntryTerms(kind, gram, fixed_scale, column_scale, column_weights)


def compact_targets(values: np.ndarray) -> np.ndarray:
    """a_e as float32 values (the coefficients' precision) in the narrowest of int8, int16, float16 and float32
    that holds every one of them exactly."""
    values = np.asarray(values)
    if values.dtype in (np.int8, np.int16, np.float16):
        return values
    exact = values.astype(np.float32)
    for dtype in (np.int8, np.int16, np.float16):
        with np.errstate(over="ignore", invalid="ignore"):
            narrow = exact.astype(dtype)
        if np.array_equal(narrow.astype(np.float32), exact):
            return narrow
    return exact


def _pieces(starts: np.ndarray, degree: np.ndarray, max_row_length: int):
    """Long rows cut into near-equal pieces of at most ``max_row_length`` entries: (each piece's first entry, its
    length, its row's index into ``starts``), int64 [pieces] each."""
    num_pieces = -(-degree // max_row_length)
    piece_len = -(-degree // num_pieces)
    owner = np.repeat(np.arange(degree.size), num_pieces)
    first_piece = (np.cumsum(num_pieces) - num_pieces).astype(np.int64)
    index_in_row = np.arange(owner.size) - np.repeat(first_piece, num_pieces)
    piece_start = starts[owner] + index_in_row * piece_len[owner]
    piece_length = np.minimum(piece_len[owner], degree[owner] - index_in_row * piece_len[owner])
    return piece_start, piece_length, owner


def _single_value(weights: np.ndarray):
    """The float32 value shared by every weight, or None when they differ (or there are none)."""
    weights = np.asarray(weights, np.float32)
    return weights[0] if weights.size and np.all(weights == weights[0]) else None


def _entry_values(weights: np.ndarray, index: np.ndarray):
    """``weights[index]`` as float32, or the scalar when every weight is the same (no nnz-sized gather)."""
    single = _single_value(weights)
    return np.asarray(weights, np.float32)[index] if single is None else single


def _product(a, b):
    """a * b in float32, where each is a fresh array of ``_entry_values`` or a scalar (then so is the product)."""
    if np.ndim(a) == 0:
        a, b = b, a
    if np.ndim(a) == 0:
        return np.float32(a * b)
    a *= b
    return a


def group_order(keys: np.ndarray, num_keys: int) -> np.ndarray | None:
    """A permutation that groups ``keys`` (ints in [0, num_keys)) in ascending order, None if already sorted.

    A stable least-significant-digit radix sort on 16-bit digits (numpy sorts uint16 by counting), about 3x
    faster than a comparison sort of 32-bit keys.
    """
    keys = np.asarray(keys)
    if keys.size < 2 or np.all(keys[1:] >= keys[:-1]):
        return None
    order = None
    for shift in range(0, max(int(num_keys) - 1, 1).bit_length(), 16):
        digit = (keys if order is None else keys[order]) >> shift & 0xFFFF
        step = np.argsort(digit.astype(np.uint16), kind="stable")
        order = step if order is None else order[step]
    return order.astype(np.int32) if keys.size < 2**31 else order


# Real entries placed per step of the padded copy (bounds its index temporaries: 8 bytes per entry).
FILL_ENTRIES = 1 << 22


def _chunks(
    unit_start, unit_len, unit_owner, ladder, entries, order, unit_scale, num_fixed, batch_entries, coefficients
):
    """Buckets units [start, start + len) of the grouped entries by length, pads and chunks them.

    ``order`` maps grouped positions to the entries' own order (None: the identity); ``entries`` are the
    per-entry fields (cols, a, g or None) in the entries' own order. Returns the ``Chunks``.
    """
    entry_cols, entry_targets, entry_gram = entries
    bucket = np.searchsorted(ladder, unit_len)
    units = np.argsort(bucket.astype(np.uint16), kind="stable")
    lengths = ladder[bucket[units]]
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

    # Unit u (in chunk order) of length L_u occupies the padded slots [offset_u, offset_u + L_u); its n_u real
    # entries fill the first n_u of them. Runs of units of about ``FILL_ENTRIES`` real entries pair each entry
    # (``source``, in the entries' own order) with its slot, so the index temporaries stay small.
    total = int(lengths.sum())
    index = np.int32 if max(total, entry_cols.size) < 2**31 else np.int64
    count = unit_len[units].astype(index)
    before = np.cumsum(count, dtype=np.int64) - count
    offset = np.cumsum(lengths) - lengths
    fields = [(entry_cols, num_fixed, np.int32), (entry_targets, 0, entry_targets.dtype), (entry_gram, 0.0, np.float32)]
    out = [None if values is None else aligned_full(total, pad, dtype) for values, pad, dtype in fields]
    cuts = np.searchsorted(before, np.arange(0, int(count.sum()), FILL_ENTRIES), side="right") - 1
    for lo, hi in zip(cuts, [*cuts[1:], units.size]):
        run = count[lo:hi]
        first = before[lo:hi] - before[lo]
        base = np.arange(int(run.sum()), dtype=index)
        source = np.repeat((unit_start[units[lo:hi]] - first).astype(index), run)
        source += base
        if order is not None:
            source = order[source]
        slot = np.repeat((offset[lo:hi] - first).astype(index), run)
        slot += base
        del base
        for target, (values, _, _) in zip(out, fields):
            if target is not None:
                target[slot] = values[source]
    indices, targets, gram_weights = [None if a is None else host_tensor(a) for a in out]

    return Chunks(
        indices=indices,
        targets=targets,
        gram_weights=gram_weights,
        row_scale=None if unit_scale is None else host_tensor(unit_scale[unit_owner[units]]),
        owners=host_tensor(unit_owner[units], np.int32),
        entry_bounds=host_tensor(np.concatenate([[0], np.cumsum(chunk_units * chunk_lengths)]), np.int32),
        unit_bounds=host_tensor(np.concatenate([[0], np.cumsum(chunk_units)]), np.int32),
        lengths=host_tensor(chunk_lengths, np.int32),
        num_chunks=int(chunk_units.size),
        coefficients=coefficients,
    )
