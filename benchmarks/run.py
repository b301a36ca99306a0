"""Times one exact WALS sweep of wals2 against a numpy reference and `implicit`, one process per configuration.

    python -m benchmarks.run --shapes ml-1m ml-20m --factors 32 64
    python -m benchmarks.run --check

For every data set, k and system a fresh ``python -m benchmarks.worker`` process loads the data, builds its
structures, runs one warm-up sweep and ``--sweeps`` timed sweeps, and prints one JSON line. With ``--rounds R``
the systems of one data set and k run R times in alternating order (forward, then backward), so that a machine
whose speed drifts over minutes slows every system alike; a configuration's line then merges its rounds (all
timed sweeps, their median, the median per round). The lines are appended to
``benchmarks/results/<timestamp>.jsonl`` (after one line describing the machine), and a markdown table with
side-by-side ratios is printed at the end. ``--check`` instead verifies, on a small skewed problem,
that the wals2 sweep and the numpy reference agree with a float64 solve.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

import numpy as np

from benchmarks import synthetic

RESULTS_DIR = os.path.join(synthetic.REPO_ROOT, "benchmarks", "results")
PEERS = ("implicit-cholesky", "implicit-cg", "numpy-2threads")
PEER_SYSTEMS = ("implicit-cholesky", "implicit-cg", "numpy", "numpy-2threads")
#: Systems run with BLAS at 1 thread: those with their own thread pool (to avoid oversubscription) and the
#: plain numpy reference (a one-core baseline; OpenBLAS threads inside its small GEMMs only burn a core).
SINGLE_THREAD_BLAS = ("implicit-cholesky", "implicit-cg", "numpy", "numpy-2threads")
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: The /proc/cpuinfo flags that decide TensorFlow's CPU kernels (oneDNN is on by default only with VNNI/AMX).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
CHECK_TOLERANCE = 1e-4
#: ``--onednn-ab`` runs every wals2 system also as ``<system>-onednn0``: TF_ENABLE_ONEDNN_OPTS=0 in its worker.
ONEDNN_OFF = "-onednn0"
#: ``--threads-ab`` runs every wals2 system also as ``<system>-tfthreads``: TF_NUM_INTRAOP_THREADS=0 (TensorFlow's
#: own default, every core per kernel) instead of the trainer's one share per chunk (``wals2.threads``).
TF_THREADS = "-tfthreads"
#: Variant suffix -> (the variable its worker gets, its value, the A/B table's names of the variant, of the
#: default and of their ratio).
VARIANTS = {
    ONEDNN_OFF: ("TF_ENABLE_ONEDNN_OPTS", "0", ("oneDNN off", "oneDNN on", "off / on")),
    TF_THREADS: ("TF_NUM_INTRAOP_THREADS", "0", ("TF's threads", "a share per chunk", "TF's / share")),
}
#: The TensorFlow variables recorded with every line (the worker sets the trainer's defaults where unset).
TF_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS")


def all_systems() -> list[str]:
    """``wals2-<solver>`` for every solver of ``wals2.config.SOLVERS``, then the peers."""
    from wals2.config import SOLVERS

    return [f"wals2-{name}" for name in SOLVERS] + list(PEER_SYSTEMS)


def cpu_info() -> dict:
    """The CPU model and the flags of ``CPU_FLAGS`` (from /proc/cpuinfo), and the ``TF_VARIABLES``."""
    cpuinfo = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpuinfo = f.read()
    fields = [line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line]
    model = next((value.strip() for key, value in fields if key.strip() == "model name"), "")
    flags = set(next((value.split() for key, value in fields if key.strip() == "flags"), []))
    return {
        "cpu": model or platform.processor(),
        "avx512f": "avx512f" in flags,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        **{name: os.environ.get(name) for name in TF_VARIABLES},
    }


def machine_info() -> dict:
    """CPU model and flags, core count, library versions, OpenBLAS / oneDNN variables and load, with every run."""
    versions = {}
    for package in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scipy", "implicit"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        **cpu_info(),
        "cores": os.cpu_count(),
        "numpy_blas": numpy_blas(),
        "python": platform.python_version(),
        "versions": versions,
        **{name: os.environ.get(name) for name in OPENBLAS_VARIABLES},
        "loadavg": list(os.getloadavg()),
    }


def numpy_blas() -> list[str]:
    """numpy's BLAS libraries with version and kernel (core type), via threadpoolctl when installed."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    return [
        f"{i['internal_api']} {i.get('version')} {i.get('architecture')}"
        for i in threadpoolctl.threadpool_info()
        if i["user_api"] == "blas"
    ]


