"""The WALS half-sweep: one function that solves every row of one side against the other side's factors.

For the row half (the column half is the same call with the transposed layout and U as the fixed side):

    (lambda I + w0 Y'Y + sum_{j in obs(i)} d_ij y_j y_j') x_i = sum_{j in obs(i)} (w0 + d_ij) a_ij y_j

w0 Y'Y = Q S Q' is formed and diagonalised once per half-sweep, and the exact solves run in its eigenbasis, where
G0_i = lambda_i I + w0 Y'Y is the diagonal lambda_i + S (``_Half.solve``): the per-row Gram and right-hand side
come from a padded gather of the rotated factors Y Q per chunk of rows (``layout.py``), batched GEMMs and a batched
Cholesky solve, and x_i = Q x'_i. Rows without observations get x_i = 0, the exact minimiser of G0 x = 0.

Rows with at most 0.7 k entries are solved exactly through an L x L system instead (the Woodbury identity, see
``_woodbury``), which is cheaper than the k x k Gram and factorisation for such short rows.

``solver="cg"`` replaces the factorisation by ``cg_steps`` conjugate-gradient steps on the same system (in the
same eigenbasis), warm-started from the previous factors, as ``implicit`` does: matrix-free
(A p = G0 p + Y_g' (d * (Y_g p))) for every row once k is large against the steps, else for rows of up to k / 2
entries and on the formed k x k system for longer ones (``cg_max_length``); long rows cut into pieces are still
solved exactly. It is inexact by design.

``solver="subspace"`` is iALS++'s block coordinate descent (Rendle, Krichene, Zhang, Koren 2021, "iALS++:
Speeding up Matrix Factorization with Subspace Optimization"): for each row's system A x = r, with
A = G0_i + Z' D Z (G0_i = lambda_i I + w0 Y'Y, Z [L, k] the gathered fixed rows, D their Gram weights), it keeps
the residual predictions t = Z x [L] and g = G0_i x [k] of the previous factors x, and for each block B of
``subspace_block`` coordinates in turn solves the b x b system

    (G0_i[B, B] + Z_B' D Z_B) delta = r_B - g_B - Z_B' D t,      x_B += delta, t += Z_B delta, g += G0_i[:, B] delta

by Cholesky, ``subspace_sweeps`` passes over the blocks per half-sweep: O(L k b + k b^2) per row instead of
O(L k^2 + k^3). It is block Gauss-Seidel on an SPD system: every step lowers the objective and repeated
half-sweeps converge to the exact solution. Long rows cut into pieces take the same block steps, with t kept per
piece and each block's terms summed over a row's pieces. Rows of at most b entries (Woodbury, cheaper there) and
layouts of the "uniform" kind (one shared factorisation) are still solved exactly.

Everything here is pure tensors in, tensors out, and uses only dense standard ops (gather, BatchMatMul,
Cholesky, triangular solves, a symmetric eigendecomposition, segment sums), so it runs on CPU or GPU; never
compile it with XLA.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from wals2.layout import Chunk, Chunks, HalfLayout
from wals2.threads import PARALLEL_CHUNKS  # chunks that run at the same time in the loop over a half's chunks


def gramian(fixed: tf.Tensor, regularization: tf.Tensor, unobserved_weight: tf.Tensor) -> tf.Tensor:
    """G0 = lambda I + w0 Y'Y, float32 [k, k], for fixed factors Y [n, k]."""
    k = tf.shape(fixed)[1]
    yty = tf.matmul(fixed, fixed, transpose_a=True)
    return regularization * tf.eye(k, dtype=fixed.dtype) + unobserved_weight * yty


@tf.function(autograph=False)
def half_sweep(
    layout: HalfLayout,
    fixed: tf.Tensor,
    regularization: tf.Tensor,
    solver: str = "cholesky",
    initial: tf.Tensor | None = None,
    cg_steps: int = 3,
    subspace_block: int = 64,
    subspace_sweeps: int = 1,
) -> tf.Tensor:
    """Solves every row of ``layout`` against ``fixed``.

    The rows come in three parts: rows without entries (x_i = 0), short rows in chunks of ascending length (solved
    by the solver's plan, ``_SHORT_PLANS``) and long rows cut into pieces (exact, ``_Half.long_rows``, except for
    "subspace", whose block passes run over the pieces, ``_subspace_long_rows``).

    Args:
        layout: the half's ``HalfLayout`` (built once per fit by ``layout.build_half``).
        fixed: float32 [n, k], the other side's factors; with ``layout.bias_offsets`` [n, k + 1], whose last
            column c_j is subtracted from every target (a_ij - c_j) and takes no part in the solve.
        regularization: lambda > 0 (scalar); multiplied by n_i per row when the layout has ``reg_scale``.
            w0 is the layout's own ``unobserved_weight``, the one its right-hand sides were built with.
        solver: "cholesky" (exact), "cg" (``cg_steps`` CG steps from ``initial``) or "subspace"
            (``subspace_sweeps`` passes of block coordinate descent over blocks of ``subspace_block`` coordinates,
            from ``initial``; see the module docstring).
        initial: float32 [m, k], the previous factors of the solved side; required by "cg" and "subspace".
        cg_steps: CG steps per row for "cg".
        subspace_block: b, the coordinates per block for "subspace" (b >= k: one block, solved by the exact path).
        subspace_sweeps: passes over the blocks per half-sweep for "subspace".

    Returns:
        float32 [m, k], the new factors of the solved side.
    """
    if solver not in _SHORT_PLANS:
        raise ValueError(f"`solver` should be 'cholesky', 'cg' or 'subspace'. Received: solver={solver!r}")
    half = _Half(layout, fixed, regularization)
    options = {"cg": {"steps": cg_steps}, "subspace": {"block": subspace_block, "sweeps": subspace_sweeps}}
    if solver in options and initial is None:
        raise ValueError(f"`initial` should be the previous factors [m, k] when solver={solver!r}. Received: None")
    if layout.kind == "uniform" or (solver == "subspace" and subspace_block >= half.k):
        solver = "cholesky"  # one diagonal system shared by every row, or one block of all k coordinates: exact
    if layout.short.num_chunks:
        _SHORT_PLANS[solver](half, initial, **options.get(solver, {}))
    if layout.num_long and solver == "subspace":
        _subspace_long_rows(half, initial, subspace_block, subspace_sweeps)
    elif layout.num_long:
        half.long_rows()
    return half.stitched()


