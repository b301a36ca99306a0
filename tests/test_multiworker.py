"""One job for one worker or many: N loopback workers write what one process writes, in every mode and split.

Each case runs ``python -m trainer.task`` once as one process and once as a cluster of loopback workers (a
``TF_CONFIG`` chief and workers on 127.0.0.1), then compares the chief's outputs with the single process's: the
factors (and biases), every figure of ``metrics.json``, the SavedModel's recommendations, and predictions rebuilt
from the ``.npy`` files. Failure cases: a killed worker, a chief that never listens, SIGTERM while waiting.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT

from trainer import cluster
from wals2 import data, sharding
from wals2.collectives import Collectives

TIMEOUT = 60  # --collective-timeout of the workers, seconds
DEADLINE = 300  # one whole run, seconds
FLAGS = ["--latent_factors", "4", "--num_iters", "3", "--regularization", "0.5", "--validation-fraction", "0.1"]
MODES = {"tf1": [], "explicit": ["--mode", "explicit"], "implicit": ["--mode", "implicit", "--alpha", "2"]}
SAME_TO = 1e-5


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A ratings file with timestamps (ids and times skewed like MovieLens) and a GA web-views export."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    users = rng.zipf(1.5, 6000) % 300 + 1
    items = rng.zipf(1.4, 6000) % 200 + 1
    keys = np.unique(users * 1000 + items)
    users, items = keys // 1000, keys % 1000
    ratings = root / "ratings.tsv"
    lines = [f"{u}\t{i}\t{rng.integers(1, 6)}\t{rng.integers(1e9, 1.1e9)}" for u, i in zip(users, items)]
    ratings.write_text("\n".join(lines) + "\n")
    views = root / "views.csv"
    rows = ["clientId,contentId,timeOnPage"]
    for _ in range(4000):  # repeated (client, content) pairs are summed, also across the workers' byte ranges
        client = f"{rng.integers(1, 10**6)}.{rng.integers(10**9)}" if rng.random() < 0.02 else None
        client = client or f"c{rng.zipf(1.6) % 150}"
        rows.append(f"{client},/article/{rng.zipf(1.5) % 90},{rng.integers(5, 600)}")
    views.write_text("\n".join(rows) + "\n")
    return {"ratings": ratings, "views": views}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(
    workers: int,
    logs: pathlib.Path,
    args: list[str],
    hosts: list[str] | None = None,
    own: list[list[str]] | None = None,
):
    """``workers`` processes of ``python -m trainer.task args`` (then ``own[i]`` for worker i): alone for 1, else
    a chief and workers."""
    logs.mkdir(parents=True, exist_ok=True)
    hosts = hosts or [f"127.0.0.1:{port}" for port in _free_ports(workers)]
    procs = []
    for index in range(workers):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the trainer's own default, as a user gets it
        if workers > 1:
            task = {"type": "chief", "index": 0} if index == 0 else {"type": "worker", "index": index - 1}
            spec = {"cluster": {"chief": hosts[:1], "worker": hosts[1:]}, "task": task}
            env["TF_CONFIG"] = json.dumps(spec)
        log = open(logs / f"worker{index}.log", "w")  # noqa: SIM115 (closed with the process)
        command = [sys.executable, "-m", "trainer.task", "--collective-timeout", str(TIMEOUT), *args]
        command += own[index] if own else []
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _run(workers: int, job: pathlib.Path, args: list[str]) -> list[str]:
    """The logs of ``workers`` processes of the job; one worker is the single-process reference, run in this
    process (``trainer.task.main``: the same code without TensorFlow's import again)."""
    if workers == 1:
        from trainer.task import main

        assert main(["--job-dir", str(job), "--collective-timeout", str(TIMEOUT), *args]) == 0
        return []
    procs = _start(workers, job.parent / f"{job.name}-logs", ["--job-dir", str(job), *args])
    try:
        end = time.monotonic() + DEADLINE
        codes = [proc.wait(timeout=max(end - time.monotonic(), 1)) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    logs = [(job.parent / f"{job.name}-logs" / f"worker{i}.log").read_text() for i in range(workers)]
    assert codes == [0] * workers, "\n".join(logs)
    if workers > 1:
        assert not _unclean_lines(logs), "\n".join(logs)
    return logs


#: TensorFlow's C++ logging writes this before it is set up, whatever TF_CPP_MIN_LOG_LEVEL says (README).
_BEFORE_LOGGING = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _unclean_lines(logs: list[str]) -> list[str]:
    """The warning and error lines of the workers' logs: Python's (the trainer's one format, a traceback) and
    TensorFlow's C++ ones (W/E/F and a timestamp)."""
    pattern = re.compile(r"^[WEF]\d{4} |\b(WARNING|ERROR|CRITICAL)\b|Traceback")
    return [line for log in logs for line in log.splitlines() if line != _BEFORE_LOGGING and pattern.search(line)]


def _relative_error(got, want) -> float:
    want = np.asarray(want, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-30))


def _npy(job: pathlib.Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted((job / "model").glob("*.npy"))}


def _assert_same_top_items(tops: list[dict], served, rtol: float) -> None:
    """The cluster's top items equal the single process's, but for items whose scores tie within float32 noise
    (the sums run in another order, so near-equal scores may swap places): within ``rtol`` of each other."""
    ids, cluster_ids = tops[0]["item_ids"].numpy(), tops[1]["item_ids"].numpy()
    scores = tops[0]["scores"].numpy()
    for row, col in zip(*np.nonzero(ids != cluster_ids)):
        item = cluster_ids[row, col]
        where = np.flatnonzero(ids[row] == item)
        if where.size:
            score = scores[row, where[0]]
        else:  # pushed out of the single process's top k: its score there
            user = tops[0]["user_ids"][row] if "user_ids" in tops[0] else None
            assert user is not None, (row, col)
            score = served[0].signatures["score"](user_id=[user], item_id=[item])["scores"].numpy()[0]
        assert abs(score - scores[row, col]) <= rtol * max(1.0, abs(scores[row, col])), (row, col, item)


def _assert_same_outputs(one: pathlib.Path, many: pathlib.Path, workers: int, same_to: float = SAME_TO) -> None:
    """The N-worker chief's outputs equal the single process's, to ``same_to`` (see the module docstring)."""
    a, b = _npy(one), _npy(many)
    assert sorted(a) == sorted(b)
    for name in ("user", "item"):
        np.testing.assert_array_equal(b[name], a[name])
    for name in set(a) - {"user", "item"}:
        assert _relative_error(b[name], a[name]) < same_to, name
    metrics_a, metrics_b = (json.loads((job / "metrics.json").read_text()) for job in (one, many))
    assert metrics_b["workers"] == workers and metrics_a["workers"] == 1
    figures = [k for k, v in metrics_a.items() if k.endswith(("_rmse", "@10")) and v is not None]
    assert "test_rmse" in figures and "test_ndcg@10" in figures and "validation_precision@10" in figures
    for key in figures + ["num_train", "num_validation", "num_test", "test_entries_with_cold_user_or_item"]:
        assert metrics_b[key] == pytest.approx(metrics_a[key], rel=same_to, abs=1e-9), key
    for key in ("rmse", "val_rmse"):
        np.testing.assert_allclose(metrics_b["history"][key], metrics_a["history"][key], rtol=same_to)
    # The SavedModels recommend the same items, and the .npy files rebuild the model's predictions.
    served = [tf.saved_model.load(str(job / "model")) for job in (one, many)]
    users = tf.constant(a["user"][:: max(1, len(a["user"]) // 40)].astype(str))
    tops = [s.signatures["serving_default"](user_id=users) for s in served]
    # Scores are sums of k products of factors: their relative error is up to 10x the factors'.
    _assert_same_top_items([dict(t, user_ids=users.numpy()) for t in tops], served, 10 * same_to)
    np.testing.assert_allclose(tops[1]["scores"].numpy(), tops[0]["scores"].numpy(), rtol=10 * same_to, atol=1e-5)
    rng = np.random.default_rng(1)
    u, i = rng.integers(0, len(b["user"]), 200), rng.integers(0, len(b["item"]), 200)
    rebuilt = np.sum(b["row"][u] * b["col"][i], axis=1)
    if "global_mean" in b:
        rebuilt = np.clip(rebuilt + b["global_mean"] + b["row_bias"][u] + b["col_bias"][i], *b["rating_range"])
    scored = served[1].signatures["score"](
        user_id=tf.constant(b["user"][u].astype(str)), item_id=tf.constant(b["item"][i].astype(str))
    )
    known = scored["known_user"].numpy() & scored["known_item"].numpy()
    assert known.mean() > 0.5
    np.testing.assert_allclose(scored["scores"].numpy()[known], rebuilt[known], rtol=1e-5, atol=1e-5)


#: Cases of ``test_workers_write_what_one_process_writes``: (workers, input, flags). Each mode, split and data type
#: runs on several workers at least once (the three are independent stages of the job).
CASES = {
    "2-tf1-per_user": (2, "ratings", [*MODES["tf1"], "--split", "per_user"]),
    "2-implicit-random": (2, "ratings", MODES["implicit"]),
    "3-explicit-time": (3, "ratings", [*MODES["explicit"], "--split", "time"]),
    "2-tf1-web_views": (2, "views", ["--data-type", "web_views"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_workers_write_what_one_process_writes(files, tmp_path, case):
    workers, source, flags = CASES[case]
    args = ["--train-file", str(files[source]), *FLAGS, *flags]
    _run(1, tmp_path / "one", args)
    logs = _run(workers, tmp_path / "many", args)
    # Web views weigh summed seconds on page: float32 sums in another order differ by up to 1.7e-5 relative
    # there (measured on an AMD EPYC Zen 3), where ratings 1..5 stay within 1e-5.
    _assert_same_outputs(tmp_path / "one", tmp_path / "many", workers, 1e-4 if source == "views" else SAME_TO)
    # Only the chief wrote; the other workers trained and said so.
    assert "wrote" in logs[0] and all("the chief writes the outputs" in log for log in logs[1:])
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    if source == "views":  # string client ids, as a GA export has them
        assert _npy(tmp_path / "many")["user"].dtype.kind == "U"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["regularization", "seed", "input"])
def test_workers_that_disagree_all_exit_non_zero_naming_the_difference(files, tmp_path, case):
    other = tmp_path / "other.tsv"  # the same size, one rating changed
    text = files["ratings"].read_text()
    other.write_text(text[:2] + text[2:].replace("\t1\t", "\t2\t", 1))
    assert other.stat().st_size == files["ratings"].stat().st_size
    own, expected = {
        "regularization": ([["--regularization", "0.5"], ["--regularization", "0.1"]], "model.regularization=0.1"),
        "seed": ([[], ["--seed", "7"]], "model.seed=7"),
        "input": ([[], ["--train-file", str(other)]], "input.path="),
    }[case]
    args = ["--train-file", str(files["ratings"]), "--job-dir", str(tmp_path / "job"), *FLAGS]
    started = time.monotonic()
    procs = _start(2, tmp_path / "logs", args, own=own)
    try:
        codes = [proc.wait(timeout=DEADLINE) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    logs = [(tmp_path / "logs" / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [1, 1], logs
    assert time.monotonic() - started < TIMEOUT
    for log in logs:
        assert "the workers disagree: worker 1 has " + expected in log, log
    assert not (tmp_path / "job" / "_SUCCESS").exists()


def test_agreement_names_the_first_difference_and_the_identity_of_the_input(files):
    from trainer import agreement
    from trainer.cli import parse

    task, config, _ = parse(["--train-file", str(files["ratings"]), "--regularization", "0.5"])
    record = agreement.run_record(task, config)
    assert record["input"]["bytes"] == files["ratings"].stat().st_size and len(record["input"]["sha256"]) == 64
    other = json.loads(json.dumps(record))
    other["model"]["seed"] = 3
    other["input"]["sha256"] = "0" * 64
    assert agreement.first_difference(record, other) == ("input.sha256", record["input"]["sha256"], "0" * 64)
    del other["input"]
    assert agreement.first_difference(record, other) == ("input", record["input"], None)
    assert agreement.first_difference(record, json.loads(json.dumps(record))) is None
    agreement.agree(record, Collectives())  # one worker: nothing to compare


@pytest.mark.slow
def test_a_killed_worker_fails_the_job_with_a_clear_error(files, tmp_path):
    args = ["--train-file", str(files["ratings"]), "--job-dir", str(tmp_path / "job"), "--num_iters", "100000"]
    procs = _start(2, tmp_path / "logs", args)
    log = tmp_path / "logs" / "worker0.log"
    try:
        end = time.monotonic() + DEADLINE
        while not re.search(r"sweep +2/", log.read_text()):
            assert time.monotonic() < end and procs[0].poll() is None, log.read_text()
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code = procs[0].wait(timeout=2 * TIMEOUT)
        waited = time.monotonic() - killed
    finally:
        for proc in procs:
            proc.kill()
    text = log.read_text()
    assert code == 1, text
    assert waited < 2 * TIMEOUT
    assert "a worker failed" in text
    assert not (tmp_path / "job" / "model").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task_type", ["worker", "chief"])
def test_a_task_whose_peer_never_starts_exits_within_the_timeout(files, tmp_path, task_type):
    """A worker whose chief never listens, and a chief (the coordination leader) whose worker never starts."""
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(2)]  # nothing listens on the other task's port
    args = ["--train-file", str(files["ratings"]), "--job-dir", str(tmp_path / "job"), "--collective-timeout", "5"]
    started = time.monotonic()
    spec = {"cluster": {"chief": hosts[:1], "worker": hosts[1:]}, "task": {"type": task_type, "index": 0}}
    out = subprocess.run(
        [sys.executable, "-m", "trainer.task", *args],
        cwd=ROOT,
        env=dict(os.environ, TF_CONFIG=json.dumps(spec)),
        capture_output=True,
        text=True,
        timeout=5 + 60,
    )
    elapsed = time.monotonic() - started
    assert out.returncode == 1, out.stdout + out.stderr
    assert elapsed < 5 + 30
    assert "did not all answer within --collective-timeout=5 s" in out.stdout
    assert not (tmp_path / "job" / "_SUCCESS").exists()
    if task_type == "worker":  # only the chief writes
        assert not (tmp_path / "job").exists()


@pytest.mark.slow
def test_workers_that_would_resume_from_different_sweeps_all_fail(files, tmp_path):
    """Checkpoint directories the workers do not share: the chief has sweep 2, the worker nothing."""
    own = [["--checkpoint-dir", str(tmp_path / "chief-checkpoints")], ["--checkpoint-dir", str(tmp_path / "own")]]
    for sweeps, expected in (("2", [0, 0]), ("4", [1, 1])):
        args = ["--train-file", str(files["ratings"]), "--job-dir", str(tmp_path / f"job{sweeps}"), *FLAGS]
        procs = _start(2, tmp_path / f"logs{sweeps}", [*args, "--num_iters", sweeps], own=own)
        try:
            codes = [proc.wait(timeout=DEADLINE) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
        logs = [(tmp_path / f"logs{sweeps}" / f"worker{i}.log").read_text() for i in range(2)]
        assert codes == expected, logs
    for log in logs:
        assert "the workers would resume after different sweeps ([2, 0], worker by worker)" in log, log
    assert not (tmp_path / "job4" / "_SUCCESS").exists()


@pytest.mark.slow
def test_sigterm_ends_a_waiting_worker_within_seconds(files, tmp_path):
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(2)]  # nothing listens on the chief's port
    spec = {"cluster": {"chief": hosts[:1], "worker": hosts[1:]}, "task": {"type": "worker", "index": 0}}
    log = tmp_path / "waiting.log"
    with open(log, "w") as handle:
        args = ["--train-file", str(files["ratings"]), "--job-dir", str(tmp_path / "j"), "--collective-timeout", "600"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer.task", *args],
            cwd=ROOT,
            env=dict(os.environ, TF_CONFIG=json.dumps(spec)),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + 120
        while "joining a cluster of 2 workers" not in log.read_text():
            assert time.monotonic() < end and proc.poll() is None, log.read_text()
            time.sleep(0.2)
        time.sleep(2)  # inside TensorFlow's wait for the chief
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=30)
        waited = time.monotonic() - sent
    finally:
        proc.kill()
    assert code == cluster.SIGTERM_STATUS and waited < 10, log.read_text()
    assert "received SIGTERM" in log.read_text()


def test_cluster_from_tf_config_and_cluster_spec():
    spec = {
        "cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1", "c:1"]},
        "task": {"type": "workerpool1", "index": 1},
    }
    got = cluster.from_environ({"CLUSTER_SPEC": json.dumps(spec)})
    want = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 1}}
    assert got.tf_config == want
    assert got.workers == 3 and got.trains and not got.role.is_chief
    alone = {"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}
    assert cluster.from_environ({"TF_CONFIG": json.dumps(alone)}).tf_config is None
    evaluator = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "evaluator", "index": 0}}
    assert not cluster.from_environ({"TF_CONFIG": json.dumps(evaluator)}).trains
    assert cluster.needs_supervisor({"CLUSTER_SPEC": json.dumps(spec)})
    assert not cluster.needs_supervisor({"CLUSTER_SPEC": json.dumps(spec), cluster.SUPERVISED: "1"})
    # TF1 / Cloud ML Engine name the chief "master": one three-worker job, the master its chief
    master = {"cluster": {"master": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "master", "index": 0}}
    got = cluster.from_environ({"TF_CONFIG": json.dumps(master)})
    assert got.workers == 3 and got.role.is_chief and got.tf_config["task"] == {"type": "chief", "index": 0}
    assert got.tf_config["cluster"] == {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    worker = dict(master, task={"type": "worker", "index": 0})
    assert not cluster.from_environ({"TF_CONFIG": json.dumps(worker)}).role.is_chief  # the master is the chief
    # a TF_CONFIG that names no task leaves the role and the cluster to CLUSTER_SPEC alike
    both = cluster.from_environ({"TF_CONFIG": "{}", "CLUSTER_SPEC": json.dumps(spec)})
    assert both.workers == 3 and both.tf_config == want and both.role == cluster.Role("workerpool1", 1, None, False)


def test_a_supervised_worker_killed_by_a_signal_exits_as_a_shell_reports_it(monkeypatch, capsys):
    class Killed:  # the child process, ended by the out-of-memory killer
        def __init__(self, *args, **kwargs):
            pass

        def wait(self):
            return -signal.SIGKILL

    monkeypatch.setattr(cluster.subprocess, "Popen", Killed)
    monkeypatch.setattr(cluster.signal, "signal", lambda *args: None)
    assert cluster.supervise(["--help"]) == 128 + signal.SIGKILL
    assert "the worker process was killed by SIGKILL" in capsys.readouterr().err
    monkeypatch.setattr(Killed, "wait", lambda self: -40)  # a real-time signal: no name
    assert cluster.supervise(["--help"]) == 168
    assert "the worker process was killed by signal 40" in capsys.readouterr().err


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "workers", "index": 0}},
         r"`TF_CONFIG` task.type should be one of \['chief', 'evaluator', 'master', 'ps', 'worker'\]. "
         r"Received: 'workers'"),
        ({"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": "zero"}},
         r"`TF_CONFIG` task.index should be a non-negative integer. Received: 'zero'"),
        ({"cluster": ["a:1"], "task": {"type": "chief"}}, r"`TF_CONFIG` cluster should be a JSON object of task type"),
        ({"cluster": {"chief": ["a:1"], "master": ["b:1"]}, "task": {"type": "chief"}},
         "a chief or a master, not both"),
        ({"cluster": {}, "task": "chief"}, r"`TF_CONFIG` task should be a JSON object. Received: task='chief'"),
        ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 1}},
         r"`TF_CONFIG` task.index should be below the 1 worker host\(s\) of its cluster. Received: 1"),
    ],
)  # fmt: skip
def test_a_malformed_task_is_an_error_naming_the_variable_and_field(tf_config, message):
    with pytest.raises(ValueError, match=message):
        cluster.from_environ({"TF_CONFIG": json.dumps(tf_config)})


