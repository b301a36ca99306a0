"""The output commit: a kill between any two of its file-system steps, then a rerun, on local and URL file systems."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT

from trainer import artifacts

ENTRIES = ["model", "config.json", "metrics.json"]
#: The files of a staged run: a SavedModel-like tree with a subdirectory, and the two JSON files.
FILES = ["model/saved_model.pb", "model/variables/variables.index", "model/row.npy", "config.json", "metrics.json"]
STEPS = ("_rename", "_write", "_remove", "_rmtree")


class Killed(BaseException):
    """Stands for a kill: no handler of the code under test catches it (nor does anything clean up)."""


def stage(destination, run):
    """A Staging of ``destination`` with every file of FILES holding ``run``; returns it uncommitted."""
    staging = artifacts.Staging(destination, ENTRIES)
    for name in FILES:
        entry, _, rest = name.partition("/")
        path = staging.path(entry) + ("/" + rest if rest else "")
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(f"{run}:{name}")
    return staging


def tree(root):
    """{relative path: text} of every file under ``root``."""
    found = {}
    for directory, _, files in tf.io.gfile.walk(root):
        for name in files:
            path = f"{directory.rstrip('/')}/{name}"
            with tf.io.gfile.GFile(path) as handle:
                found[path[len(root) + 1 :]] = handle.read()
    return found


def kill_at(monkeypatch, step):
    """Makes the ``step``-th call (0-based) of the commit's file-system steps raise Killed; returns the counter."""
    calls = []
    for name in STEPS:
        real = getattr(artifacts, name)

        def wrapped(*args, _real=real, _name=name):
            if len(calls) == step:
                raise Killed(_name)
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(artifacts, name, wrapped)
    return calls


def check_complete(destination, run, others, staged_too=False):
    """The destination holds exactly ``run``'s outputs, the marker, the files ``others`` and (unless
    ``staged_too``) nothing staged."""
    files = {k: v for k, v in tree(destination).items() if not (staged_too and k.startswith(".staging-"))}
    marker = files.pop(artifacts.MARKER)
    assert json.loads(marker)["entries"] == ENTRIES
    assert files == {**{name: f"{run}:{name}" for name in FILES}, **others}


@pytest.mark.parametrize("root", ["local", "ram"])
def test_a_kill_between_any_two_commit_steps_is_finished_by_the_rerun(tmp_path, monkeypatch, root):
    base = str(tmp_path) if root == "local" else f"ram://kill-{os.getpid()}"
    step = 0
    while True:
        destination = f"{base}/job{step}"
        tf.io.gfile.makedirs(f"{destination}/checkpoints")  # written by the run itself, not part of the commit
        with tf.io.gfile.GFile(f"{destination}/checkpoints/ckpt", "w") as handle:
            handle.write("sweeps")
        others = {"checkpoints/ckpt": "sweeps"}
        staging = stage(destination, "first")
        calls = kill_at(monkeypatch, step)
        try:
            staging.commit()
        except Killed:
            killed = True
        else:
            killed = False
        monkeypatch.undo()
        # A reader keyed on the marker sees all of the first run's outputs or none of them.
        if artifacts.committed(destination):
            check_complete(destination, "first", others, staged_too=True)
        if not killed:
            check_complete(destination, "first", others)
            break
        # The rerun repairs before any work; it is refused only when the first run had committed.
        if artifacts.committed(destination):
            with pytest.raises(ValueError, match="already holds the committed outputs of a run"):
                artifacts.Staging(destination, ENTRIES)
            check_complete(destination, "first", others)
        else:
            stage(destination, "second").commit()
            check_complete(destination, "second", others)
        assert not [p for p in tf.io.gfile.listdir(base) if "staging" in p]
        assert len(calls) == step  # the kill came before step number `step`, after all earlier ones
        step += 1
    # manifest write + rename, a rename per entry (per file on URL file systems), the marker, the cleanup
    assert step == (7 if root == "local" else 10)