class _Basis(NamedTuple):
    """The eigenbasis of w0 Y'Y = Q S Q' in which the exact solves run (``_Half.basis``).

    Attributes:
        table: float32 [n + 1, width], the gathered table with its first k columns rotated, Z Q, and the zero row n.
        rotation: Q, float32 [k, k].
        eigenvalues: S, float32 [k], clipped at 0 (NaN when Y'Y is not finite).
    """

    table: tf.Tensor
    rotation: tf.Tensor
    eigenvalues: tf.Tensor


class _Half:
    """The shared terms of one half-sweep and its solved parts.

    The tables are built at their first use and kept for the half-sweep: ``table`` for the subspace plan,
    ``basis`` for the exact solves and CG (one [n + 1, width] copy of the fixed factors each; a plan that does not
    need one does not build it). Call them outside loop bodies.

    Attributes:
        layout: the half's ``HalfLayout``; k the factor count (``fixed`` without its bias column).
        fixed: float32 [n, width], the fixed factors as given.
        shared: w0 Y'Y [k, k]; ``regularized`` G0 = lambda I + w0 Y'Y (w0 Y'Y alone when lambda is per row), the
            subspace plan's.
        rows, solutions: the parts solved so far, row indices [rows] and their solutions [rows, k].
    """

    def __init__(self, layout: HalfLayout, fixed, regularization):
        self.layout = layout
        self.fixed = fixed = tf.convert_to_tensor(fixed, tf.float32)
        width = fixed.shape[1]
        self.k = k = width - 1 if layout.bias_offsets else width
        self.lam = lam = tf.cast(regularization, tf.float32)
        w0 = tf.constant(layout.unobserved_weight, tf.float32)
        self.shared = shared = gramian(fixed if width == k else fixed[:, :k], 0.0, w0)  # lambda is added per row
        self.per_row_lambda = layout.reg_scale is not None
        self.regularized = shared if self.per_row_lambda else shared + lam * tf.eye(k, dtype=tf.float32)
        self._table = self._basis = None
        self._blocks = {}  # subspace_table per block size, see ``subspace_blocks``
        self.rows = [layout.empty_rows]  # rows without entries: x_i = 0, the minimiser of G0 x = 0
        self.solutions = [tf.zeros([tf.size(layout.empty_rows), k], tf.float32)]

    def table(self) -> tf.Tensor:
        """float32 [n + 1, width]: the fixed factors (times ``layout.fixed_scale``) and a zero padding row n."""
        if self._table is None:
            self._table = _padded_table(self.fixed, self.layout.fixed_scale)
        return self._table

    def basis(self) -> _Basis:
        """The ``_Basis`` of w0 Y'Y: its eigendecomposition and the gathered table rotated into it."""
        if self._basis is None:
            # eigh fails on non-finite input where Cholesky gives NaN: keep the NaN, so that a diverged sweep is
            # reported by the caller's finiteness check.
            finite = tf.reduce_all(tf.math.is_finite(self.shared))
            eigenvalues, rotation = tf.linalg.eigh(tf.where(finite, self.shared, tf.zeros_like(self.shared)))
            eigenvalues = tf.maximum(eigenvalues, 0.0) + tf.where(finite, 0.0, float("nan"))
            k, fixed = self.k, self.fixed
            rotated = tf.matmul(fixed if fixed.shape[1] == k else fixed[:, :k], rotation)
            if fixed.shape[1] != k:
                rotated = tf.concat([rotated, fixed[:, k:]], axis=1)
            self._basis = _Basis(_padded_table(rotated, self.layout.fixed_scale), rotation, eigenvalues)
        return self._basis

    def diagonal(self, owners):
        """lambda_i + S, G0_i of the units ``owners`` [b] in the eigenbasis: float32 [k], or [b, k] with a lambda
        per row."""
        eigenvalues = self.basis().eigenvalues
        return eigenvalues + (self.row_lambda(owners)[:, None] if self.per_row_lambda else self.lam)

    def formed(self, gram, owners):
        """The k x k systems diag(lambda_i + S) + gram [b, k, k] of the units ``owners``, from their rotated Grams."""
        return tf.linalg.set_diag(gram, tf.linalg.diag_part(gram) + self.diagonal(owners))

    def solve(self, gram, rhs, owners):
        """The exact solutions x_i [b, k] of the units ``owners`` [b] from their terms in the eigenbasis.

        With G0_i = lambda_i I + w0 Y'Y = Q diag(lambda_i + S) Q' and the rotated terms gram = Q' Z' D Z Q
        [b, k, k] (None for the uniform kind: no observed Gram) and rhs = Q' Z' b [b, k], gathered from
        ``basis().table``, the normal equation becomes

            (diag(lambda_i + S) + gram) x' = rhs,      x_i = Q x',

        one batched Cholesky solve (a division for the uniform kind).
        """
        if gram is None:
            solution = rhs / self.diagonal(owners)
        else:
            solution = cholesky_rows(self.formed(gram, owners), rhs)
        return tf.matmul(solution, self.basis().rotation, transpose_b=True)

    def row_lambda(self, owners):
        """lambda_i [b] of the rows ``owners`` [b] (lambda n_i), or the scalar lambda when it is one for all."""
        return self.lam * tf.gather(self.layout.reg_scale, owners) if self.per_row_lambda else self.lam

    def short_rows(self, fn, start=0, stop=None):
        """Solves the short chunks [start, stop) with ``fn`` (a chunk -> its solutions [b, k])."""
        self.rows.append(_owners(self.layout.short, start, stop))
        self.solutions.append(_map_chunks(self.layout.short, lambda c: (fn(c),), ([self.k],), start, stop)[0])

    def split(self, max_length):
        """The number of short chunks whose rows have at most ``max_length`` entries (chunks ascend in length)."""
        return tf.searchsorted(self.layout.short.lengths, [max_length], side="right")[0]

    def exact_rows(self):
        """The exact chunk solve (a chunk -> its solutions [b, k]) through the k x k systems of ``solve``."""
        table, with_gram = self.basis().table, self.layout.kind != "uniform"

        def rows(chunk: Chunk) -> tf.Tensor:
            return self.solve(*_gram_and_rhs(table, self.k, chunk, with_gram), chunk.owners)

        return rows

    def woodbury_rows(self, stop):
        """Solves the short chunks [0, stop) exactly in the L x L Woodbury form (not for the uniform kind)."""
        k, basis = self.k, self.basis()

        def rows(chunk: Chunk) -> tf.Tensor:
            scale = tf.reshape(tf.math.rsqrt(self.diagonal(chunk.owners)), [-1, k])  # [b or 1, k]
            return tf.matmul(_woodbury(basis.table, k, chunk, scale), basis.rotation, transpose_b=True)

        self.short_rows(rows, stop=stop)

    def long_row_sums(self, fn, shapes, flat=0, entry_arrays=()):
        """Runs ``fn`` over the pieces of the long rows and sums its outputs over each long row's pieces.

        Args:
            fn: (``Chunk``, own [b], one [b, L] slice of each of ``entry_arrays``) -> tuple of tensors: first one
                [b, *shape] per piece for each of ``shapes``, then ``flat`` per-entry tensors [b, L]. ``own`` is
                each piece's index into ``layout.long_rows``.
            shapes: the shapes of the summed outputs, without the piece axis.
            flat: the number of per-entry outputs, returned in the pieces' flat order.
            entry_arrays: [E] tensors in the pieces' flat order, passed to ``fn`` per chunk.

        Returns:
            (list of float32 [num_long, *shape], list of float32 [E]).
        """
        layout, count = self.layout, len(shapes)

        def body(chunk: Chunk, *slices):
            own = tf.searchsorted(layout.long_rows, chunk.owners)
            # Pieces of one long row sit side by side: sum them within the chunk, so that the chunk's output
            # holds one term per long row it touches rather than one per piece.
            ids, local = tf.unique(own)
            outputs = fn(chunk, own, *slices)
            sums = [tf.math.unsorted_segment_sum(x, local, tf.size(ids)) for x in outputs[:count]]
            return (*sums, ids, *[tf.reshape(x, [-1]) for x in outputs[count:]])

        dtypes = (tf.float32,) * count + (tf.int32,) + (tf.float32,) * flat
        outputs = _map_chunks(
            layout.pieces, body, (*shapes, [], *[[]] * flat), dtypes=dtypes, entry_arrays=entry_arrays
        )
        ids = outputs[count]
        sums = [tf.math.unsorted_segment_sum(x, ids, layout.num_long) for x in outputs[:count]]
        return sums, list(outputs[count + 1 :])

    def long_rows(self):
        """Solves the long rows exactly: each one's Gram and right-hand side summed over its pieces."""
        layout, k, table = self.layout, self.k, self.basis().table
        with_gram = layout.kind != "uniform"

        def pieces(chunk: Chunk, own):
            gram, rhs = _gram_and_rhs(table, k, chunk, with_gram)
            return (gram, rhs) if with_gram else (rhs,)

        sums, _ = self.long_row_sums(pieces, ([k, k], [k]) if with_gram else ([k],))
        gram, rhs = sums if with_gram else (None, sums[0])
        self.rows.append(layout.long_rows)
        self.solutions.append(self.solve(gram, rhs, layout.long_rows))

    def subspace_blocks(self, block):
        """``subspace_table`` of this half's table, formed once per half-sweep (a copy the size of the table)."""
        if block not in self._blocks:
            self._blocks[block] = subspace_table(self.table(), self.k, block)
        return self._blocks[block]

    def stitched(self) -> tf.Tensor:
        """float32 [m, k]: every row is in exactly one part; one copy into place, no concatenation first."""
        return tf.ensure_shape(tf.dynamic_stitch(self.rows, self.solutions), [self.layout.num_rows, self.k])


