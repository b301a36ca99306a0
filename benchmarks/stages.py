"""Where a sweep's seconds go: the stages of the exact half-sweep in GFLOP/s against this machine's SGEMM peak.

``python -m benchmarks.stages --data ml-20m --factors 64`` builds the engine's two layouts of one synthetic data
set and times, per half and over the same chunks as ``wals2.solver.half_sweep``, graphs that stop after each
stage of the k x k (direct) path, so each stage's seconds are the difference of two graphs:

* gather: the padded gather of the fixed factors, [b, L, k] per chunk (reported in GB/s written);
* Gram: the per-row Grams Z'Z and right-hand sides Z'b, batched matmuls (2 L k^2 flops per row);
* factorisation: the batched Cholesky of the k x k systems (k^3 / 3 flops per row);
* solves: the two triangular solves (2 k^2 flops per row).

Rows of at most ``woodbury_max_length(k)`` entries (the L x L Woodbury form in the real sweep) are timed
separately through ``solver._woodbury`` (2 L^2 k + L^3 / 3 flops per row), and the real ``half_sweep`` is
timed last, so the stage sums can be compared with it. The SGEMM peak is numpy's (OpenBLAS, all cores) and
TensorFlow's ``tf.matmul`` on 4096 x 4096 float32 matrices, measured in the same process. Every figure is the
median of ``--repeats`` runs after a warm-up. Prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks import synthetic
from benchmarks.run import cpu_info
from benchmarks.worker import REGULARIZATION, initial_factors  # sets the trainer's TensorFlow defaults

STAGES = ("gather", "Gram", "factorisation", "solves")


def median_seconds(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` (which returns a tensor, fetched to end the run) after one warm-up."""
    fn().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sgemm_peaks(repeats: int) -> dict:
    """GFLOP/s of a 4096^3 float32 matmul in numpy (OpenBLAS) and in TensorFlow."""
    import tensorflow as tf

    n = 4096
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    flops = 2 * n**3
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    t = tf.constant(a)
    tf_time = median_seconds(lambda: tf.reduce_sum(tf.matmul(t, t)), repeats)
    return {"numpy_sgemm_gflops": flops / np.median(times[1:]) / 1e9, "tf_matmul_gflops": flops / tf_time / 1e9}


