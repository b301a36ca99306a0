"""The WALS half-sweep: one function that solves every row of one side against the other side's factors.

For the row half (the column half is the same call with the transposed layout and U as the fixed side):

    (lambda I + w0 Y'Y + sum_{j in obs(i)} d_ij y_j y_j') x_i = sum_{j in obs(i)} (w0 + d_ij) a_ij y_j

G0 = lambda I + w0 Y'Y is formed once per half-sweep; the per-row Gram and right-hand side come from a padded
gather of Y per chunk of rows (``layout.py``), batched GEMMs and a batched Cholesky solve. Rows without
observations get x_i = 0, the exact minimiser (lambda I + w0 Y'Y) x = 0.

``solver="cg"`` replaces the Gram and the factorisation of short rows by ``cg_steps`` conjugate-gradient steps
on the same system, matrix-free (A p = G0 p + Y_g' (d * (Y_g p))), warm-started from the previous factors, as
``implicit`` does; long rows (split into pieces) are still solved exactly. It is inexact by design.

Everything here is pure tensors in, tensors out, and uses only dense standard ops (gather, BatchMatMul,
Cholesky, triangular solves, segment sum), so it runs on CPU or GPU; never compile it with XLA.
"""

from __future__ import annotations

import tensorflow as tf

from wals2.layout import Block, HalfLayout

# Chunks of one block that may run at the same time inside its while loop.
PARALLEL_CHUNKS = 2


def gramian(fixed: tf.Tensor, regularization: tf.Tensor, unobserved_weight: tf.Tensor) -> tf.Tensor:
    """G0 = lambda I + w0 Y'Y, float32 [k, k], for fixed factors Y [n, k]."""
    k = tf.shape(fixed)[1]
    yty = tf.matmul(fixed, fixed, transpose_a=True)
    return regularization * tf.eye(k, dtype=fixed.dtype) + unobserved_weight * yty


@tf.function
def half_sweep(
    layout: HalfLayout,
    fixed: tf.Tensor,
    regularization: tf.Tensor,
    unobserved_weight: tf.Tensor,
    solver: str = "cholesky",
    initial: tf.Tensor | None = None,
    cg_steps: int = 3,
) -> tf.Tensor:
    """Solves every row of ``layout`` against ``fixed``.

    Args:
        layout: the half's ``HalfLayout`` (built once per fit by ``layout.build_layouts``).
        fixed: float32 [n, k], the other side's factors.
        regularization: lambda > 0 (scalar).
        unobserved_weight: w0 >= 0 (scalar).
        solver: "cholesky" (exact) or "cg" (``cg_steps`` matrix-free CG steps from ``initial``).
        initial: float32 [m, k], the previous factors of the solved side; required by "cg".
        cg_steps: CG steps per row for "cg".

    Returns:
        float32 [m, k], the new factors of the solved side.
    """
    if solver not in ("cholesky", "cg"):
        raise ValueError(f"`solver` should be 'cholesky' or 'cg'. Received: solver={solver!r}")
    fixed = tf.convert_to_tensor(fixed, tf.float32)
    k = fixed.shape[1]
    g0 = gramian(fixed, tf.cast(regularization, tf.float32), tf.cast(unobserved_weight, tf.float32))
    table = fixed if layout.fixed_scale is None else fixed * layout.fixed_scale[:, None]
    table = tf.concat([table, tf.zeros([1, k], table.dtype)], axis=0)  # index n = padding
    g0_factor = tf.linalg.cholesky(g0) if layout.kind == "uniform" else None

    def solve(gram: tf.Tensor | None, rhs: tf.Tensor) -> tf.Tensor:
        if gram is None:  # uniform: every row shares G0
            return tf.transpose(tf.linalg.cholesky_solve(g0_factor, tf.transpose(rhs)))
        factor = tf.linalg.cholesky(gram + g0)
        return tf.linalg.cholesky_solve(factor, rhs[..., None])[..., 0]

    if solver == "cg" and layout.kind != "uniform":
        if initial is None:
            raise ValueError("`initial` should be the previous factors [m, k] when solver='cg'. Received: None")
        previous = tf.concat([tf.convert_to_tensor(initial, tf.float32), tf.zeros([1, k], tf.float32)], axis=0)

        def short_rows(*chunk):
            return _conjugate_gradient(table, g0, tf.gather(previous, chunk[4]), *chunk[:4], steps=cg_steps)
    else:

        def short_rows(*chunk):
            return solve(*_gram_and_rhs(table, *chunk[:4]))

    solutions = [_map_chunks(block, short_rows, [k]) for block in layout.blocks]
    if layout.num_long:
        partial_rhs = []
        partial_gram = []
        for block in layout.piece_blocks:
            if layout.kind == "uniform":
                partial_rhs.append(_map_chunks(block, lambda *c: _gram_and_rhs(table, *c[:4])[1], [k]))
            else:
                g, r = _map_chunks(block, lambda *c: _gram_and_rhs(table, *c[:4]), ([k, k], [k]))
                partial_gram.append(g)
                partial_rhs.append(r)
        segments, num_segments = layout.piece_segments, layout.num_long + 1  # the extra segment takes padding
        rhs = tf.math.unsorted_segment_sum(tf.concat(partial_rhs, 0), segments, num_segments)[:-1]
        gram = None
        if partial_gram:
            gram = tf.math.unsorted_segment_sum(tf.concat(partial_gram, 0), segments, num_segments)[:-1]
        solutions.append(solve(gram, rhs))
    solutions.append(tf.zeros([1, k], tf.float32))
    return tf.gather(tf.concat(solutions, axis=0), layout.gather_order)