def _exact_plan(half: _Half, initial) -> None:
    """Exact short rows: the L x L Woodbury form up to ``woodbury_max_length(k)`` entries, k x k Grams above."""
    del initial  # the exact solve does not start from the previous factors
    split = 0
    if half.layout.kind != "uniform":
        split = half.split(woodbury_max_length(half.k))
        half.woodbury_rows(stop=split)
    half.short_rows(half.exact_rows(), start=split)


def _cg_plan(half: _Half, initial, steps: int) -> None:
    """``steps`` CG steps from ``initial``: matrix-free up to ``cg_max_length`` entries, on the formed k x k
    systems above. They run in the eigenbasis of ``_Half.solve`` (CG's iterates do not depend on the basis), from
    x'_0 = Q' x_0, where G0_i is a diagonal."""
    basis, previous = half.basis(), tf.convert_to_tensor(initial, tf.float32)

    def start(chunk: Chunk) -> tf.Tensor:
        return tf.matmul(tf.gather(previous, chunk.owners), basis.rotation)  # Q' x_i per row, [b, k]

    def matrix_free(chunk: Chunk) -> tf.Tensor:
        x = _conjugate_gradient(basis.table, half.k, chunk, start(chunk), half.diagonal(chunk.owners), steps)
        return tf.matmul(x, basis.rotation, transpose_b=True)

    def formed(chunk: Chunk) -> tf.Tensor:
        gram, rhs = _gram_and_rhs(basis.table, half.k, chunk, with_gram=True)
        x = _gram_conjugate_gradient(half.formed(gram, chunk.owners), rhs, start(chunk), steps)
        return tf.matmul(x, basis.rotation, transpose_b=True)

    split = half.split(cg_max_length(half.k, steps, weighted=half.layout.kind == "general"))
    half.short_rows(matrix_free, stop=split)
    half.short_rows(formed, start=split)


