"""The inexact solver's objective against the exact one's after the same number of sweeps, same start.

``python -m benchmarks.objective --data ml-1m ml-20m --factors 32 64 --sweeps 10`` runs, for each data set and
k, every solver of ``wals2.config.SOLVERS`` for ``--sweeps`` sweeps of the benchmark's problem (tf1 mode, unit
weights, lambda = 0.05, w0 = 0.1, the same seeded initial factors as ``benchmarks.worker``) and prints the
objective (``SweepEngine.metrics``, the one ``WALSModel`` logs as ``loss``) of each, and each solver's gap to
the exact (Cholesky) solver's, as a markdown table and JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from benchmarks import synthetic
from benchmarks.worker import initial_factors, wals2_engine


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
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