def sweep(layouts, user_factors, item_factors, regularization, unobserved_weight, solver="cholesky", cg_steps=3):
    """One full sweep: every user row against V, then every item row against the new U.

    Args:
        layouts: ``layout.Layouts`` of the training matrix.
        user_factors: float32 [m, k], the previous U (the warm start of "cg"; unused by "cholesky").
        item_factors: float32 [n, k].
        regularization, unobserved_weight: lambda and w0.
        solver, cg_steps: as in ``half_sweep``.

    Returns:
        (new user factors [m, k], new item factors [n, k]).
    """
    cg = solver == "cg"
    u = half_sweep(
        layouts.rows, item_factors, regularization, unobserved_weight, solver, user_factors if cg else None, cg_steps
    )
    v = half_sweep(layouts.cols, u, regularization, unobserved_weight, solver, item_factors if cg else None, cg_steps)
    return u, v


def _gram_and_rhs(table, indices, rhs_weights, gram_weights, row_scale):
    """Per-unit Gram sum_e g_e z_e z_e' ([b, k, k], or None when uniform) and right-hand side sum_e b_e z_e."""
    gathered = tf.gather(table, indices)  # [b, L, k]
    rhs = tf.matmul(rhs_weights[:, None, :], gathered)[:, 0, :]
    if gram_weights is not None:
        gram = tf.matmul(gathered * gram_weights[..., None], gathered, transpose_a=True)
    elif row_scale is not None:
        gram = tf.matmul(gathered, gathered, transpose_a=True) * row_scale[:, None, None]
    else:
        gram = None
    return gram, rhs


def _conjugate_gradient(table, g0, x, indices, rhs_weights, gram_weights, row_scale, steps):
    """``steps`` CG iterations on (G0 + Z_g' D Z_g) x = b per unit, matrix-free, from ``x`` [b, k]."""
    gathered = tf.gather(table, indices)  # [b, L, k]
    rhs = tf.matmul(rhs_weights[:, None, :], gathered)[:, 0, :]

    def apply(p):
        t = tf.matmul(gathered, p[:, :, None])[:, :, 0]  # [b, L]
        t = t * gram_weights if gram_weights is not None else t * row_scale[:, None]
        return tf.matmul(t[:, None, :], gathered)[:, 0, :] + tf.matmul(p, g0)

    r = rhs - apply(x)
    p = r
    rs = tf.reduce_sum(r * r, axis=1, keepdims=True)
    for _ in range(steps):
        ap = apply(p)
        alpha = tf.math.divide_no_nan(rs, tf.reduce_sum(p * ap, axis=1, keepdims=True))
        x = x + alpha * p
        r = r - alpha * ap
        rs_next = tf.reduce_sum(r * r, axis=1, keepdims=True)
        p = r + tf.math.divide_no_nan(rs_next, rs) * p
        rs = rs_next
    return x


def _map_chunks(block: Block, fn, shapes):
    """Applies ``fn`` to every chunk of ``block``; outputs are flattened to [chunks * rows, *shape].

    ``fn`` gets (indices, rhs_weights, gram_weights, row_scale, owners) of one chunk, None where absent.
    ``shapes`` is one output shape (without the row axis) or a tuple of them when ``fn`` returns a tuple.
    """
    elems = (block.indices, block.rhs_weights, block.gram_weights, block.row_scale, block.owners)
    present = tuple(e for e in elems if e is not None)
    mask = [e is not None for e in elems]

    def call(chunk):
        it = iter(chunk)
        return fn(*[next(it) if m else None for m in mask])

    if block.indices.shape[0] == 1:
        return call([e[0] for e in present])
    multiple = isinstance(shapes, tuple)
    signature = [tf.TensorSpec([None, *s], tf.float32) for s in (shapes if multiple else [shapes])]
    out = tf.map_fn(
        call,
        present,
        fn_output_signature=tuple(signature) if multiple else signature[0],
        parallel_iterations=PARALLEL_CHUNKS,
    )
    flat = [tf.reshape(o, [-1, *s]) for o, s in zip(out if multiple else [out], shapes if multiple else [shapes])]
    return tuple(flat) if multiple else flat[0]
