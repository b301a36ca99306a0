"""The trainer's TensorBoard scalars: every tag once per step, with the values of metrics.json."""

import collections
import json

import numpy as np
import pytest
import tensorflow as tf

from trainer.task import main


def ratings_file(tmp_path, users=40, items=30, fraction=0.4, seed=0):
    rng = np.random.default_rng(seed)
    cells = np.argwhere(rng.random((users, items)) < fraction)
    path = tmp_path / "r.tsv"
    path.write_text("".join(f"{u + 1}\t{i + 1}\t{rng.integers(1, 6)}\n" for u, i in cells))
    return path


def events(log_dir):
    """(tag, step, value) of every scalar event under ``log_dir``."""
    found = []
    for path in tf.io.gfile.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.append((value.tag, event.step, float(tf.make_ndarray(value.tensor))))
    return found


@pytest.mark.parametrize("validation", [False, True])
def test_each_tag_is_written_once_per_step(tmp_path, validation):
    args = ["--train-file", str(ratings_file(tmp_path)), "--job-dir", str(tmp_path / "job"), "--num_iters=2"]
    args += ["--top-k=5"] + (["--validation-fraction=0.1"] if validation else [])
    assert main(args) == 0
    found = events(tmp_path / "job" / "logs")
    counts = collections.Counter((tag, step) for tag, step, _ in found)
    assert {key: n for key, n in counts.items() if n > 1} == {}
    steps = collections.defaultdict(list)
    for tag, step, _ in found:
        steps[tag].append(step)
    heldout = "validation" if validation else "test"
    assert sorted(steps["train/rmse"]) == [1, 2] and sorted(steps[f"{heldout}/rmse"]) == [1, 2]
    assert steps["test/ndcg@5"] == [2] and steps["test/rmse"] == ([2] if validation else [1, 2])
    metrics = json.loads((tmp_path / "job" / "metrics.json").read_text())
    last = {tag: value for tag, step, value in found if step == 2}
    for tag in ("train/rmse", "test/rmse", "test/ndcg@5", f"{heldout}/rmse"):
        assert last[tag] == pytest.approx(metrics[tag.replace("/", "_")], rel=1e-5), tag