def child_env(system: str) -> dict[str, str]:
    """The environment of a worker: BLAS at 1 thread for systems with their own threads, quieter TF logs.

    A system with a suffix of ``VARIANTS`` runs with that variant's variable; the others inherit the variables
    (the worker sets the trainer's defaults where unset, ``trainer.environment``).
    """
    env = dict(os.environ)
    for suffix, (name, value, _) in VARIANTS.items():
        if system.endswith(suffix):
            env[name] = value
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (synthetic.REPO_ROOT, env.get("PYTHONPATH")) if p)
    if system in SINGLE_THREAD_BLAS:
        env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def run_configuration(data: str, k: int, system: str, args: argparse.Namespace) -> dict:
    """Runs one configuration in a fresh worker process; returns its JSON result or an error record."""
    worker_system = variant_of(system)[0]
    command = [sys.executable, "-m", "benchmarks.worker", "--data", data, "--factors", str(k)]
    command += ["--system", worker_system]
    command += ["--sweeps", str(args.sweeps), "--device", args.device]
    if args.cg_steps is not None:
        command += ["--cg-steps", str(args.cg_steps)]
    if getattr(args, "subspace_block", None) is not None:
        command += ["--subspace-block", str(args.subspace_block)]
    record = {"data": data, "k": k, "system": system}
    try:
        proc = subprocess.run(
            command,
            env=child_env(system),
            cwd=synthetic.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired:
        return {**record, "error": f"timed out after {args.timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {**record, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return {**json.loads(lines[-1]), "system": system}


def merge_rounds(rounds: list[dict]) -> dict:
    """One configuration's result over its rounds: every timed sweep, medians of the rest, the worst peak RSS."""
    failed = [r for r in rounds if "error" in r]
    if failed:
        return failed[0]
    if len(rounds) == 1:
        return rounds[0]
    sweeps = [s for r in rounds for s in r["sweep_s"]]
    return {
        **rounds[0],
        "loadavg_1m_at_start": max(r["loadavg_1m_at_start"] for r in rounds),
        "layout_s": float(np.median([r["layout_s"] for r in rounds])),
        "warmup_s": float(np.median([r["warmup_s"] for r in rounds])),
        "sweep_s": sweeps,
        "cpu_util": float(np.mean([r["cpu_util"] for r in rounds])),
        "median_s": float(np.median(sweeps)),
        "min_s": min(sweeps),
        "max_s": max(sweeps),
        "peak_rss_gb": max(r["peak_rss_gb"] for r in rounds),
        "rounds": len(rounds),
        "round_medians_s": [r["median_s"] for r in rounds],
    }


def ratio(peer: dict | None, result: dict) -> str:
    """peer median / this median ("> 1": this system is faster), or "" when either is missing."""
    if not peer or "median_s" not in peer or "median_s" not in result:
        return ""
    return f"{peer['median_s'] / result['median_s']:.2f}"


def markdown_table(results: list[dict]) -> str:
    """One row per (data set, k, system) with times, memory, CPU utilisation and ratios to the peers."""
    header = ["data", "k", "system", "median s/sweep (min-max)", "warm-up s", "load + layout s", "peak RSS GB"]
    header += ["CPU util"] + [f"x vs {peer}" for peer in PEERS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {(r["data"], r["k"], r["system"]): r for r in results}
    for r in results:
        cells = [r["data"], str(r["k"]), r["system"]]
        if "error" in r:
            cells += ["error: " + r["error"].splitlines()[-1][:80]] + [""] * (len(header) - 4)
        else:
            cells += [
                f"{r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f})",
                f"{r['warmup_s']:.2f}",
                f"{r['layout_s']:.2f}",
                f"{r['peak_rss_gb']:.2f}",
                f"{r['cpu_util']:.2f}",
            ]
            cells += [ratio(by_key.get((r["data"], r["k"], peer)), r) for peer in PEERS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variant_of(system: str) -> tuple[str, str | None]:
    """(the worker's system, the ``VARIANTS`` suffix or None) of a system name such as ``wals2-cg-onednn0``."""
    for suffix in VARIANTS:
        if system.endswith(suffix):
            return system.removesuffix(suffix), suffix
    return system, None


def ab_table(results: list[dict], suffix: str) -> str:
    """For every wals2 system run with the variant ``suffix`` too: the variant's median, the default's, and their
    ratio ("> 1": the default is faster)."""
    variant, default, ratio_name = VARIANTS[suffix][2]
    by_key = {(r["data"], r["k"], r["system"]): r for r in results}
    lines = [
        f"| data | k | system | median s, {variant} | median s, {default} | {ratio_name} |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        other = by_key.get((r["data"], r["k"], r["system"] + suffix))
        if other and "median_s" in other and "median_s" in r:
            cells = [r["data"], str(r["k"]), r["system"], f"{other['median_s']:.3f}", f"{r['median_s']:.3f}"]
            lines.append("| " + " | ".join(cells + [ratio(other, r)]) + " |")
    return "\n".join(lines)


def onednn_table(results: list[dict]) -> str:
    """``ab_table`` of the ``--onednn-ab`` systems: TF_ENABLE_ONEDNN_OPTS=0 against =1 ("> 1": oneDNN is faster)."""
    return ab_table(results, ONEDNN_OFF)


def available(data: str) -> bool:
    """Synthetic data is generated (and cached) on demand here; real data must be on disk."""
    if data in synthetic.TARGETS:
        print(f"data {data}: ensuring the synthetic cache", flush=True)
        subprocess.run([sys.executable, "-m", "benchmarks.synthetic", data], cwd=synthetic.REPO_ROOT, check=True)
        return True
    if not os.path.exists(synthetic.REAL_FILES[data]):
        print(f"data {data}: files not found under {os.path.normpath(synthetic.SHARED_DATA)}, skipped", flush=True)
        return False
    return True


def benchmark(args: argparse.Namespace) -> None:
    """Runs every configuration, one at a time, and prints the table."""
    known = all_systems()
    unknown = sorted(set(args.systems or ()) - set(known))
    if unknown:
        sys.exit(f"unknown systems {unknown}; known: {known}")
    systems = [s for s in known if not args.systems or s in args.systems]
    suffixes = [suffix for suffix, on in ((ONEDNN_OFF, args.onednn_ab), (TF_THREADS, args.threads_ab)) if on]
    systems = [v for s in systems for v in ([s] + [s + x for x in suffixes] if s.startswith("wals2-") else [s])]
    machine = machine_info()
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".jsonl")
    print("machine:", json.dumps(machine), flush=True)
    if machine["loadavg"][0] > 0.5:
        print(f"warning: load average {machine['loadavg'][0]:.2f}; run benchmarks on an idle machine", flush=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"machine": machine, "argv": sys.argv[1:]}) + "\n")
        results = []
        for data in (d for d in args.shapes if available(d)):
            for k in args.factors:
                rounds = {system: [] for system in systems}
                for number in range(args.rounds):
                    for system in systems if number % 2 == 0 else systems[::-1]:
                        result = run_configuration(data, k, system, args)
                        print(json.dumps({**result, "round": number + 1}), flush=True)
                        rounds[system].append(result)
                for system in systems:
                    result = merge_rounds(rounds[system])
                    out.write(json.dumps(result) + "\n")
                    out.flush()
                    results.append(result)
    print(f"\nresults: {os.path.relpath(path, synthetic.REPO_ROOT)}")
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, "
        + ", ".join(f"{p} {v}" for p, v in machine["versions"].items())
    )
    variables = (*OPENBLAS_VARIABLES, *TF_VARIABLES)
    print(", ".join(f"{name}={machine[name]}" for name in variables) + f", device={args.device}\n")
    print(markdown_table(results))
    for suffix in suffixes:
        print("\n" + ab_table(results, suffix))


def check_problem(seed: int = 0, shape: tuple[int, int] = (300, 200), nnz: int = 6000):
    """A small Zipf-skewed problem with one empty row and one empty column: (rows, cols, values)."""
    rng = np.random.default_rng(seed)
    p_rows, p_cols = rng.zipf(1.6, shape[0]).astype(float), rng.zipf(1.6, shape[1]).astype(float)
    p_rows[7], p_cols[11] = 0, 0
    prob = np.outer(p_rows, p_cols).ravel()
    nnz = min(nnz, np.count_nonzero(prob))
    cells = rng.choice(prob.size, size=nnz, replace=False, p=prob / prob.sum())
    rows, cols = np.divmod(cells, shape[1])
    return rows, cols, rng.integers(1, 6, size=nnz).astype(np.float64)


def check() -> bool:
    """wals2's sweep and the float32 numpy reference (plain and threaded) against a float64 numpy solve.

    Every solver of ``wals2.config.SOLVERS`` is checked; where the sweep takes ``cg_steps`` it gets k steps, and
    the subspace solver gets one block of k coordinates (its exact solve from the previous factors).
    """
    from concurrent.futures import ThreadPoolExecutor

    from trainer import environment

    environment.set_defaults()  # the trainer's, before TensorFlow's import
    import tensorflow as tf

    from benchmarks import numpy_ref
    from benchmarks.worker import wals2_sweep_fn
    from wals2.config import SOLVERS

    shape, k, lam, w0, sizes = (300, 200), 16, 0.5, 0.1, {"batch_entries": 256, "max_row_length": 24}
    rows, cols, values = check_problem()
    rng = np.random.default_rng(1)
    v0 = rng.normal(size=(shape[1], k))
    cases = {
        "unit weights": (np.ones(shape[0]), np.ones(shape[1])),
        "random weights, one zero column weight": (rng.random(shape[0]), np.r_[0.0, rng.random(shape[1] - 1)]),
    }
    # k conjugate-gradient steps solve a k x k system exactly (up to rounding), so an iterative solver is held
    # to the same tolerance as the exact one.
    cg_steps = k
    ok = True
    for case, (r, c) in cases.items():
        exact = numpy_ref.build_layouts(rows, cols, values, shape, r, c, w0, dtype=np.float64, **sizes)
        expected = numpy_ref.sweep(exact, None, v0, lam, w0)
        ref32 = numpy_ref.build_layouts(rows, cols, values, shape, r, c, w0, **sizes)
        candidates = {
            "numpy": numpy_ref.sweep(ref32, None, v0, lam, w0),
            "numpy-2threads": numpy_ref.sweep(ref32, None, v0, lam, w0, ThreadPoolExecutor(2)),
        }
        for name in SOLVERS:
            fn = wals2_sweep_fn(
                rows,
                cols,
                values,
                shape,
                r.astype(np.float32),
                c.astype(np.float32),
                name,
                cg_steps,
                k,
                lam,
                w0,
                subspace_block=k,
                **sizes,
            )
            u, v = fn(tf.zeros([shape[0], k]), tf.constant(v0, tf.float32))
            candidates[f"wals2-{name}"] = (u.numpy(), v.numpy())
        for system, got in candidates.items():
            errors = [np.linalg.norm(g - e) / np.linalg.norm(e) for g, e in zip(got, expected)]
            passed = max(errors) < CHECK_TOLERANCE
            ok &= passed
            print(f"{case:40s} {system:18s} rel. error rows {errors[0]:.1e} cols {errors[1]:.1e}", end="")
            print("  ok" if passed else f"  FAILED (tolerance {CHECK_TOLERANCE})")
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=["ml-1m", "ml-20m", "real-ml-1m", "real-ml-100k"],
        choices=sorted(synthetic.LOADERS),
        help="data sets: synthetic ml-1m / ml-20m, real files real-ml-1m / real-ml-100k (skipped when absent)",
    )
    parser.add_argument("--factors", nargs="+", type=int, default=[32, 64], help="k values (128 optional)")
    parser.add_argument("--systems", nargs="+", help="only these systems (default: all)")
    parser.add_argument("--sweeps", type=int, default=5, help="timed sweeps after the warm-up (>= 3)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each configuration, systems alternating")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="device of the wals2 sweep")
    parser.add_argument("--cg-steps", type=int, help="passed to wals2's sweep when it takes cg_steps")
    parser.add_argument("--subspace-block", type=int, help="block size b of wals2-subspace (default: the config's)")
    parser.add_argument(
        "--onednn-ab",
        action="store_true",
        help="also run every wals2 system with TF_ENABLE_ONEDNN_OPTS=0, as <system>-onednn0, alternating",
    )
    parser.add_argument(
        "--threads-ab",
        action="store_true",
        help="also run every wals2 system with TensorFlow's own thread count (TF_NUM_INTRAOP_THREADS=0), as "
        "<system>-tfthreads, alternating",
    )
    parser.add_argument("--check", action="store_true", help="only verify wals2 and numpy against float64")
    args = parser.parse_args(argv)
    if args.sweeps < 3:
        parser.error("--sweeps should be >= 3")
    if args.rounds < 1:
        parser.error(f"--rounds should be a positive integer. Received: --rounds {args.rounds}")
    return args


def main() -> None:
    args = parse_args()
    if args.check:
        sys.exit(0 if check() else 1)
    benchmark(args)


if __name__ == "__main__":
    main()