def _subspace_plan(half: _Half, initial, block: int, sweeps: int) -> None:
    """``sweeps`` block passes from ``initial``; rows of at most ``subspace_max_woodbury(k, b)`` entries are solved
    exactly in the Woodbury form instead (cheaper than a pass there)."""
    previous, table = tf.convert_to_tensor(initial, tf.float32), half.table()
    blocks = half.subspace_blocks(block)

    def passes(chunk: Chunk) -> tf.Tensor:
        lam_i = half.row_lambda(chunk.owners) if half.per_row_lambda else None
        x = tf.gather(previous, chunk.owners)
        return _subspace(table, blocks, half.k, chunk, x, half.regularized, lam_i, block, sweeps)

    split = half.split(subspace_max_woodbury(half.k, block))
    half.woodbury_rows(stop=split)
    half.short_rows(passes, start=split)


def _subspace_long_rows(half: _Half, initial, block: int, sweeps: int) -> None:
    """The block passes of ``_subspace`` on the long rows, whose entries are spread over pieces (``layout.pieces``).

    One pass over the pieces forms each block's terms per piece (Z_B' D Z_B, r_B and t = Z x, ``_block_terms``)
    and sums the first two over each long row's pieces; then each block step is one pass that brings t up to date
    with the previous step's delta and sums Z_B' D t over the pieces, followed by the same b x b solve as a short
    row's (``_block_step``). t lives per entry, float32 [E] in the pieces' flat order. Costs O(L k b) per row and
    pass, as for short rows, instead of the O(L k^2) Gram of ``_Half.long_rows``.
    """
    layout, k, table = half.layout, half.k, half.table()
    previous = tf.convert_to_tensor(initial, tf.float32)
    blocks = half.subspace_blocks(block)
    starts = subspace_starts(k, block)
    size, count = min(block, k), len(starts)
    rows = tf.shape(table)[0]

    def terms(chunk: Chunk, own):
        gram, rhs, t = _block_terms(table, blocks, k, starts, chunk, tf.gather(previous, chunk.owners))
        return tf.transpose(gram, [1, 0, 2, 3]), tf.transpose(rhs, [1, 0, 2]), t  # [b, count, ...], t [b, L]

    (gram, rhs), (t,) = half.long_row_sums(terms, ([count, size, size], [count, size]), flat=1)
    gram, rhs = tf.transpose(gram, [1, 0, 2, 3]), tf.transpose(rhs, [1, 0, 2])  # [count, num_long, ...]
    lam_i = half.row_lambda(layout.long_rows) if half.per_row_lambda else None
    factors = _block_factors(gram, half.regularized, starts, lam_i)
    x = tf.gather(previous, layout.long_rows)
    g = _block_g(x, half.regularized, lam_i)
    delta = None
    for step in range(count * sweeps):
        j = step % count

        def gradient(chunk: Chunk, own, t, j=j, last=(step - 1) % count, delta=delta):
            if delta is not None:  # t += Z_B' delta of the previous step's block
                t += rows_dot(tf.gather(blocks, chunk.indices + rows * last), tf.gather(delta, own))
            return _block_gradient(tf.gather(blocks, chunk.indices + rows * j), t, chunk), t

        (observed,), (t,) = half.long_row_sums(gradient, ([size],), flat=1, entry_arrays=(t,))
        delta, x, g = _block_step(half.regularized, lam_i, k, starts[j], size, factors[j], rhs[j], observed, x, g)
    half.rows.append(layout.long_rows)
    half.solutions.append(x)


