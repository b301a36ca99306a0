"""Seconds per exact sweep with 1, 2 and 3 local workers (``wals2.distributed``) on synthetic MovieLens shapes.

``python -m benchmarks.multiworker ml-1m --workers 1 2 3 --sweeps 3 --k 32`` starts, for each worker count, that
many processes on 127.0.0.1 with a ``TF_CONFIG`` each. Every worker loads the cached synthetic ratings, builds
its blocks' layouts (``DistributedSweep`` from the global COO), runs one untimed warm-up sweep and then
``--sweeps`` timed sweeps; the chief prints one JSON line per worker count (median seconds per sweep, layout
seconds, the load average). The workers share the machine's cores, so the ratio to 1 worker is the
communication and duplication overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np


def worker(name: str, sweeps: int, k: int) -> None:
    import tensorflow as tf

    from benchmarks.synthetic import synthetic
    from wals2 import WALSConfig, distributed, objective

    ratings = synthetic(name)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=1800)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    config = WALSConfig(latent_factors=k, regularization=0.1)
    values = ratings.values.astype(np.float64)
    started = time.perf_counter()
    stats = objective.statistics(ratings.cols, values, ratings.shape[1])
    sweep = distributed.DistributedSweep(strategy, ratings.rows, ratings.cols, values, ratings.shape, config, stats)
    layout_seconds = time.perf_counter() - started
    rng = np.random.default_rng(0)
    u = rng.standard_normal((ratings.shape[0], k), dtype=np.float32)
    v = rng.standard_normal((ratings.shape[1], k), dtype=np.float32)
    u, v = sweep(u, v)  # warm-up: tracing
    seconds = []
    for _ in range(sweeps):
        start = time.perf_counter()
        u, v = sweep(u, v)
        _ = u.numpy()
        seconds.append(time.perf_counter() - start)
    if sweep.rank == 0:
        record = {
            "data": name,
            "workers": sweep.num_workers,
            "k": k,
            "seconds_per_sweep": float(np.median(seconds)),
            "sweeps": seconds,
            "layout_seconds": layout_seconds,
            "loadavg": os.getloadavg(),
        }
        print(json.dumps(record), flush=True)


def launch(name: str, count: int, sweeps: int, k: int) -> None:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    hosts = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    procs = []
    try:
        for index in range(count):
            env = dict(
                os.environ,
                TF_CONFIG=json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}),
            )
            command = [
                sys.executable,
                "-m",
                "benchmarks.multiworker",
                name,
                "--worker",
                "--sweeps",
                str(sweeps),
                "--k",
                str(k),
            ]
            procs.append(subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL))
        for proc in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"a worker exited with status {proc.returncode}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=["ml-1m", "ml-20m"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.name, args.sweeps, args.k)
        return
    for count in args.workers:
        launch(args.name, count, args.sweeps, args.k)


if __name__ == "__main__":
    main()
