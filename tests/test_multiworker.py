"""Multi-worker training: 2 and 3 local worker processes against one process, chief-only writes, a killed worker."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, SHARED_DATA
from oracle import random_problem

import wals2
from trainer import multiworker
from wals2 import distributed, objective

TIMEOUT = 60  # --collective-timeout of the workers, seconds
DEADLINE = 240  # a whole test run, seconds


def _ratings_file(tmp_path: pathlib.Path) -> pathlib.Path:
    """ml-100k's u.data when ../shared is present, else a synthetic tab-separated file of the same format."""
    path = SHARED_DATA / "ml-100k" / "u.data"
    if path.exists():
        return path
    rows, cols, values = random_problem(0, shape=(300, 200), nnz=6000)
    path = tmp_path / "synthetic.data"
    lines = [f"{u + 1}\t{i + 1}\t{int(r)}\t0" for u, i, r in zip(rows, cols, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(count: int, tmp_path: pathlib.Path, args: list[str]) -> list[subprocess.Popen]:
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(count)]
    procs = []
    for index in range(count):
        config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config), CUDA_VISIBLE_DEVICES="")
        log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115 (closed with the process)
        command = [sys.executable, "-m", "trainer.multiworker", "--collective-timeout", str(TIMEOUT), *args]
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _wait(procs: list[subprocess.Popen], deadline: float = DEADLINE) -> list[int]:
    end = time.monotonic() + deadline
    for proc in procs:
        proc.wait(timeout=max(end - time.monotonic(), 1))
    return [proc.returncode for proc in procs]


def _single_process(path, config: wals2.WALSConfig, test_fraction: float = 0.1):
    """U, V of one WALSModel on the training entries of ``multiworker.split_masks``."""
    ratings = wals2.read_ratings(str(path))
    validation, test = multiworker.split_masks(
        ratings.user_ids[ratings.users], ratings.item_ids[ratings.items], 0.0, test_fraction, config.seed
    )
    model = wals2.WALSModel(ratings.num_users, ratings.num_items, config)
    model.compile(jit_compile=False)
    model.fit(ratings.subset(~(validation | test)), verbose=0)
    return model.user_factors.numpy(), model.item_factors.numpy(), ratings


def _relative_error(got, want) -> float:
    """|got - want|_F / |want|_F (the blocks' chunks sum in another order than one process's)."""
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers, flags",
    [
        (2, ["--latent_factors", "5", "--num_iters", "3"]),
        (3, ["--latent_factors", "4", "--num_iters", "3", "--mode", "explicit", "--regularization", "0.5"]),
    ],
    ids=["2-workers-tf1", "3-workers-explicit"],
)
def test_workers_equal_one_process_and_only_the_chief_writes(tmp_path, workers, flags):
    path = _ratings_file(tmp_path)
    job = tmp_path / "job"
    procs = _start(workers, tmp_path, ["--train-file", str(path), "--job-dir", str(job), *flags])
    try:
        codes = _wait(procs)
    finally:
        _stop(procs)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(workers)]
    assert codes == [0] * workers, logs
    values = dict(zip(flags[::2], flags[1::2]))
    config = wals2.WALSConfig(
        latent_factors=int(values["--latent_factors"]),
        num_iters=int(values["--num_iters"]),
        mode=values.get("--mode", "tf1"),
        regularization=float(values.get("--regularization", 0.07)),
    )
    u, v, ratings = _single_process(path, config)
    assert _relative_error(np.load(job / "model" / "row.npy"), u) < 1e-5
    assert _relative_error(np.load(job / "model" / "col.npy"), v) < 1e-5
    np.testing.assert_array_equal(np.load(job / "model" / "user.npy"), ratings.user_ids)
    np.testing.assert_array_equal(np.load(job / "model" / "item.npy"), ratings.item_ids)
    assert json.loads((job / "metrics.json").read_text())["workers"] == workers
    # Only the chief (worker 0) wrote: the job directory holds one run's outputs, and nothing else was created.
    assert sorted(p.name for p in job.iterdir()) == ["_SUCCESS", "checkpoints", "config.json", "metrics.json", "model"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".log" and p != path) == ["job"]
    assert "wrote" in logs[0] and not any("wrote" in log for log in logs[1:])