# The short chunks' plan of each solver (the uniform kind always takes the exact one).
_SHORT_PLANS = {"cholesky": _exact_plan, "cg": _cg_plan, "subspace": _subspace_plan}


def fixed_side(factors, biases: bool):
    """The fixed side of a half-sweep: the factors as they are, or [y_j, 1, c_j] from [y_j, c_j] with biases.

    With biases (explicit mode) the last column is a bias c_j: the solved row gets a bias of its own against the
    column of ones, and ``half_sweep`` subtracts c_j from the targets (layouts built with ``bias_offsets``).
    """
    factors = tf.convert_to_tensor(factors, tf.float32)
    if not biases:
        return factors
    return tf.concat([factors[:, :-1], tf.ones_like(factors[:, :1]), factors[:, -1:]], axis=1)


def _padded_table(rows, scale):
    """The gathered table [n + 1, w]: ``rows`` [n, w] times ``scale`` [n] (None: 1) and a zero row n, the padding
    entries' index (TensorFlow may reuse the padded buffer for the product, which it alone holds)."""
    table = tf.pad(rows, [[0, 1], [0, 0]])
    return table if scale is None else table * tf.pad(scale, [[0, 1]])[:, None]


def _gather(table, k, chunk: Chunk):
    """Gathered fixed rows z [b, L, k] and per-entry right-hand-side weights (bias offsets applied) [b, L]."""
    gathered = tf.gather(table, chunk.indices)  # [b, L, width]
    rhs_weights = _rhs_weights(chunk, lambda: gathered[:, :, k])
    if chunk.offset_weights is not None:
        gathered = gathered[:, :, :k]
    return gathered, rhs_weights


def _rhs_weights(chunk: Chunk, offsets) -> tf.Tensor:
    """b_e [b, L] of a chunk's entries; with bias offsets (targets a_ij - c_j) b_e - o_e c_j, where ``offsets()``
    gives c_j [b, L] of each entry's fixed row."""
    if chunk.offset_weights is None:
        return chunk.rhs_weights
    return chunk.rhs_weights - chunk.offset_weights * offsets()


def _gram_and_rhs(table, k, chunk: Chunk, with_gram: bool):
    """Per-unit Gram sum_e g_e z_e z_e' ([b, k, k], None without ``with_gram``) and right-hand side sum_e b_e z_e."""
    gathered, rhs_weights = _gather(table, k, chunk)
    if not with_gram:
        return None, gram_and_rhs(gathered, rhs_weights, None)[1]
    return gram_and_rhs(gathered, rhs_weights, chunk.gram_weights, chunk.row_scale)


def gram_and_rhs(gathered, rhs_weights, gram_weights, row_scale=None):
    """The observed part of each row's normal equation (module docstring), for rows given as gathered entries.

    Args:
        gathered: z_e, float32 [b, L, k], the fixed side's rows of each row's entries (zero rows on padding).
        rhs_weights: b_e = (w0 + d_e) a_e, float32 [b, L].
        gram_weights: g_e = d_e, float32 [b, L]; or None with ``row_scale``: g_e = R_i for every entry of row i.
        row_scale: R_i, float32 [b] (used when ``gram_weights`` is None); None with neither: no Gram.

    Returns:
        (sum_e g_e z_e z_e' [b, k, k] or None, sum_e b_e z_e [b, k]).
    """
    rhs = tf.matmul(rhs_weights[:, None, :], gathered)[:, 0, :]
    if gram_weights is not None:
        return tf.matmul(gathered * gram_weights[..., None], gathered, transpose_a=True), rhs
    if row_scale is not None:
        return tf.matmul(gathered, gathered, transpose_a=True) * row_scale[:, None, None], rhs
    return None, rhs


def rows_dot(gathered, x):
    """t_e = z_e' x_i for every entry e of each unit i: ``gathered`` [..., b, L, w], ``x`` [..., b, w] -> [..., b, L].

    Written as the row vector x' times Z' (a [1, w] x [w, L] product per unit): TensorFlow's batched matmul runs
    it 1.2-1.4x faster than Z x as a [L, w] x [w, 1] product (one thread, w = 64 and 128, chunks of 4,096-65,536
    entries, on the Intel Xeon kind).
    """
    return tf.matmul(x[..., None, :], gathered, transpose_b=True)[..., 0, :]


def cholesky_rows(lhs, rhs):
    """x_i = lhs_i^-1 rhs_i for SPD ``lhs`` [b, k, k] and ``rhs`` [b, k]: the exact row solve."""
    return tf.linalg.cholesky_solve(tf.linalg.cholesky(lhs), rhs[..., None])[..., 0]


