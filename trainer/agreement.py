"""Workers agree or fail: before training, every worker's run record is compared across the cluster.

A worker started with another hyperparameter, seed, split or input would otherwise join the job and train on
what it has, and the job would end with figures that no single command produces. The record holds the whole
resolved ``WALSConfig`` and ``TaskConfig`` (less where a worker writes and how much it logs) and the identity
of the input (its size and SHA-256); every worker gathers every record (``Collectives.all_gather_strings``), so
all of them find the same first difference and stop together with the same message.
"""

from __future__ import annotations

import json

from trainer import cli, paths
from trainer.config import TaskConfig
from wals2.config import WALSConfig

#: ``TaskConfig`` fields that may differ between workers: where each writes (only the chief does) and logging.
LOCAL_FIELDS = ("job_dir", "output_dir", "checkpoint_dir", "tensorboard_log_dir", "verbose_logging")


def input_identity(task: TaskConfig) -> dict:
    """The size and SHA-256 of the ratings file the run reads (``--train-file`` or the bundled one), read in
    1 MiB blocks (``paths.sha256``); an empty record for a TFDS data set (named by the config)."""
    import tensorflow as tf

    from wals2 import data

    path = cli.input_path(task)
    if path is None and task.dataset not in (None, "ml-latest-small"):
        return {}
    path = path or data.bundled_path()
    return {"path": path, "bytes": tf.io.gfile.stat(path).length, "sha256": paths.sha256(path)}


def run_record(task: TaskConfig, config: WALSConfig) -> dict:
    """What every worker of one job must share: the model's and the task's settings, and the input."""
    settings = {k: v for k, v in task.to_dict().items() if k not in LOCAL_FIELDS}
    return {"model": config.to_dict(), "task": settings, "input": input_identity(task)}


def first_difference(ours, theirs, prefix: str = "") -> tuple[str, object, object] | None:
    """(dotted key, our value, their value) of the first entry, in key order, where two records differ."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs)):
            found = first_difference(ours.get(key), theirs.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if ours == theirs else (prefix.rstrip("."), ours, theirs)


def agree(record: dict, collectives) -> None:
    """Returns when every worker's ``record`` equals the chief's (worker 0); else raises on every worker.

    Raises:
        ValueError: the first worker whose record differs, naming the setting and both values.
    """
    if collectives.count == 1:
        return
    text = json.dumps(record, sort_keys=True, default=str)
    records = [json.loads(str(values[0])) for values in collectives.all_gather_strings([text])]
    for rank, other in enumerate(records[1:], start=1):
        found = first_difference(records[0], other)
        if found:
            key, chief, theirs = found
            raise ValueError(
                f"the workers disagree: worker {rank} has {key}={json.dumps(theirs)}, the chief (worker 0) has "
                f"{key}={json.dumps(chief)}; every worker of a job must run the same command on the same input"
            )