def test_discard_after_a_failed_commit_undoes_it(tmp_path, monkeypatch):
    destination = str(tmp_path / "job")
    staging = stage(destination, "first")
    real = artifacts._rename

    def rename(src, dst):
        if src.endswith("metrics.json"):
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(artifacts, "_rename", rename)
    with pytest.raises(OSError, match="disk full"):
        staging.commit()
    assert (tmp_path / "job" / "model").exists()  # published before the failure
    staging.discard()
    assert list(tmp_path.iterdir()) == []  # the staging created the job dir, so it goes too


def test_stale_staging_of_the_job_goes_and_foreign_outputs_are_refused(tmp_path):
    destination = tmp_path / "job"
    stale = [tmp_path / ".job.staging-0123456789ab", destination / ".staging-ba9876543210"]
    kept = [tmp_path / ".jobs.staging-0123456789ab", tmp_path / "other"]
    for path in stale + kept:
        (path / "model").mkdir(parents=True)
    (stale[1] / "config.json").write_text("{}")
    stage(str(destination), "first").commit()
    assert all(not p.exists() for p in stale) and all(p.exists() for p in kept)
    check_complete(str(destination), "first", {})
    # Outputs without a marker (another program, an older version) are never deleted: the run is refused.
    legacy = tmp_path / "legacy"
    (legacy / "model").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"already holds \['model'\] without the commit marker _SUCCESS"):
        artifacts.Staging(str(legacy), ENTRIES)
    assert (legacy / "model").exists()


def small_ratings(tmp_path):
    rng = np.random.default_rng(0)
    cells = rng.choice(30 * 20, size=300, replace=False)
    path = tmp_path / "r.tsv"
    path.write_text("".join(f"{u + 1}\t{i + 1}\t{rng.integers(1, 6)}\n" for u, i in zip(*np.divmod(cells, 20))))
    return path


@pytest.mark.slow
def test_trainer_killed_inside_its_commit_then_rerun(tmp_path):
    """os._exit in the real trainer after model/ is published (the issue's case), then the same command again."""
    job = tmp_path / "job"
    args = ["--train-file", str(small_ratings(tmp_path)), "--job-dir", str(job), "--num_iters=2"]
    script = textwrap.dedent(
        f"""
        import os, sys
        from trainer import artifacts
        real, calls = artifacts._rename, []
        def rename(src, dst):
            calls.append(dst)
            if len(calls) == 3:  # 1: the manifest, 2: model/, 3: config.json
                os._exit(9)
            real(src, dst)
        artifacts._rename = rename
        from trainer.task import main
        sys.exit(main({args!r}))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert killed.returncode == 9, killed.stdout + killed.stderr
    assert (job / "model").is_dir() and not (job / "config.json").exists() and not artifacts.committed(str(job))
    rerun = subprocess.run(
        [sys.executable, "-m", "trainer.task", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "removed what interrupted runs left" in rerun.stdout and f"{job}/model" in rerun.stdout
    assert artifacts.committed(str(job))
    assert {p.name for p in job.iterdir()} == {
        "model",
        "config.json",
        "metrics.json",
        "_SUCCESS",
        "checkpoints",
        "logs",
    }
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["sweeps"] == 2 and metrics["resumed_from_sweep"] == 2  # the killed run's checkpoints were kept
    assert "after 2 sweeps (none run here: resumed after sweep 2)" in rerun.stdout  # not "median 0.000 s/sweep"
    assert np.load(job / "model" / "row.npy").shape == (30, 5)
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_on_a_url_file_system_the_saved_model_pb_is_moved_last(monkeypatch):
    """gs:// moves a directory file by file: a SavedModel's saved_model.pb, the file TF Serving looks for, comes
    after its variables, so that whoever sees it sees a whole model."""
    base = f"ram://order-{os.getpid()}"
    staging = stage(base, "r1")
    moved = []
    real = artifacts._rename

    def record(src, dst):
        moved.append(dst[len(base) + 1 :])
        return real(src, dst)

    monkeypatch.setattr(artifacts, "_rename", record)
    staging.commit()
    files = [name for name in moved if name.startswith("model/")]
    assert sorted(files) == sorted(name for name in FILES if name.startswith("model/"))
    assert files[-1] == "model/saved_model.pb", moved
