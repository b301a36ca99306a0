"""Seconds per exact sweep with 1, 2 and 3 local workers on synthetic MovieLens shapes, through ``WALSModel.fit``.

``python -m benchmarks.multiworker ml-1m --workers 1 2 3 --sweeps 3 --k 32`` starts, for each worker count, that
many processes on 127.0.0.1 with a ``TF_CONFIG`` each (one process without). Every worker loads the cached
synthetic ratings, keeps its contiguous part of the entries, and goes the trainer's way: ``sharding.distribute``
(vocabularies, row and column blocks, no held-out part), then ``WALSModel.fit`` under the job's strategy for one
untimed warm-up sweep (tracing) and ``--sweeps`` timed sweeps; the chief prints one JSON line per worker count
(median seconds per sweep, distribute seconds, the load average). The workers share the machine's cores, so the
ratio to 1 worker is the communication and duplication overhead, not a speed-up.
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
    import keras

    from benchmarks.synthetic import synthetic
    from trainer import cluster
    from wals2 import Ratings, WALSConfig, WALSModel, sharding
    from wals2.collectives import Collectives
    from wals2.engine import block_bounds

    strategy = cluster.strategy(cluster.from_environ(), timeout=1800)
    collectives = Collectives(strategy, timeout=1800)
    ratings = synthetic(name)
    m, n = ratings.shape
    bounds = block_bounds(len(ratings.values), collectives.count)
    part = slice(bounds[collectives.rank], bounds[collectives.rank + 1])
    started = time.perf_counter()
    mine = Ratings(
        ratings.rows[part].astype(np.int32),
        ratings.cols[part].astype(np.int32),
        ratings.values[part].astype(np.float32),
        np.arange(m),
        np.arange(n),
        name,
    )
    share = sharding.distribute(mine, collectives, 0.0, 0.0, seed=0)
    with strategy.scope():
        model = WALSModel(m, n, WALSConfig(latent_factors=k, regularization=0.1))
        model.compile(jit_compile=False)
    model.set_training_data(share.partition)
    distribute_seconds = time.perf_counter() - started

    class Timer(keras.callbacks.Callback):
        seconds: list = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    timer = Timer()
    model.fit(epochs=sweeps + 1, callbacks=[timer], verbose=0)  # the first sweep traces
    if collectives.rank == 0:
        record = {
            "data": name,
            "workers": collectives.count,
            "k": k,
            "seconds_per_sweep": float(np.median(timer.seconds[1:])),
            "sweeps": timer.seconds[1:],
            "first_sweep_seconds": timer.seconds[0],
            "distribute_and_layout_seconds": distribute_seconds,
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
            env = dict(os.environ)
            if count > 1:
                spec = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
                env["TF_CONFIG"] = json.dumps(spec)
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