def cg_max_length(k: int, steps: int, weighted: bool) -> int:
    """The longest row (padded length L) that ``solver="cg"`` solves by matrix-free CG; longer rows form their Gram.

    Per entry, the matrix-free products (the residual, which takes in the right-hand side, and ``steps`` steps,
    two batched matrix-vector products each) cost 4 k (steps + 1) flops at memory speed; forming the Gram costs
    2 k^2 flops at the batched matmul's rate (and the right-hand side 2 k), and a per-entry weighted Gram
    (Z * d)' Z (``weighted``, the "general" kind) a weighted copy of the gathered rows on top. Both grow linearly
    in L, so the choice is one of k and ``steps``: matrix-free for every row once k >= ``c (steps + 1)``, c = 8
    weighted and 16 unweighted (from interleaved half-sweep timings at ML-1M, k = 32-128, 1-6 steps, on the AMD
    EPYC Zen 4 kind, measured while the right-hand side was still a pass of its own); below that only up to
    k / 2 entries, where the Gram's small batched matmuls run far below their rate.
    """
    if k >= (8 if weighted else 16) * (steps + 1):
        return 2**31 - 1
    return k // 2


def subspace_max_woodbury(k: int, block: int) -> int:
    """The longest row (padded length L) that ``solver="subspace"`` solves exactly in the L x L Woodbury form:
    up to b entries its L^2 k + L^3 / 3 cost is below a pass over the blocks (about 2 L k b + k b^2 / 3)."""
    return min(block, woodbury_max_length(k))


def woodbury_max_length(k: int) -> int:
    """The longest row (padded length L) solved in the L x L form of ``_woodbury`` rather than the k x k one."""
    return (7 * k) // 10


def _woodbury(rotated, k, chunk: Chunk, scale):
    """Exact solutions of short rows (L < k entries) through an L x L system instead of the k x k one.

    With G0_i = lambda_i I + w0 Y'Y = Q diag(lambda_i + S) Q' and s_i = (lambda_i + S)^-1/2, the gathered rows
    W = Z_g Q diag(s_i) [L, k] turn (G0_i + Z_g' D Z_g) x_i = Z_g' b (D the per-entry Gram weights g_e or R_i,
    b the right-hand-side weights) into

        (I + V'V) xi = W' b,      V = D^1/2 W,      x_i = Q diag(s_i) xi.

    Split b = D^1/2 t + b0, with b0 the part on entries of zero Gram weight (usually none), c0 = W' b0 and
    M = I + V V' (L x L, eigenvalues >= 1). The push-through identity (I + V'V)^-1 V' = V' M^-1 gives

        xi = c0 + V' M^-1 (t - V c0),

    without the cancellation of the textbook form c - V' M^-1 V c. It costs L^2 k + L^3 / 3 instead of
    L k^2 + k^3 / 3.

    Args:
        rotated: the gathered table with its first k columns rotated by Q, [n + 1, width].
        k: the solved width.
        chunk: the chunk's [b, L] entries and [b] units.
        scale: s_i, float32 [b, k] (per-row lambda) or [1, k].

    Returns:
        float32 [b, k], Q' x_i = diag(s_i) xi (the caller rotates back).
    """
    gathered, rhs_weights = _gather(rotated, k, chunk)  # Z_g Q [b, L, k]
    if chunk.gram_weights is not None:
        root = tf.sqrt(chunk.gram_weights)  # [b, L]
    else:
        root = tf.broadcast_to(tf.sqrt(chunk.row_scale)[:, None], tf.shape(rhs_weights))
    weighted = root > 0
    t = tf.math.divide_no_nan(rhs_weights, root)[..., None]  # [b, L, 1]
    c0 = tf.matmul(tf.where(weighted, 0.0, rhs_weights)[:, None, :], gathered)[:, 0, :] * scale  # [b, k]
    v = gathered * scale[:, None, :]
    v *= root[..., None]  # [b, L, k]: TensorFlow can reuse the first product's buffer; no other [b, L, k] product
    inner = tf.matmul(v, v, transpose_b=True) + tf.eye(tf.shape(v)[1], dtype=v.dtype)  # M [b, L, L]
    t -= tf.matmul(v, c0[..., None])
    u = tf.linalg.cholesky_solve(tf.linalg.cholesky(inner), t)  # [b, L, 1]
    return (c0 + tf.matmul(u, v, transpose_a=True)[:, 0, :]) * scale


def subspace_starts(k: int, block: int) -> list[int]:
    """The first coordinate of each block of ``solver="subspace"``: 0, b, 2b, ..., and k - b last when b does not
    divide k (that block overlaps its predecessor, which block coordinate descent allows); one block when b >= k."""
    size = min(block, k)
    starts = list(range(0, k - size + 1, size))
    if starts[-1] + size < k:
        starts.append(k - size)
    return starts


def subspace_table(table, k, block):
    """The gathered table's first k columns block by block, [blocks * (n + 1), b]: rows [j (n + 1), (j + 1) (n + 1))
    are the columns of block j, so that one gather yields every block's rows contiguous, [blocks, ..., b]."""
    size = min(block, k)
    return tf.concat([table[:, s : s + size] for s in subspace_starts(k, block)], axis=0)


