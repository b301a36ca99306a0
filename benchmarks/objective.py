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

``--against-implicit N`` compares wals2's solvers with ``implicit``'s conjugate-gradient ALS at equal objective, on
HKV's implicit problem (``ALPHA``): ``implicit`` is given the confidences 1 + alpha r as its matrix, wals2 runs its
implicit mode, both start from the benchmark's seeded factors and run N sweeps (iterations), and the objective after
each is computed outside the timed part by ``hkv_objective`` (float64 numpy). The target is ``TOLERANCE`` above the
highest of the systems' lowest objectives (so every system reaches it); each system's time to the target is its
cumulative sweep time at the first sweep at or under it (wals2's traced first sweep is a separate warm-up).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks import synthetic
from benchmarks.worker import REGULARIZATION, initial_factors, wals2_engine  # sets the trainer's TensorFlow defaults

#: HKV's confidence of an observed rating r in ``--against-implicit``: 1 + ALPHA r.
ALPHA = 1.0
#: ``--against-implicit``: the target objective's margin over the highest of the systems' lowest objectives.
TOLERANCE = 0.005


def hkv_objective(u, v, rows, cols, confidence, regularization: float, chunk: int = 1 << 20) -> float:
    """HKV's implicit objective, in float64.

        sum over all cells of c_ij (p_ij - u_i'v_j)^2 + lambda (|U|^2 + |V|^2),

    with p = 1 and c = ``confidence`` [nnz] on the observed cells (``rows``, ``cols`` [nnz]), p = 0 and c = 1
    elsewhere; the sum over all cells of (u_i'v_j)^2 is tr(U'U V'V), the observed cells corrected by
    c (1 - p)^2 - p^2. ``u`` [m, k], ``v`` [n, k]; the observed cells in chunks of ``chunk``.
    """
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    total = float(np.sum((u.T @ u) * (v.T @ v))) + regularization * (float(np.sum(u * u)) + float(np.sum(v * v)))
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk)
        p = np.einsum("ij,ij->i", u[rows[part]], v[cols[part]])
        total += float(np.sum(confidence[part] * (1 - p) ** 2 - p**2))
    return total


def hkv_objective_of(data):
    """``hkv_objective`` of ``data``'s cells, confidence 1 + ``ALPHA`` r, lambda the benchmark's, as f(U, V)."""
    from threadpoolctl import threadpool_limits  # a dependency of implicit

    confidence = 1 + ALPHA * data.values.astype(np.float64)

    def objective(u, v) -> float:
        # BLAS on one thread: OpenBLAS's threads spin after a call and would take the cores from the next sweep.
        with threadpool_limits(1, "blas"):
            return hkv_objective(u, v, data.rows, data.cols, confidence, REGULARIZATION)

    return objective


def objective_curve(
    data,
    k: int,
    solver_name: str,
    seconds: float,
    subspace_block: int | None = None,
    *,
    sweeps: int = 200,
    mode: str = "tf1",
    max_row_length: int = 2048,
) -> dict:
    """Sweeps of ``solver_name`` from the benchmark's initial factors until ``seconds`` of sweep time have passed.

    Returns the curve [[cumulative sweep seconds, objective], ...] (the first point is the start, at 0 s), the
    objective at ``seconds`` (of the last sweep finished by then; the start's if none was), the sweep times and
    the warm-up (first, traced) sweep's time. Sweeps stop once past ``seconds`` or after ``sweeps``. ``mode``
    "tf1": the benchmark's tf1 problem, its objective the engine's; "implicit": HKV's with confidence
    1 + ``ALPHA`` r, its objective ``hkv_objective``. ``max_row_length``: the config's (rows longer than it are
    cut into pieces: solved exactly by "cholesky" and "cg", by block passes over the pieces by "subspace").
    """
    import tensorflow as tf

    m, n = data.shape
    ones = (np.ones(m, np.float32), np.ones(n, np.float32))
    engine = wals2_engine(
        *(data.rows, data.cols, data.values, data.shape, *ones, solver_name, None, k),
        subspace_block=subspace_block,
        mode=mode,
        alpha=ALPHA,
        max_row_length=max_row_length,
    )
    if mode == "tf1":
        objective = lambda u, v: float(engine.metrics(u, v)["loss"])  # noqa: E731
    else:
        objective = hkv_objective_of(data)
    sweep = tf.function(engine.sweep, jit_compile=False)
    u0, v0 = tf.constant(initial_factors(m, k)), tf.constant(initial_factors(n, k))
    start = time.perf_counter()
    u, v = sweep(u0, v0)
    v[0, 0].numpy()
    warmup = time.perf_counter() - start
    u, v = u0, v0
    curve = [[0.0, objective(u, v)]]
    elapsed, times = 0.0, []
    while elapsed < seconds and len(times) < sweeps:
        start = time.perf_counter()
        u, v = sweep(u, v)
        v[0, 0].numpy()  # synchronise
        times.append(time.perf_counter() - start)
        elapsed += times[-1]
        curve.append([elapsed, objective(u, v)])
    return {"curve": curve, "loss_at_seconds": loss_at(curve, seconds), "sweep_s": times, "warmup_s": warmup}


