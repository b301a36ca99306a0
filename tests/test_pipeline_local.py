"""python -m pipeline.local end to end on a generated GA export, and the promotion gate it shares with Vertex."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("duckdb")
pytest.importorskip("sqlglot")

from conftest import ROOT  # noqa: E402

from pipeline import gate, local, sample, versions  # noqa: E402

#: Few sweeps keep each training run to a few seconds; the TF1 web preset (k = 30) is kept.
TRAINER = ["--", "--num_iters", "4"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return sample.write_export(sample.generate(seed=0), str(tmp_path_factory.mktemp("ga") / "ga.parquet"))


@pytest.fixture(autouse=True)
def _trainer_importable(monkeypatch):
    # The trainer runs as `python -m trainer.task` in a subprocess, which must find the repository's packages.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _flow(export, models, *extra, work=None):
    argv = ["--export", export, "--models-dir", str(models), "--name", "wals2", *extra]
    if work:
        argv += ["--work-dir", str(work)]
    return local.main(argv + TRAINER)


def _entries(base):
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


def _popularity_recall(train_file, k=10):
    """recall@k on the trainer's validation split of recommending the most-read unseen articles (the baseline a
    personalised model must beat)."""
    from wals2 import data

    ratings = data.read_web_views(train_file)
    train, validation, _ = ratings.train_validation_test(0.1, 0.1, seed=0, strategy="random")
    order = np.argsort(-np.bincount(train.items, minlength=ratings.num_items), kind="stable")
    seen, held = {}, {}
    for u, i in zip(train.users, train.items):
        seen.setdefault(u, set()).add(i)
    for u, i in zip(validation.users, validation.items):
        held.setdefault(u, set()).add(i)
    recalls = []
    for u, items in held.items():
        top = [i for i in order if i not in seen.get(u, ())][:k]
        recalls.append(len(items.intersection(top)) / len(items))
    return float(np.mean(recalls))


@pytest.mark.slow
def test_two_runs_give_versions_1_and_2_and_a_worse_model_none(export, tmp_path):
    import tensorflow as tf

    base = tmp_path / "models" / "wals2"
    assert _flow(export, tmp_path / "models", work=tmp_path / "work") == 0
    assert _entries(base) == [".last-version", "1"]
    assert _flow(export, tmp_path / "models") == 0
    assert _entries(base) == [".last-version", "1", "2"]  # no staging directory left behind
    for version in ("1", "2"):
        files = set(os.listdir(base / version))
        assert {"saved_model.pb", "variables", "row.npy", "col.npy", "user.npy", "item.npy"} <= files
        assert {"metrics.json", "config.json"} <= files

    metrics = json.loads((base / "2" / "metrics.json").read_text())
    assert metrics["sweeps"] == 4 and metrics["num_validation"] > 0
    # A non-trivial model: well above recommending the most-read articles to everyone.
    (train_file,) = [p for p in (tmp_path / "work").iterdir() if p.name == "web_views.csv"]
    baseline = _popularity_recall(str(train_file))
    assert metrics["validation_recall@10"] > 1.5 * baseline, (metrics["validation_recall@10"], baseline)

    # The version directory is the SavedModel root, as TF Serving loads it.
    served = tf.saved_model.load(str(base / "2"))
    user = str(np.load(base / "2" / "user.npy", allow_pickle=False)[0])
    answer = served.signatures["serving_default"](user_id=tf.constant([user, "nobody"]))
    assert answer["known_user"].numpy().tolist() == [True, False]
    assert answer["item_ids"].shape == (2, 10)

    # The serving model (version 2) claims a far better validation RMSE: the gate rejects the new one.
    record = dict(metrics, validation_rmse=1.0)
    (base / "2" / "metrics.json").write_text(json.dumps(record))
    assert _flow(export, tmp_path / "models") == local.REJECTED
    assert _entries(base) == [".last-version", "1", "2"]


@pytest.mark.slow
def test_trainer_failure_writes_no_version(export, tmp_path):
    argv = ["--export", export, "--models-dir", str(tmp_path / "models"), "--", "--latent_factors", "-3"]
    assert local.main(argv) == 1
    assert _entries(tmp_path / "models" / "wals2") == []


def test_flags_the_pipeline_owns_are_refused(export, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        local.main(["--export", export, "--models-dir", str(tmp_path), "--", "--job-dir=elsewhere"])
    assert exit_info.value.code == 2
    assert "--job-dir is set by the pipeline" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tolerance", "-1"], "argument --tolerance: expected a number >= 0, got '-1'"),
        (["--tolerance", "nan"], "argument --tolerance: expected a number >= 0, got 'nan'"),
        (["--name", "../evil"], "`--name` should be one directory name under --models-dir"),
        (["--name", ".."], "`--name` should be one directory name under --models-dir"),
        (["--metric", "validation_ndcg@5"], "`--metric` validation_ndcg@5 is at k = 5, while the trainer's"),
        (["--metric", "validation_ndcg@5", "--", "--top-k=3"], "metrics.json holds k = 3"),
    ],
)
def test_bad_rule_and_name_flags_are_refused_before_any_work(export, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        local.main(["--export", export, "--models-dir", str(tmp_path / "models"), *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "models").exists() and not (tmp_path / "evil").exists()


def test_a_ranking_metric_at_the_trainers_top_k_is_accepted():
    local.check_metric_k("validation_ndcg@10", [])
    local.check_metric_k("validation_ndcg@5", ["--top-k", "5"])
    local.check_metric_k("validation_rmse", ["--top-k", "5"])


def test_versions_ignore_staging_and_other_entries(tmp_path):
    base = str(tmp_path)
    for name in ("1", "3", "10", ".staging-x", "latest", "0"):
        os.makedirs(os.path.join(base, name))
    assert versions.versions(base) == [1, 3, 10]
    staged = versions.stage(base)
    assert os.path.basename(staged).startswith(versions.STAGING_PREFIX)
    open(os.path.join(staged, "saved_model.pb"), "w").close()
    assert versions.publish(staged, base) == 11
    assert os.path.exists(os.path.join(base, "11", "saved_model.pb")) and not os.path.exists(staged)
    os.makedirs(os.path.join(base, "0012"))  # TF Serving's version 12, as the server reads it
    assert versions.directories(base)[12] == os.path.join(base, "0012") and versions.latest(base) == 12


# The gate: one rule for the local flow and the Vertex AI pipeline step.


def test_gate_rmse_is_minimised():
    assert gate.decide({"validation_rmse": 10.0}).passed  # first run, no threshold
    assert gate.decide({"validation_rmse": 10.0}, {"validation_rmse": 10.0}).passed
    worse = gate.decide({"validation_rmse": 10.5}, {"validation_rmse": 10.0})
    assert not worse.passed and "worse than the serving model's 10" in worse.reason
    assert gate.decide({"validation_rmse": 10.5}, {"validation_rmse": 10.0}, tolerance=0.05).passed
    assert not gate.decide({"validation_rmse": 10.6}, {"validation_rmse": 10.0}, tolerance=0.05).passed
    assert not gate.decide({"validation_rmse": 10.0}, threshold=9.0).passed
    assert not gate.decide({"validation_rmse": 8.0}, {"validation_rmse": 7.0}, threshold=9.0).passed


def test_gate_ranking_metrics_are_maximised():
    metric = "validation_ndcg@10"
    assert gate.decide({metric: 0.30}, {metric: 0.25}, metric=metric).passed
    assert not gate.decide({metric: 0.20}, {metric: 0.25}, metric=metric).passed
    assert gate.decide({metric: 0.24}, {metric: 0.25}, metric=metric, tolerance=0.05).passed
    assert not gate.decide({metric: 0.20}, metric=metric, threshold=0.21).passed


def test_gate_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"no finite `validation_rmse` \(validation metrics need"):
        gate.decide({"validation_rmse": None, "test_rmse": 3.0})
    with pytest.raises(ValueError, match="incumbent's metrics have no finite `validation_rmse`"):
        gate.decide({"validation_rmse": 3.0}, {"test_rmse": 3.0})
    with pytest.raises(ValueError, match="metric='seconds'"):
        gate.decide({"seconds": 3.0}, metric="seconds")
    with pytest.raises(ValueError, match="tolerance"):
        gate.decide({"validation_rmse": 3.0}, tolerance=-0.1)


def test_gate_command_line(tmp_path):
    candidate, incumbent, decision = tmp_path / "new.json", tmp_path / "served" / "metrics.json", tmp_path / "out"
    candidate.write_text(json.dumps({"validation_rmse": 5.0}))
    check = ["check", "--candidate", str(candidate), "--incumbent", str(incumbent), "--decision-file", str(decision)]
    assert gate.main(check) == 0 and decision.read_text() == "true"  # no served model yet
    assert gate.main(["record", "--candidate", str(candidate), "--incumbent", str(incumbent)]) == 0
    assert json.loads(incumbent.read_text()) == {"validation_rmse": 5.0}
    candidate.write_text(json.dumps({"validation_rmse": 6.0}))
    assert gate.main(check) == 0 and decision.read_text() == "false"
    assert gate.main(check + ["--tolerance", "0.25"]) == 0 and decision.read_text() == "true"
    candidate.write_text("[1, 2]")
    assert gate.main(check) == 1  # not a JSON object: an error, no decision


def test_a_version_number_is_never_reused_and_stale_staging_is_swept(tmp_path):
    base = str(tmp_path)
    for _ in range(3):
        assert versions.publish(versions.stage(base), base) in (1, 2, 3)
    assert versions.versions(base) == [1, 2, 3] and versions.last_published(base) == 3
    os.rmdir(os.path.join(base, "3"))  # a rollback removes version 3
    assert versions.publish(versions.stage(base), base) == 4  # 3 is not given to another model
    stale, fresh = versions.stage(base), versions.stage(base)
    foreign = os.path.join(base, ".staging-otherhost-1-abc")  # another host's run: only its age tells
    os.mkdir(foreign)
    assert versions.sweep(base) == []  # this process is alive, and the foreign one is fresh
    os.utime(stale, (0, 0))  # left by a run killed long ago
    os.utime(foreign, (0, 0))
    assert sorted(versions.sweep(base)) == sorted([stale, foreign])
    assert not os.path.exists(stale) and os.path.isdir(fresh)  # a live run's staging is kept


def test_the_staging_of_an_ended_process_of_this_host_is_swept_at_once(tmp_path):
    import subprocess
    import sys

    base = str(tmp_path)
    code = "import sys; from pipeline import versions; print(versions.stage(sys.argv[1]))"
    left = subprocess.run([sys.executable, "-c", code, base], check=True, capture_output=True, text=True)
    killed_run = left.stdout.strip()  # its writer has exited without publishing or discarding it
    live = versions.stage(base)
    assert os.path.isdir(killed_run) and os.path.basename(killed_run).startswith(".staging-")
    assert versions.sweep(base) == [killed_run]  # fresh, but its process is gone
    assert os.path.isdir(live) and not os.path.exists(killed_run)


def test_the_incumbent_is_the_highest_version_with_metrics(tmp_path):
    base = str(tmp_path)
    for version, metrics in (("1", {"rmse": 1.0}), ("2", {"rmse": 0.9}), ("3", None)):
        os.makedirs(os.path.join(base, version))
        if metrics:
            with open(os.path.join(base, version, "metrics.json"), "w") as f:
                json.dump(metrics, f)
    assert local._incumbent(base) == {"rmse": 0.9}
    assert local._incumbent(str(tmp_path / "none")) is None


def test_sigterm_ends_the_trainer_child(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import signal, sys\n"
        "from pipeline import local\n"
        "signal.signal(signal.SIGTERM, local._on_sigterm)\n"
        "try:\n"
        "    sleeper = 'import os, time; print(os.getpid(), flush=True); time.sleep(120)'\n"
        "    local.run_child([sys.executable, '-c', sleeper])\n"
        "except local.Terminated:\n"
        "    sys.exit(local.TERMINATED)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == local.TERMINATED
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break  # the trainer child is gone
        assert time.monotonic() < deadline, "the child outlived the pipeline"
        time.sleep(0.1)


def test_the_server_names_a_versioned_model_after_its_directory():
    from serving.cli import default_model_name

    assert default_model_name("models/wals2", True) == "wals2"  # what pipeline.local --name wals2 writes
    assert default_model_name("gs://bucket/models/news/", True) == "news"
    assert default_model_name("jobs/demo/model", False) == "wals"
