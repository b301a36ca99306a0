"""One benchmark configuration (data set, k, system) in its own process; prints one JSON line.

Started by ``benchmarks.run``, one process per configuration, so that the peak RSS is the configuration's own.
Phases: load the data and build the system's structures ("load + layout"), one warm-up sweep (includes
``tf.function`` tracing), then ``--sweeps`` timed sweeps, each ended by fetching a value to the host.
Environment variables such as ``OPENBLAS_NUM_THREADS`` are set by the parent before this process starts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Callable

import numpy as np

from trainer import environment  # the standard library only

# The trainer's defaults (oneDNN, intra-op threads), set before TensorFlow's import; the parent may set them.
environment.set_defaults()

from benchmarks import run as _run  # noqa: E402  (imports no TensorFlow)
from benchmarks import synthetic  # noqa: E402

REGULARIZATION = 0.05
UNOBSERVED_WEIGHT = 0.1
INIT_SEED = 0


def peak_rss_gb() -> float:
    """This process's peak resident set size in GB (``VmHWM``).

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used on Linux: it keeps the parent's high-water mark across the
    fork + exec that started this process.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 2**20


def initial_factors(num: int, k: int) -> np.ndarray:
    """Seeded N(0, 1/k) float32 factors, the same for every system."""
    return np.random.default_rng(INIT_SEED).normal(0, 1 / np.sqrt(k), size=(num, k)).astype(np.float32)


def time_sweeps(step: Callable[[], None], sweeps: int) -> dict:
    """Runs ``step`` once as warm-up, then ``sweeps`` times; returns wall seconds and CPU utilisation."""
    start = time.perf_counter()
    step()
    warmup = time.perf_counter() - start
    times = []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(sweeps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    cpu_util = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
    return {"warmup_s": warmup, "sweep_s": times, "cpu_util": cpu_util}


def wals2_sweep_fn(*args, **kwargs):
    """``tf.function`` of one sweep of ``wals2_engine(*args, **kwargs)`` (the one-worker engine, tf1 mode)."""
    import tensorflow as tf

    return tf.function(wals2_engine(*args, **kwargs).sweep, jit_compile=False)


def wals2_engine(
    rows,
    cols,
    values,
    shape,
    row_weights,
    col_weights,
    solver_name: str,
    cg_steps: int | None,
    factors: int,
    regularization: float = REGULARIZATION,
    unobserved_weight: float = UNOBSERVED_WEIGHT,
    batch_entries: int = 65536,
    max_row_length: int = 2048,
    subspace_block: int | None = None,
    mode: str = "tf1",
    alpha: float = 1.0,
):
    """The one-worker ``wals2.engine.SweepEngine`` of the benchmark.

    ``mode`` "tf1" (the default): TF1's weighting with row and column weights R and C; "implicit": HKV's
    confidence 1 + ``alpha`` r (the weights and ``unobserved_weight`` unused), lambda not scaled by the counts.
    """
    from wals2.config import WALSConfig
    from wals2.engine import Partition, SweepEngine
    from wals2.modes import mode_of

    options = {} if cg_steps is None else {"cg_steps": cg_steps}
    if subspace_block is not None:
        options["subspace_block"] = subspace_block
    config = WALSConfig(
        mode=mode,
        alpha=alpha,
        latent_factors=factors,
        regularization=regularization,
        unobs_weight=unobserved_weight,
        solver=solver_name,
        batch_entries=batch_entries,
        max_row_length=max_row_length,
        **options,
    )
    given = (row_weights, col_weights) if mode == "tf1" else None
    return SweepEngine(mode_of(config), Partition.single(rows, cols, values, shape), given)


def run_wals2(args: argparse.Namespace, solver_name: str) -> dict:
    """wals2's sweep on ``args.device``: the engine's layouts built once, then ``sweep_fn(u, v)`` per sweep."""
    import tensorflow as tf

    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):  # soft placement would use the CPU
        raise SystemExit(
            "--device gpu: TensorFlow sees no GPU (a CUDA build is `pip install 'tensorflow[and-cuda]'`); "
            "nothing measured"
        )
    start = time.perf_counter()
    data = synthetic.load(args.data)
    m, n = data.shape
    with tf.device("/GPU:0" if args.device == "gpu" else "/CPU:0"):
        sweep_fn = wals2_sweep_fn(
            data.rows,
            data.cols,
            data.values,
            data.shape,
            np.ones(m, np.float32),
            np.ones(n, np.float32),
            solver_name,
            args.cg_steps,
            args.factors,
            subspace_block=args.subspace_block,
        )
        state = [tf.constant(initial_factors(m, args.factors)), tf.constant(initial_factors(n, args.factors))]
        layout_s = time.perf_counter() - start

        def step() -> None:
            state[:] = sweep_fn(*state)
            state[1][0, 0].numpy()  # synchronise: fetch a value to the host

        return {"layout_s": layout_s, **time_sweeps(step, args.sweeps)}