def implicit_curve(data, k: int, sweeps: int) -> dict:
    """``implicit``'s CG ALS (2 threads, 3 CG steps, BLAS on one thread) on HKV's problem, from the seeded factors.

    Its matrix holds the confidences 1 + ``ALPHA`` r (``implicit`` weighs an observed cell by its value, with
    preference 1); the objective after each iteration is ``hkv_objective``, computed in ``fit``'s callback,
    after the iteration's time was taken. Returns the curve and the iteration times, as ``objective_curve``.
    """
    import scipy.sparse
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits  # a dependency of implicit

    m, n = data.shape
    confidence = (1 + ALPHA * data.values).astype(np.float32)
    matrix = scipy.sparse.csr_matrix((confidence, (data.rows, data.cols)), shape=data.shape)
    model = AlternatingLeastSquares(
        factors=k,
        regularization=REGULARIZATION,
        iterations=sweeps,
        use_cg=True,
        num_threads=2,
        calculate_training_loss=False,
        random_state=0,
    )
    model.user_factors, model.item_factors = initial_factors(m, k), initial_factors(n, k)
    objective = hkv_objective_of(data)
    curve = [[0.0, objective(model.user_factors, model.item_factors)]]
    times = []

    def callback(iteration: int, seconds: float, loss) -> None:
        del iteration, loss
        times.append(seconds)
        curve.append([sum(times), objective(model.user_factors, model.item_factors)])

    with threadpool_limits(1, "blas"):  # as benchmarks.run starts implicit (OPENBLAS_NUM_THREADS=1)
        model.fit(matrix, show_progress=False, callback=callback)
    return {"curve": curve, "sweep_s": times, "warmup_s": None}


def time_to(curve, target: float) -> tuple[int, float] | None:
    """(sweeps, cumulative seconds) of the first point of ``curve`` at or under ``target``; None if none is."""
    for sweeps, (t, loss) in enumerate(curve):
        if loss <= target:
            return sweeps, t
    return None


