"""The inexact solver's objective against the exact one's after the same number of sweeps, same start.

``python -m benchmarks.objective --data ml-1m ml-20m --factors 32 64 --sweeps 10`` runs, for each data set and
k, every solver of ``wals2.config.SOLVERS`` for ``--sweeps`` sweeps of the benchmark's problem (tf1 mode, unit
weights, lambda = 0.05, w0 = 0.1, the same seeded initial factors as ``benchmarks.worker``) and prints the
objective (``SweepEngine.metrics``, the one ``WALSModel`` logs as ``loss``) of each, and each solver's gap to
the exact (Cholesky) solver's, as a markdown table and JSON lines.

``--seconds T`` instead compares the solvers at equal wall time: each (``--solvers``, default all) runs one
warm-up sweep (tracing), then sweeps from the same initial factors until T seconds of sweeping have passed,
recording the objective after every sweep (computed outside the timed part). It prints each solver's curve
(cumulative sweep seconds, objective), the objective of the last sweep finished within T, and the gaps to the
exact solver's at T, as JSON lines with the CPU model and flags; ``--subspace-block`` sets b of the subspace
solver (several values: one curve each).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks import synthetic
from benchmarks.worker import initial_factors, wals2_engine


def objective_curve(data, k: int, solver_name: str, seconds: float, subspace_block: int | None = None) -> dict:
    """Sweeps of ``solver_name`` from the benchmark's initial factors until ``seconds`` of sweep time have passed.

    Returns the curve [[cumulative sweep seconds, objective], ...] (the first point is the start, at 0 s), the
    objective at ``seconds`` (of the last sweep finished by then; the start's if none was), the sweep times and
    the warm-up (first, traced) sweep's time. Sweeps stop once past ``seconds`` or after 200.
    """
    import tensorflow as tf

    m, n = data.shape
    ones = (np.ones(m, np.float32), np.ones(n, np.float32))
    engine = wals2_engine(
        data.rows, data.cols, data.values, data.shape, *ones, solver_name, None, k, subspace_block=subspace_block
    )
    sweep = tf.function(engine.sweep, jit_compile=False)
    u0, v0 = tf.constant(initial_factors(m, k)), tf.constant(initial_factors(n, k))
    start = time.perf_counter()
    u, v = sweep(u0, v0)
    v[0, 0].numpy()
    warmup = time.perf_counter() - start
    u, v = u0, v0
    curve = [[0.0, float(engine.metrics(u, v)["loss"])]]
    elapsed, times = 0.0, []
    while elapsed < seconds and len(times) < 200:
        start = time.perf_counter()
        u, v = sweep(u, v)
        v[0, 0].numpy()  # synchronise
        times.append(time.perf_counter() - start)
        elapsed += times[-1]
        curve.append([elapsed, float(engine.metrics(u, v)["loss"])])
    return {"curve": curve, "loss_at_seconds": loss_at(curve, seconds), "sweep_s": times, "warmup_s": warmup}


def loss_at(curve, seconds: float) -> float:
    """The objective of the last point of ``curve`` ([[seconds, objective], ...]) at or before ``seconds``."""
    return [loss for t, loss in curve if t <= seconds][-1]


def time_table(lines: list[dict]) -> str:
    """One markdown row per curve of ``lines`` (``--seconds`` JSON lines, possibly from several runs): its median
    seconds per sweep and speed-up over the exact sweep, the sweeps done, and the objective at T / 2 and at T with
    its gap to the exact solver's curve of the same data set, k and T."""
    exact = {(r["data"], r["k"], r["seconds"]): r for r in lines if r["solver"] == "cholesky"}
    header = "| data | k | CPU | solver | s/sweep | sweep vs exact | sweeps | objective at T / 2 | objective at T | "
    header += "vs exact at T / 2 | vs exact at T |"
    rows = [header, "|" + "---|" * 11]
    for r in lines:
        T = r["seconds"]
        ref = exact.get((r["data"], r["k"], T))
        label = r["solver"] if r.get("subspace_block") is None else f"{r['solver']} (b = {r['subspace_block']})"
        cells = [r["data"], str(r["k"]), r["cpu"], label, f"{r['median_s']:.2f}"]
        cells.append(f"{ref['median_s'] / r['median_s']:.2f}x" if ref else "")
        cells.append(str(len(r["sweep_s"])))
        for t in (T / 2, T):
            cells.append(f"{loss_at(r['curve'], t):.6g} ({t:g} s)")
        for t in (T / 2, T):
            gap = loss_at(r["curve"], t) / loss_at(ref["curve"], t) - 1 if ref else None
            cells.append("" if gap is None else f"{100 * gap:+.2f} %")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def by_time(args) -> None:
    """The ``--seconds`` comparison: one curve per solver (and subspace block size), gaps at equal time."""
    from benchmarks.run import cpu_info
    from wals2.config import SOLVERS

    solvers = args.solvers or list(SOLVERS)
    machine = cpu_info()
    lines = []
    for name in args.data:
        data = synthetic.load(name)
        for k in args.factors:
            for s in solvers:
                for block in args.subspace_block if s == "subspace" else [None]:
                    if s == "subspace" and block is None:
                        from wals2.config import WALSConfig

                        block = WALSConfig().subspace_block
                    result = objective_curve(data, k, s, args.seconds, block)
                    line = {"data": name, "k": k, "solver": s, "subspace_block": block, "seconds": args.seconds}
                    line.update(result, median_s=float(np.median(result["sweep_s"])), **machine)
                    print(json.dumps(line), flush=True)
                    lines.append(line)
    print(time_table(lines))


def objective_after(data, k: int, solver_name: str, sweeps: int) -> float:
    """The objective after ``sweeps`` sweeps of ``solver_name`` from the benchmark's initial factors."""
    import tensorflow as tf

    m, n = data.shape
    ones = (np.ones(m, np.float32), np.ones(n, np.float32))
    engine = wals2_engine(data.rows, data.cols, data.values, data.shape, *ones, solver_name, None, k)
    sweep = tf.function(engine.sweep, jit_compile=False)
    u, v = tf.constant(initial_factors(m, k)), tf.constant(initial_factors(n, k))
    for _ in range(sweeps):
        u, v = sweep(u, v)
    return float(engine.metrics(u, v)["loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ml-1m"], choices=sorted(synthetic.LOADERS))
    parser.add_argument("--factors", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--seconds", type=float, help="compare the solvers at equal wall time instead")
    parser.add_argument("--solvers", nargs="+", help="with --seconds: these solvers only (default: all)")
    parser.add_argument("--subspace-block", nargs="+", type=int, default=[None], help="b of the subspace solver")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # the trainer's default, before TensorFlow's import
    if args.seconds is not None:
        by_time(args)
        return
    from wals2.config import SOLVERS

    print(f"| data | k | solver | objective after {args.sweeps} sweeps | vs exact |")
    print("|---|---|---|---|---|")
    lines = []
    for name in args.data:
        data = synthetic.load(name)
        for k in args.factors:
            losses = {s: objective_after(data, k, s, args.sweeps) for s in SOLVERS}
            for s, loss in losses.items():
                gap = loss / losses["cholesky"] - 1
                print(f"| {name} | {k} | {s} | {loss:.6g} | {100 * gap:+.3f} % |", flush=True)
                lines.append({"data": name, "k": k, "solver": s, "sweeps": args.sweeps, "loss": loss, "gap": gap})
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