@pytest.mark.parametrize("strategy", ["random", "per_user", "time"])
def test_split_is_the_same_for_any_order_and_any_blocks(strategy):
    """The split masks of row blocks (each user's entries on one worker, ``random`` thresholds summed over the
    blocks) equal the masks of the whole set in another order; sizes are TF1's floor(N f)."""
    rng = np.random.default_rng(4)
    keys = np.unique(rng.integers(0, 97 * 60, 3000))
    users, items = keys // 60, keys % 60
    stamps = rng.integers(0, 50, keys.size)  # many ties: broken by the seeded key
    whole = data.split_masks(users, items, stamps, 60, 0.1, 0.2, 3, strategy)
    assert not np.any(whole[0] & whole[1])
    if strategy == "random":
        assert whole[1].sum() == int(np.floor(keys.size * 0.2)) and whole[0].sum() == int(np.floor(keys.size * 0.1))
    perm = rng.permutation(keys.size)
    shuffled = data.split_masks(users[perm], items[perm], stamps[perm], 60, 0.1, 0.2, 3, strategy)
    np.testing.assert_array_equal(shuffled[0], whole[0][perm])
    np.testing.assert_array_equal(shuffled[1], whole[1][perm])
    # Three row blocks, their random-split histograms summed as the workers' all-reduce would.
    blocks = [users < 30, (users >= 30) & (users < 70), users >= 70]
    if strategy == "random":
        got = _lockstep_random_split(users, items, blocks)
    else:
        got = [data.split_masks(users[b], items[b], stamps[b], 60, 0.1, 0.2, 3, strategy) for b in blocks]
    for b, (validation, test) in zip(blocks, got):
        np.testing.assert_array_equal(validation, whole[0][b])
        np.testing.assert_array_equal(test, whole[1][b])