def equal_objective_table(lines: list[dict]) -> str:
    """One markdown row per system of ``lines`` (``--against-implicit`` JSON lines): its median seconds per sweep,
    lowest objective, and sweeps and seconds to its data set and k's target, with ``implicit-cg``'s seconds to the
    target over its own."""
    header = "| data | k | CPU | system | s/sweep | lowest objective | target | sweeps to target | s to target | "
    header += "x vs implicit-cg |"
    rows = [header, "|" + "---|" * 10]
    reference = {(r["data"], r["k"]): r["seconds_to_target"] for r in lines if r["system"] == "implicit-cg"}
    for r in lines:
        ref = reference.get((r["data"], r["k"]))
        cells = [r["data"], str(r["k"]), cpu_label(r), r["system"], f"{r['median_s']:.3f}", f"{r['lowest']:.6g}"]
        cells += [f"{r['target']:.6g}", str(r["sweeps_to_target"]), f"{r['seconds_to_target']:.2f}"]
        cells.append(f"{ref / r['seconds_to_target']:.2f}x" if ref else "")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def versus_implicit(args) -> None:
    """The ``--against-implicit`` comparison: wals2's solvers and ``implicit``'s CG at equal objective."""
    from benchmarks.run import cpu_info
    from wals2.config import SOLVERS, WALSConfig

    solvers = args.solvers or list(SOLVERS)
    machine, sweeps = cpu_info(), args.against_implicit
    for name in args.data:
        data = synthetic.load(name)
        for k in args.factors:
            curves = {"implicit-cg": implicit_curve(data, k, sweeps)}
            for s in solvers:
                block = (args.subspace_block[0] or WALSConfig().subspace_block) if s == "subspace" else None
                curves[f"wals2-{s}"] = objective_curve(data, k, s, np.inf, block, sweeps=sweeps, mode="implicit")
            lowest = {system: min(loss for _, loss in c["curve"]) for system, c in curves.items()}
            target = (1 + TOLERANCE) * max(lowest.values())
            lines = []
            for system, c in curves.items():
                reached, seconds = time_to(c["curve"], target)
                line = {"data": name, "k": k, "system": system, "alpha": ALPHA, "regularization": REGULARIZATION}
                line.update(c, median_s=float(np.median(c["sweep_s"])), lowest=lowest[system], target=target)
                line.update(sweeps_to_target=reached, seconds_to_target=seconds, **machine)
                if system == "wals2-subspace":
                    line["subspace_block"] = block
                print(json.dumps(line), flush=True)
                lines.append(line)
            print(equal_objective_table(lines), flush=True)


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
        cells = [r["data"], str(r["k"]), cpu_label(r), label, f"{r['median_s']:.2f}"]
        cells.append(f"{ref['median_s'] / r['median_s']:.2f}x" if ref else "")
        cells.append(str(len(r["sweep_s"])))
        for t in (T / 2, T):
            cells.append(f"{loss_at(r['curve'], t):.6g} ({t:g} s)")
        for t in (T / 2, T):
            gap = loss_at(r["curve"], t) / loss_at(ref["curve"], t) - 1 if ref else None
            cells.append("" if gap is None else f"{100 * gap:+.2f} %")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def cpu_label(line: dict) -> str:
    """The CPU column of the tables: the model, and "(AVX-512)" where the line's CPU has it."""
    return line["cpu"] + (" (AVX-512)" if line.get("avx512f") else "")


def sweep_table(lines: list[dict]) -> str:
    """One markdown row per curve of ``lines`` (``--seconds`` JSON lines) for runs too long for a curve: the
    warm-up (traced) sweep, the median timed sweep and its speed-up over the exact one of the same data set and k,
    and the objective after the first timed sweep."""
    exact = {(r["data"], r["k"]): r for r in lines if r["solver"] == "cholesky"}
    rows = ["| data | k | CPU | solver | warm-up s | s/sweep | sweep vs exact | objective after 1 sweep |"]
    rows.append("|" + "---|" * 8)
    for r in lines:
        ref = exact.get((r["data"], r["k"]))
        label = r["solver"] if r.get("subspace_block") is None else f"{r['solver']} (b = {r['subspace_block']})"
        if r.get("max_row_length", 2048) != 2048:
            label += f", `--max_row_length {r['max_row_length']}`"
        cells = [r["data"], str(r["k"]), cpu_label(r), label, f"{r['warmup_s']:.1f}", f"{r['median_s']:.1f}"]
        cells.append(f"{ref['median_s'] / r['median_s']:.2f}x" if ref else "")
        cells.append(f"{r['curve'][1][1]:.6g}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def by_time(args) -> None:
    """The ``--seconds`` comparison: one curve per solver (and subspace block size), gaps at equal time."""
    from benchmarks.run import cpu_info
    from wals2.config import SOLVERS, WALSConfig

    solvers = args.solvers or list(SOLVERS)
    machine = cpu_info()
    default_block = WALSConfig().subspace_block
    lines = []
    for name in args.data:
        data = synthetic.load(name)
        for k in args.factors:
            for s in solvers:
                for block in args.subspace_block if s == "subspace" else [None]:
                    if s == "subspace" and block is None:
                        block = default_block
                    result = objective_curve(data, k, s, args.seconds, block, max_row_length=args.max_row_length)
                    line = {"data": name, "k": k, "solver": s, "subspace_block": block, "seconds": args.seconds}
                    line["max_row_length"] = args.max_row_length
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
    parser.add_argument("--solvers", nargs="+", help="these solvers only (default: all)")
    parser.add_argument("--subspace-block", nargs="+", type=int, default=[None], help="b of the subspace solver")
    parser.add_argument("--max-row-length", type=int, default=2048, help="with --seconds: the config's field")
    parser.add_argument(
        "--against-implicit", type=int, metavar="N", help="compare with implicit's CG at equal objective, N sweeps"
    )
    args = parser.parse_args()
    if args.against_implicit is not None:
        versus_implicit(args)
        return
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