def _subspace(table, blocks, k, chunk: Chunk, x, g0, lam_i, block, sweeps):
    """``sweeps`` passes of block coordinate descent on (G0_i + Z_g' D Z_g) x = r per unit, from ``x`` [b, k].

    ``blocks`` is ``subspace_table(table, k, block)``. ``g0`` is G0 = lambda I + w0 Y'Y [k, k], or w0 Y'Y when
    ``lam_i`` [b] holds a lambda per row. Each block of ``block`` coordinates B takes ``_block_step``, with
    t = Z_g x [b, L] and g = G0_i x [b, k] kept up to date, in a ``tf.while_loop`` over the blocks. The gathered
    rows of every block are one gather [blocks, b, L, size] whose block j is a contiguous (uncopied) slice; the
    blocks' b x b systems do not depend on x, so they are formed and factored for all blocks at once before the loop.
    """
    starts = subspace_starts(k, block)
    size, count = min(block, k), len(starts)
    gram, rhs, t, gathered = _block_terms(table, blocks, k, starts, chunk, x, keep_gathered=True)
    factors = _block_factors(gram, g0, starts, lam_i)
    g = _block_g(x, g0, lam_i)
    starts_t = tf.constant(starts, tf.int32)
    steps = count * sweeps

    def body(step, x, t, g):
        j = step % count
        zb = gathered[j]  # Z_B [b, L, size]
        observed = _block_gradient(zb, t, chunk)
        delta, x, g = _block_step(g0, lam_i, k, starts_t[j], size, factors[j], rhs[j], observed, x, g)
        return step + 1, x, t + rows_dot(zb, delta), g

    _, x, _, _ = tf.while_loop(
        lambda step, *_: step < steps, body, (tf.constant(0, tf.int32), x, t, g), parallel_iterations=1
    )
    return x


def _block_terms(table, blocks, k, starts, chunk: Chunk, x, keep_gathered=False):
    """The x-independent terms of every block's system for a chunk's units, and the predictions t = Z_g x.

    Returns Z_B' D Z_B [count, b, size, size], r_B = Z_B' rhs_weights [count, b, size], t [b, L] (each coordinate
    counted in the first block that holds it: the last block may overlap its predecessor) and, with
    ``keep_gathered``, every block's gathered rows Z_B [count, b, L, size] (one gather from ``blocks``).
    """
    size, count = int(blocks.shape[1]), len(starts)
    rows = tf.shape(table)[0]  # n + 1
    gathered = tf.gather(blocks, chunk.indices[None] + rows * tf.range(count)[:, None, None])  # [count, b, L, size]
    rhs_weights = _rhs_weights(chunk, lambda: tf.gather(table[:, k], chunk.indices))
    if chunk.gram_weights is not None:
        gram = tf.matmul(gathered * chunk.gram_weights[None, :, :, None], gathered, transpose_a=True)
    else:  # separable: D = R_i I per row, no per-entry product
        gram = tf.matmul(gathered, gathered, transpose_a=True) * chunk.row_scale[None, :, None, None]
    rhs = tf.matmul(rhs_weights[None, :, None, :], gathered)[:, :, 0, :]
    covered = [max(0, (starts[j - 1] + size if j else 0) - s) for j, s in enumerate(starts)]
    mask = tf.constant([[0.0] * c + [1.0] * (size - c) for c in covered], tf.float32)  # [count, size]
    x_blocks = tf.stack([x[:, s : s + size] for s in starts]) * mask[:, None, :]  # [count, b, size]
    t = tf.reduce_sum(rows_dot(gathered, x_blocks), axis=0)  # [b, L]
    return (gram, rhs, t, gathered) if keep_gathered else (gram, rhs, t)


def _block_factors(gram, g0, starts, lam_i):
    """Cholesky factors [count, b, size, size] of every block's system G0_i[B, B] + Z_B' D Z_B, from ``gram``."""
    size = int(gram.shape[-1])
    gram += tf.stack([g0[s : s + size, s : s + size] for s in starts])[:, None]  # G0[B, B]
    if lam_i is not None:
        gram += lam_i[None, :, None, None] * tf.eye(size, dtype=tf.float32)
    return tf.linalg.cholesky(gram)


def _block_g(x, g0, lam_i):
    """g = G0_i x [b, k] (G0 is symmetric)."""
    g = tf.matmul(x, g0)
    return g if lam_i is None else g + lam_i[:, None] * x


def _entry_gram_weights(chunk: Chunk) -> tf.Tensor:
    """D of a chunk's entries: g_e [b, L] per entry, or R_i [b, 1] per unit (the "separable" kind)."""
    return chunk.gram_weights if chunk.gram_weights is not None else chunk.row_scale[:, None]


def _block_gradient(zb, t, chunk: Chunk):
    """Z_B' D t [b, size] from a block's gathered rows ``zb`` [b, L, size] and the predictions ``t`` [b, L]."""
    return tf.matmul((t * _entry_gram_weights(chunk))[:, None, :], zb)[:, 0, :]


def _block_step(g0, lam_i, k, s, size, factor, rhs, observed, x, g):
    """One block step of ``solver="subspace"`` on the b units' systems, for the block B = [s, s + size):

        (G0_i[B, B] + Z_B' D Z_B) delta = r_B - g_B - Z_B' D t,      x_B += delta,  g += G0_i[:, B] delta

    (the caller adds Z_B delta to t), k the solved width. ``factor`` [b, size, size] is the Cholesky factor of the
    left-hand side, ``rhs`` r_B [b, size], ``observed`` Z_B' D t [b, size]. Returns (delta [b, size], x, g).
    """
    grad = rhs - tf.slice(g, [0, s], [-1, size]) - observed
    delta = tf.linalg.cholesky_solve(factor, grad[:, :, None])[:, :, 0]
    dx = tf.ensure_shape(tf.pad(delta, [[0, 0], [s, k - s - size]]), [None, k])  # delta in place, [b, k]
    g += tf.matmul(delta, tf.slice(g0, [s, 0], [size, k]))
    if lam_i is not None:
        g += lam_i[:, None] * dx
    return delta, x + dx, g


