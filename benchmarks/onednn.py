"""TF_ENABLE_ONEDNN_OPTS unset against =1 on ALS-sized kernels and on whole sweeps, fresh processes, alternating.

    python -m benchmarks.onednn --rounds 5            # kernels: Grams, Cholesky, Cholesky solve
    python -m benchmarks.onednn --sweep ml-1m --factors 32 64   # the wals2 sweep's factors with and without

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, at import, so every measurement runs in its own process. The
kernel mode runs ``--rounds`` pairs of processes (unset, then =1, then =1, then unset, ...); each process times
every kernel ``--repeats`` times after a warm-up and prints one JSON line per kernel (its median). The table
gives the median over rounds of each setting and their ratio. Each kernel's output on a seeded input is saved
and compared between the settings (relative error of the float32 results). The sweep mode runs two exact sweeps
of wals2 from the benchmark's seeded factors under each setting and prints the relative difference of U and V.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ENTRIES = 65536  # entries per chunk: the engine's default batch_entries
LENGTHS = (8, 32, 128, 512)
SETTINGS = (None, "1")


def kernels(k: int):
    """(name, flops, fn, inputs) of the sweep's kernels at k: Grams of [b, L, k] chunks, Cholesky and solve."""
    import tensorflow as tf

    rng = np.random.default_rng(k)
    out = []
    for length in LENGTHS:
        b = ENTRIES // length
        z = tf.constant(rng.normal(size=(b, length, k)).astype(np.float32))
        out.append((f"gram b={b} L={length}", 2 * b * length * k * k, lambda z=z: tf.matmul(z, z, transpose_a=True)))
    b = ENTRIES // 32
    a = rng.normal(size=(b, 2 * k, k)).astype(np.float32)
    spd = tf.constant(np.einsum("blk,blj->bkj", a, a) + k * np.eye(k, dtype=np.float32))
    rhs = tf.constant(rng.normal(size=(b, k, 1)).astype(np.float32))
    chol = tf.linalg.cholesky(spd)
    out.append((f"cholesky b={b}", b * k**3 / 3, lambda: tf.linalg.cholesky(spd)))
    out.append((f"cholesky_solve b={b}", 2 * b * k * k, lambda: tf.linalg.cholesky_solve(chol, rhs)))
    return out


def kernel_worker(factors: list[int], repeats: int, save: str) -> None:
    import tensorflow as tf

    results, arrays = [], {}
    for k in factors:
        for name, flops, fn, *_ in kernels(k):
            graph = tf.function(fn, jit_compile=False)
            arrays[f"k={k} {name}"] = graph().numpy()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                graph().numpy()
                times.append(time.perf_counter() - start)
            median = float(np.median(times))
            results.append({"k": k, "kernel": name, "median_s": median, "gflops": flops / median / 1e9})
    np.savez(save, **arrays)
    print(json.dumps(results), flush=True)


def env_with(setting: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def child(arguments: list[str], setting: str | None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.onednn", *arguments],
        env=env_with(setting),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        sys.exit(f"child failed ({setting=}): {proc.stderr[-2000:]}")
    return [line for line in proc.stdout.splitlines() if line.startswith(("[", "{"))][-1]


def label(setting: str | None) -> str:
    return "unset" if setting is None else f"={setting}"


def compare_kernels(args: argparse.Namespace) -> None:
    from benchmarks import run

    tmp = tempfile.mkdtemp()
    medians: dict[tuple, dict[str, list[float]]] = {}
    saved = {}
    lines = [{"machine": run.machine_info(), "argv": sys.argv[1:]}]
    for number in range(args.rounds):
        for setting in SETTINGS if number % 2 == 0 else SETTINGS[::-1]:
            path = os.path.join(tmp, f"{label(setting)}.npz")
            arguments = ["--worker", "--factors", *map(str, args.factors), "--repeats", str(args.repeats)]
            results = json.loads(child([*arguments, "--save", path], setting))
            saved[setting] = path
            for r in results:
                medians.setdefault((r["k"], r["kernel"]), {}).setdefault(label(setting), []).append(r["median_s"])
            print(f"round {number + 1} {label(setting)}: done", flush=True)
    outputs = {s: np.load(p) for s, p in saved.items()}
    for (k, kernel), by in medians.items():
        off, on = float(np.median(by["unset"])), float(np.median(by["=1"]))
        a, b = outputs[None][f"k={k} {kernel}"], outputs["1"][f"k={k} {kernel}"]
        line = {"k": k, "kernel": kernel, "unset_s": by["unset"], "onednn_s": by["=1"], "unset_median_s": off}
        line.update(onednn_median_s=on, ratio=off / on, rel_diff=float(np.linalg.norm(a - b) / np.linalg.norm(a)))
        lines.append(line)
    print("\n" + kernel_table(lines))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(line) + "\n" for line in lines)


def kernel_table(lines: list[dict]) -> str:
    """The markdown table of the kernel lines: medians over rounds with the variable unset and =1, ratio, diff."""
    rows = ["| k | kernel | unset ms | =1 ms | unset / =1 | rel. diff of the outputs |", "|---|---|---|---|---|---|"]
    for r in (line for line in lines if "kernel" in line):
        cells = [str(r["k"]), r["kernel"], f"{r['unset_median_s'] * 1e3:.2f}", f"{r['onednn_median_s'] * 1e3:.2f}"]
        rows.append("| " + " | ".join(cells + [f"{r['ratio']:.2f}", f"{r['rel_diff']:.1e}"]) + " |")
    return "\n".join(rows)


def sweep_worker(data_name: str, k: int, save: str) -> None:
    import tensorflow as tf

    from benchmarks import synthetic, worker

    data = synthetic.load(data_name)
    m, n = data.shape
    fn = worker.wals2_sweep_fn(
        data.rows,
        data.cols,
        data.values,
        data.shape,
        np.ones(m, np.float32),
        np.ones(n, np.float32),
        "cholesky",
        None,
        k,
    )
    state = (tf.constant(worker.initial_factors(m, k)), tf.constant(worker.initial_factors(n, k)))
    for _ in range(2):
        state = fn(*state)
    np.savez(save, u=state[0].numpy(), v=state[1].numpy())
    print("{}", flush=True)


def compare_sweeps(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp()
    for k in args.factors:
        got = {}
        for setting in SETTINGS:
            path = os.path.join(tmp, f"{k}-{label(setting)}.npz")
            child(["--sweep-worker", args.sweep, "--factors", str(k), "--save", path], setting)
            got[setting] = np.load(path)
        for name in ("u", "v"):
            a, b = got[None][name], got["1"][name]
            print(f"{args.sweep} k={k} {name}: rel. diff {np.linalg.norm(a - b) / np.linalg.norm(a):.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--rounds", type=int, default=4, help="pairs of processes, settings alternating")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls of each kernel per process")
    parser.add_argument("--out", help="write the kernel medians as JSON lines here")
    parser.add_argument("--sweep", help="compare two sweeps' factors on this data set instead")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sweep-worker", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kernel_worker(args.factors, args.repeats, args.save)
    elif args.sweep_worker:
        sweep_worker(args.sweep_worker, args.factors[0], args.save)
    elif args.sweep:
        compare_sweeps(args)
    else:
        compare_kernels(args)


if __name__ == "__main__":
    main()