def half_stages(half, fixed, k: int, repeats: int) -> dict:
    """Seconds and flops per stage for one ``HalfLayout`` solved against ``fixed`` [n, k]."""
    import tensorflow as tf

    from wals2 import solver

    lengths = half.short.lengths.numpy()
    units = np.diff(half.short.unit_bounds.numpy())
    threshold = solver.woodbury_max_length(k)
    split = int(np.searchsorted(lengths, threshold, side="right"))
    table = fixed if half.fixed_scale is None else fixed * half.fixed_scale[:, None]
    table = tf.concat([table, tf.zeros([1, k])], axis=0)
    lam = tf.constant(REGULARIZATION, tf.float32)
    shared = solver.gramian(fixed, lam, tf.constant(half.unobserved_weight, tf.float32))

    def direct(depth: int):
        def body(chunk):
            gathered, rhs_weights = solver._gather(table, k, chunk)
            if depth == 0:
                return (tf.reduce_sum(gathered, axis=1),)
            gram, rhs = solver._gram_and_rhs(table, k, chunk, with_gram=True)
            if depth == 1:
                return (tf.reduce_sum(gram, axis=1) + rhs,)
            factor = tf.linalg.cholesky(gram + shared)
            if depth == 2:
                return (factor[:, -1, :] + rhs,)
            return (tf.linalg.cholesky_solve(factor, rhs[..., None])[..., 0],)

        return tf.function(
            lambda: tf.reduce_sum(solver._map_chunks(half.short, body, ([k],), start=split)[0]), jit_compile=False
        )

    eigenvalues, rotation = tf.linalg.eigh(shared - lam * tf.eye(k))
    rotated = tf.matmul(table, rotation)
    scale = tf.math.rsqrt(lam + tf.maximum(eigenvalues, 0.0))[None, :]
    woodbury = tf.function(
        lambda: tf.reduce_sum(
            solver._map_chunks(half.short, lambda c: (solver._woodbury(rotated, k, c, scale),), ([k],), stop=split)[0]
        ),
        jit_compile=False,
    )
    sweep = tf.function(lambda: tf.reduce_sum(solver.half_sweep(half, fixed, lam)), jit_compile=False)

    seconds = [median_seconds(direct(depth), repeats) for depth in range(4)]
    rows_d, len_d = units[split:], lengths[split:]
    rows_w, len_w = units[:split], lengths[:split]
    result = {
        "rows_direct": int(rows_d.sum()),
        "rows_woodbury": int(rows_w.sum()),
        "long_rows": half.num_long,
        "gather_s": seconds[0],
        "gather_gb": float(np.sum(rows_d * len_d) * k * 4 / 1e9),
        "Gram_s": seconds[1] - seconds[0],
        "Gram_gflop": float(np.sum(rows_d * len_d) * 2 * k * k / 1e9),
        "factorisation_s": seconds[2] - seconds[1],
        "factorisation_gflop": float(rows_d.sum() * k**3 / 3 / 1e9),
        "solves_s": seconds[3] - seconds[2],
        "solves_gflop": float(rows_d.sum() * 4 * k * k / 1e9),
        "direct_total_s": seconds[3],
        "woodbury_s": median_seconds(woodbury, repeats) if split else 0.0,
        "woodbury_gflop": float(np.sum(rows_w * (2 * len_w**2 * k + len_w**3 / 3)) / 1e9),
        "half_sweep_s": median_seconds(sweep, repeats),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ml-20m", choices=sorted(synthetic.LOADERS))
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tensorflow as tf

    from benchmarks.worker import wals2_engine

    data = synthetic.load(args.data)
    m, n = data.shape
    k = args.factors
    ones = (np.ones(m, np.float32), np.ones(n, np.float32))
    engine = wals2_engine(data.rows, data.cols, data.values, data.shape, *ones, "cholesky", None, k)
    u = tf.constant(initial_factors(m, k))
    v = tf.constant(initial_factors(n, k))
    peaks = sgemm_peaks(args.repeats)
    halves = {
        "rows": half_stages(engine.rows_layout, v, k, args.repeats),
        "cols": half_stages(engine.cols_layout, u, k, args.repeats),
    }
    peak = peaks["numpy_sgemm_gflops"]
    print(f"{args.data}, k = {k}: numpy SGEMM {peak:.0f} GFLOP/s, tf.matmul {peaks['tf_matmul_gflops']:.0f} GFLOP/s")
    print("| half | stage | rows | seconds | GFLOP | GFLOP/s | % of SGEMM peak |")
    print("|---|---|---|---|---|---|---|")
    for name, h in halves.items():
        rows = h["rows_direct"]
        print(
            f"| {name} | gather | {rows} | {h['gather_s']:.3f} | {h['gather_gb']:.2f} GB | "
            f"{h['gather_gb'] / h['gather_s']:.1f} GB/s | |"
        )
        for stage in STAGES[1:]:
            s, g = h[f"{stage}_s"], h[f"{stage}_gflop"]
            rate = g / s if s > 0 else float("nan")
            print(f"| {name} | {stage} | {rows} | {s:.3f} | {g:.2f} | {rate:.1f} | {100 * rate / peak:.0f} % |")
        if h["rows_woodbury"]:
            s, g = h["woodbury_s"], h["woodbury_gflop"]
            print(
                f"| {name} | Woodbury rows (all stages) | {h['rows_woodbury']} | {s:.3f} | {g:.2f} | "
                f"{g / s:.1f} | {100 * g / s / peak:.0f} % |"
            )
        print(f"| {name} | whole half-sweep ({h['long_rows']} long rows included) | | {h['half_sweep_s']:.3f} | | | |")
    print(
        json.dumps(
            {
                "data": args.data,
                "k": k,
                **cpu_info(),
                **peaks,
                **{f"{n}_{key}": x for n, h in halves.items() for key, x in h.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