def _lockstep_random_split(users, items, blocks):
    """Runs ``split_masks`` for every block in threads whose ``reduce_sum`` sums the blocks' arrays."""
    import threading

    barrier = threading.Barrier(len(blocks))
    slots: list = [None] * len(blocks)
    results: list = [None] * len(blocks)
    total: dict = {}

    def worker(p):
        def reduce_sum(x):
            slots[p] = np.asarray(x)
            if barrier.wait() == 0:
                total["sum"] = np.sum(slots, axis=0)
            barrier.wait()
            out = total["sum"]
            barrier.wait()
            return out

        b = blocks[p]
        results[p] = data.split_masks(users[b], items[b], None, 60, 0.1, 0.2, 3, "random", reduce_sum)

    threads = [threading.Thread(target=worker, args=(p,)) for p in range(len(blocks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_one_process_sharding_is_the_identity():
    ratings = data.Ratings(
        np.array([0, 1, 1], np.int32),
        np.array([1, 0, 1], np.int32),
        np.array([1.0, 2.0, 3.0], np.float32),
        np.array([10, 20]),
        np.array([5, 7]),
    )
    one = Collectives()
    assert one.count == 1 and one.rank == 0
    assert sharding.gather(ratings, one) is ratings
    assert sharding.fingerprint(ratings, one) == sharding.fingerprint(ratings.subset(np.array([2, 0, 1])), one)
    assert sharding.fingerprint(ratings, one) != sharding.fingerprint(ratings.subset(np.array([0, 1])), one)