def _conjugate_gradient(table, k, chunk: Chunk, x, diagonal, steps):
    """``steps`` CG iterations on (diag(``diagonal``) + Z_g' D Z_g) x = Z_g' b per unit, matrix-free, from ``x``
    [b, k]; ``diagonal`` is [k] or [b, k] (G0_i in the eigenbasis, ``table`` rotated into it).

    The starting residual comes from one pass over the gathered rows after t = Z_g x:

        r = Z_g' (b - D t) - diag x,

    so that the right-hand side Z_g' b is never formed on its own."""
    gathered, rhs_weights = _gather(table, k, chunk)
    weights = _entry_gram_weights(chunk)

    def apply(p):
        t = rows_dot(gathered, p) * weights  # D Z_g p, [b, L]
        return tf.matmul(t[:, None, :], gathered)[:, 0, :] + diagonal * p

    t = rows_dot(gathered, x)
    residual = tf.matmul((rhs_weights - weights * t)[:, None, :], gathered)[:, 0, :] - diagonal * x
    return _cg_steps(apply, residual, x, steps)


def _gram_conjugate_gradient(lhs, rhs, x, steps):
    """``steps`` CG iterations on the explicit systems ``lhs`` [b, k, k] x = ``rhs`` [b, k], from ``x`` [b, k]."""

    def apply(p):
        return tf.matmul(lhs, p[:, :, None])[:, :, 0]

    return _cg_steps(apply, rhs - apply(x), x, steps)


def _cg_steps(apply, residual, x, steps):
    """``steps`` conjugate-gradient iterations on A x = b per row, A p given by ``apply``, from x [b, k] and its
    residual b - A x [b, k]; the last step updates x only."""
    r = p = residual
    rs = tf.reduce_sum(r * r, axis=1, keepdims=True)
    for step in range(steps):
        ap = apply(p)
        alpha = tf.math.divide_no_nan(rs, tf.reduce_sum(p * ap, axis=1, keepdims=True))
        x = x + alpha * p
        if step + 1 < steps:
            r = r - alpha * ap
            rs_next = tf.reduce_sum(r * r, axis=1, keepdims=True)
            p = r + tf.math.divide_no_nan(rs_next, rs) * p
            rs = rs_next
    return x


def _owners(chunks: Chunks, start=0, stop=None):
    """The solved rows of the units of chunks [start, stop), in the order ``_map_chunks`` returns them."""
    stop = chunks.num_chunks if stop is None else stop
    return chunks.owners[chunks.unit_bounds[start] : chunks.unit_bounds[stop]]


def _map_chunks(chunks: Chunks, fn, shapes, start=0, stop=None, dtypes=None, entry_arrays=()):
    """Runs ``fn`` on the chunks [start, stop) in one ``tf.while_loop`` and concatenates its outputs over the units.

    Args:
        chunks: the flat chunked units.
        fn: ``Chunk`` (and one [b, L] slice of each of ``entry_arrays``) -> tuple of tensors, each [b, *shape] for
            the chunk's b units, or flat [b L] for a shape ().
        shapes: the tuple of output shapes, without the unit axis.
        start, stop: the chunks to run (int32 scalars; stop None: to the last chunk).
        dtypes: the outputs' dtypes (default: all float32).
        entry_arrays: further [E] tensors in the entries' flat order, sliced per chunk like the entries.

    Returns:
        A tuple of tensors [units of those chunks, *shape], in the units' order.
    """
    stop = chunks.num_chunks if stop is None else stop
    entry_bounds, unit_bounds, lengths = chunks.entry_bounds, chunks.unit_bounds, chunks.lengths

    def body(c, *arrays):
        e0, e1, u0, u1 = entry_bounds[c], entry_bounds[c + 1], unit_bounds[c], unit_bounds[c + 1]
        shape = tf.stack([u1 - u0, lengths[c]])

        def entries(x):
            return None if x is None else tf.reshape(x[e0:e1], shape)

        def units(x):
            return None if x is None else x[u0:u1]

        indices, gram_weights, row_scale = (
            entries(chunks.indices),
            entries(chunks.gram_weights),
            units(chunks.row_scale),
        )
        rhs_weights, offset_weights = chunks.coefficients.weights(
            entries(chunks.targets), gram_weights, row_scale, indices
        )
        chunk = Chunk(indices, rhs_weights, gram_weights, offset_weights, row_scale, units(chunks.owners))
        outputs = fn(chunk, *[entries(x) for x in entry_arrays])
        return (c + 1, *[a.write(c - start, o) for a, o in zip(arrays, outputs)])

    dtypes = dtypes or (tf.float32,) * len(shapes)
    arrays = tuple(
        tf.TensorArray(d, size=stop - start, infer_shape=False, element_shape=[None, *s])
        for s, d in zip(shapes, dtypes)
    )
    _, *arrays = tf.while_loop(
        lambda c, *_: c < stop,
        body,
        (tf.convert_to_tensor(start, tf.int32), *arrays),
        parallel_iterations=PARALLEL_CHUNKS,
    )
    return tuple(a.concat() for a in arrays)
