"""Where a sweep's memory goes: resident memory after each phase of one benchmark process, step by step.

``python -m benchmarks.memory --data ml-20m --factors 64`` runs, in this one process, the phases of a
``benchmarks.worker`` wals2 configuration and records after each one the process's resident set (``VmRSS``), its
high-water mark (``VmHWM``, what the benchmark reports as peak RSS) and TensorFlow's CPU allocator statistics
(``tf.config.experimental.get_memory_info``: bytes in use now and at the allocator's peak since the previous
phase):

* ``import``: ``import tensorflow``;
* ``data``: the synthetic data set (int32 rows and columns, int8 ratings);
* ``engine``: the one-worker ``SweepEngine`` (both halves' layouts);
* ``factors``: the seeded U and V;
* ``sweep 1``, ``sweep 2``, ...: each ``tf.function`` sweep (the first one traces it).

Prints a markdown table (``markdown_table``) and one JSON line. Run it alone on an idle machine; the numbers are the
process's own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess

from trainer import environment  # the standard library only

environment.set_defaults()  # the worker's and the trainer's, before TensorFlow's import

from benchmarks import synthetic  # noqa: E402  (imports no TensorFlow)
from benchmarks.run import cpu_info  # noqa: E402

GB = 2**30


def process_memory() -> dict:
    """VmRSS and VmHWM of this process, in GB (2^30 bytes)."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024 / GB
    return {"rss_gb": fields["VmRSS"], "hwm_gb": fields["VmHWM"]}


def phase(name: str, phases: list) -> None:
    """Appends ``name``'s memory to ``phases`` and resets the allocator's peak for the next phase."""
    import tensorflow as tf

    info = tf.config.experimental.get_memory_info("CPU:0")
    allocator = {"allocator_gb": info["current"] / GB, "allocator_peak_gb": info["peak"] / GB}
    phases.append({"phase": name, **process_memory(), **allocator})
    tf.config.experimental.reset_memory_stats("CPU:0")


def commit() -> str | None:
    """The repository's checked-out commit, or None without git."""
    if shutil.which("git") is None:
        return None
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=synthetic.REPO_ROOT)
    return out.stdout.strip() or None


def markdown_table(results: list[dict]) -> str:
    """One row per solver and phase: resident and high-water GB, the allocator's GB in use after it and at its peak
    during it."""
    lines = [
        "| solver | phase | RSS GB | high-water GB | allocator GB | allocator peak GB |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for p in result["phases"]:
            cells = [result["solver"], p["phase"], p["rss_gb"], p["hwm_gb"], p["allocator_gb"], p["allocator_peak_gb"]]
            lines.append("| " + " | ".join(c if isinstance(c, str) else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="ml-20m", choices=sorted(synthetic.TARGETS))
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--solver", default="cholesky", choices=("cholesky", "cg", "subspace"))
    parser.add_argument("--sweeps", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from benchmarks.worker import initial_factors, wals2_engine

    phases = []
    phase("import", phases)
    data = synthetic.load(args.data)
    m, n = data.shape
    phase("data", phases)
    ones = (np.ones(m, np.float32), np.ones(n, np.float32))
    engine = wals2_engine(data.rows, data.cols, data.values, data.shape, *ones, args.solver, None, args.factors)
    phase("engine", phases)
    sweep = tf.function(engine.sweep, jit_compile=False)
    state = [tf.constant(initial_factors(m, args.factors)), tf.constant(initial_factors(n, args.factors))]
    phase("factors", phases)
    for number in range(args.sweeps):
        state[:] = sweep(*state)
        state[1][0, 0].numpy()
        phase(f"sweep {number + 1}", phases)
    result = {"data": args.data, "k": args.factors, "solver": args.solver, "commit": commit(), **cpu_info()}
    result["phases"] = phases
    print(markdown_table([result]))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