def run_numpy(args: argparse.Namespace, threads: int) -> dict:
    """The numpy reference; with ``threads`` > 1 its sub-batches are mapped over a thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks import numpy_ref

    start = time.perf_counter()
    data = synthetic.load(args.data)
    m, n = data.shape
    layouts = numpy_ref.build_layouts(
        data.rows, data.cols, data.values, data.shape, np.ones(m), np.ones(n), UNOBSERVED_WEIGHT
    )
    state = [initial_factors(m, args.factors), initial_factors(n, args.factors)]
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    layout_s = time.perf_counter() - start

    def step() -> None:
        state[:] = numpy_ref.sweep(layouts, *state, REGULARIZATION, UNOBSERVED_WEIGHT, pool)

    return {"layout_s": layout_s, **time_sweeps(step, args.sweeps)}


def run_implicit(args: argparse.Namespace, use_cg: bool) -> dict:
    """``implicit``'s CPU ALS, confidence = the rating, timed per iteration by its own fit callback.

    One ``fit`` runs 1 + ``sweeps`` iterations; the first is the warm-up. The callback receives (iteration,
    elapsed seconds of that iteration's two half-solves, loss). "load + layout" is the CSR build plus the
    part of ``fit`` outside the iterations (its transpose and factor initialisation).
    """
    import scipy.sparse
    from implicit.cpu.als import AlternatingLeastSquares

    start = time.perf_counter()
    data = synthetic.load(args.data)
    user_items = scipy.sparse.csr_matrix(
        (data.values.astype(np.float32), (data.rows, data.cols)), shape=data.shape, dtype=np.float32
    )
    model = AlternatingLeastSquares(
        factors=args.factors,
        regularization=REGULARIZATION,
        iterations=1 + args.sweeps,
        use_cg=use_cg,
        num_threads=2,
        calculate_training_loss=False,
        random_state=INIT_SEED,
    )
    layout_s = time.perf_counter() - start
    elapsed, clocks = [], []

    def callback(iteration: int, seconds: float, loss: float | None) -> None:
        del iteration, loss
        elapsed.append(seconds)
        clocks.append((time.process_time(), time.perf_counter()))

    start = time.perf_counter()
    model.fit(user_items, show_progress=False, callback=callback)
    fit_s = time.perf_counter() - start
    (cpu0, wall0), (cpu1, wall1) = clocks[0], clocks[-1]
    return {
        "layout_s": layout_s + fit_s - sum(elapsed),
        "warmup_s": elapsed[0],
        "sweep_s": elapsed[1:],
        "cpu_util": (cpu1 - cpu0) / (wall1 - wall0),
    }


def run(args: argparse.Namespace) -> dict:
    """Dispatches ``args.system`` to its runner."""
    system = args.system
    if system.startswith("wals2-"):
        return run_wals2(args, system.removeprefix("wals2-"))
    runners = {
        "numpy": lambda: run_numpy(args, threads=1),
        "numpy-2threads": lambda: run_numpy(args, threads=2),
        "implicit-cholesky": lambda: run_implicit(args, use_cg=False),
        "implicit-cg": lambda: run_implicit(args, use_cg=True),
    }
    return runners[system]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, choices=sorted(synthetic.LOADERS))
    parser.add_argument("--factors", type=int, required=True)
    parser.add_argument("--system", required=True)
    parser.add_argument("--sweeps", type=int, default=5)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--cg-steps", type=int, default=None)
    parser.add_argument("--subspace-block", type=int, default=None)
    args = parser.parse_args()
    device = args.device if args.system.startswith("wals2-") else "cpu"
    result = {"data": args.data, "k": args.factors, "system": args.system, "device": device, **_run.cpu_info()}
    if args.system == "wals2-subspace":
        from wals2.config import WALSConfig

        result["subspace_block"] = args.subspace_block or WALSConfig().subspace_block
    result["loadavg_1m_at_start"] = os.getloadavg()[0]
    result.update(run(args))
    times = result["sweep_s"]
    result.update(
        median_s=float(np.median(times)),
        min_s=min(times),
        max_s=max(times),
        peak_rss_gb=peak_rss_gb(),
        openblas_num_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