@pytest.mark.slow
def test_a_killed_worker_fails_the_job_with_a_clear_error(tmp_path):
    path = _ratings_file(tmp_path)
    args = ["--train-file", str(path), "--job-dir", str(tmp_path / "job"), "--num_iters", "100000"]
    procs = _start(2, tmp_path, args)
    log = tmp_path / "worker0.log"
    try:
        end = time.monotonic() + DEADLINE
        while "sweep 2/" not in log.read_text():
            assert time.monotonic() < end and procs[0].poll() is None, log.read_text()
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = procs[0].wait(timeout=2 * TIMEOUT)
        waited = time.monotonic() - killed
    finally:
        _stop(procs)
    text = log.read_text()
    assert code == 1, text
    assert waited < 2 * TIMEOUT
    assert "a worker failed or did not answer" in text
    assert not (tmp_path / "job" / "model").exists()


@pytest.mark.parametrize("mode", ["tf1", "explicit", "implicit"])
def test_one_worker_sweep_and_metrics_equal_the_model(mode):
    rows, cols, values = random_problem(1, shape=(50, 40), nnz=600)
    config = wals2.WALSConfig(mode=mode, latent_factors=3, regularization=0.3, compute_loss=True)
    model = wals2.WALSModel(50, 40, config)
    model.compile(jit_compile=False)
    u0, v0 = model.user_factors.numpy(), model.item_factors.numpy()
    train = wals2.Ratings(
        rows.astype(np.int32), cols.astype(np.int32), values.astype(np.float32), np.arange(50), np.arange(40)
    )
    history = model.fit(train, epochs=2, verbose=0).history
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    sweep = distributed.DistributedSweep(
        strategy, rows, cols, values, (50, 40), config, objective.statistics(cols, values, 40)
    )
    if mode == "explicit":
        u0, v0 = (np.concatenate([x, np.zeros((x.shape[0], 1), np.float32)], axis=1) for x in (u0, v0))
    u, v = u0, v0
    for _ in range(2):
        u, v = sweep(u, v)
    np.testing.assert_allclose(u[:, :3], model.user_factors.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v[:, :3], model.item_factors.numpy(), rtol=1e-5, atol=1e-6)
    logs = sweep.metrics(u, v)
    assert logs["rmse"] == pytest.approx(history["rmse"][-1], rel=1e-5)
    assert logs["loss"] == pytest.approx(history["loss"][-1], rel=1e-5)


def test_block_bounds_and_cluster_config():
    np.testing.assert_array_equal(distributed.block_bounds(10, 3), [0, 4, 7, 10])
    with pytest.raises(ValueError, match="`count` should be a positive integer"):
        distributed.block_bounds(10, 0)
    spec = {
        "cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1", "c:1"]},
        "task": {"type": "workerpool1", "index": 1},
    }
    got = multiworker.cluster_config({"CLUSTER_SPEC": json.dumps(spec)})
    assert got == {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 1}}
    alone = {"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}
    assert not multiworker.is_multiworker({"TF_CONFIG": json.dumps(alone)})
    assert not multiworker.is_multiworker({})


def test_split_masks_do_not_depend_on_the_sharding():
    users, items = np.arange(5000) % 97, np.arange(5000) // 3
    validation, test = multiworker.split_masks(users, items, 0.1, 0.2, seed=3)
    assert not np.any(validation & test)
    assert 0.17 < test.mean() < 0.23 and 0.07 < validation.mean() < 0.13
    half = multiworker.split_masks(users[2500:], items[2500:], 0.1, 0.2, seed=3)
    np.testing.assert_array_equal(half[1], test[2500:])
