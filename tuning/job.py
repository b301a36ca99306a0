"""One search: load -> split -> check the project's settings -> keras-tuner trials -> results -> retrain the best.

1. The data are loaded and split as ``python -m trainer.task`` splits them (``trainer.cli.load_share``:
   ``load_part``, then ``wals2.sharding.distribute``); the objective is measured on the validation part, the
   test part is left alone.
2. ``tuning.settings``: a project of other settings (data, mode, search space, objective, algorithm, fixed
   hyperparameters) is refused instead of resumed.
3. The trials (``tuning.hypermodel``), each with its TensorBoard scalars and hyperparameters (keras-tuner's
   HParams) under the log directory; in a distributed search the workers stop here.
4. The chief writes ``results.md``, ``results.json``, then retrains the best trial's configuration, with
   ``num_iters`` set to the sweeps of its scored model (``tuning.hypermodel.SWEEPS``), on train + validation
   through the trainer's job pipeline (``trainer.job.run``), which writes ``model/``, ``config.json`` and
   ``metrics.json`` under the job directory, and last ``best_hyperparameters.json`` with the test metrics, the
   ``python -m trainer.task`` command that reproduces the retrain and the one that reproduces the score.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import posixpath

import keras
import keras_tuner as kt
import tensorflow as tf

from trainer import artifacts, vertex
from trainer import cli as trainer_cli
from trainer import cluster as cluster_lib
from trainer import job as trainer_job
from trainer.config import TaskConfig
from tuning import cli, settings
from tuning.hypermodel import WALSHyperModel, make_tuner, results_table, trial_sweeps
from tuning.space import objective_name, search_space
from wals2 import modes, sharding
from wals2.collectives import Collectives
from wals2.config import WALSConfig
from wals2.data import RatingsError

logger = logging.getLogger(__name__)


def run(search: cli.SearchConfig, task: TaskConfig, base: WALSConfig, fixed: frozenset, chief: bool = True) -> int:
    """Runs the search (and, on the ``chief``, the retrain of the best trial); returns the exit status (1 with a
    logged reason on bad input or other search settings in the project)."""
    try:
        return _run(search, task, base, fixed, chief)
    except (ImportError, OSError, ValueError) as err:  # bad input, other settings: say what, without a traceback
        logger.error("%s", err)
        return 1


def _run(search, task, base, fixed, chief) -> int:
    collectives = Collectives()
    share = trainer_cli.load_share(task, base.seed, collectives)
    modes.check_training(share.part, share.train, base, share.partition.stats)
    train, validation = share.train, share.validation
    if not train.nnz or not validation.nnz:
        raise RatingsError(
            f"{share.part.source}: {train.nnz} training and {validation.nnz} validation ratings; both needed"
        )
    mode = modes.mode_of(base)
    space = kt.HyperParameters()
    search_space(space, mode, fixed)
    if not space.space:
        raise ValueError(
            f"every hyperparameter that the {base.mode} mode searches is fixed by a flag: nothing to search"
        )
    name = task.dataset or (posixpath.basename(task.train_file) if task.train_file else "ml-latest-small")
    project = search.project_name or f"{name}-{base.mode}-{search.algorithm}"
    project_dir = posixpath.join(search.directory, project)
    logger.info(
        "data: %s; %d users x %d items; %d train / %d validation / %d test ratings (%s split, seed %d); project %s",
        share.part.source,
        *share.partition.shape,
        train.nnz,
        validation.nnz,
        share.test.nnz,
        task.split,
        base.seed,
        project_dir,
    )
    current = settings.settings(
        search.algorithm,
        objective_name(mode, task.top_k),
        space.get_config()["space"],
        base.to_dict(),
        {
            "train": sharding.fingerprint(train, collectives),
            "validation": sharding.fingerprint(validation, collectives),
            "shape": list(share.partition.shape),
            "data_type": task.data_type,
            "split": task.split,
            "validation_fraction": task.validation_fraction,
            "test_fraction": task.test_fraction,
        },
    )
    # Only the chief owns the project directory: the workers get their trials from its oracle.
    if chief and not search.overwrite and settings.check(project_dir, current):
        logger.info("resuming the search in %s (same settings)", project_dir)
    hypermodel = WALSHyperModel(base, train, validation, task.top_k, fixed)
    overwrite = search.overwrite and chief  # a worker deleting the shared project would delete the oracle's state
    tuner = make_tuner(search.algorithm, search.max_trials, hypermodel, search.directory, project, overwrite)
    if chief:
        settings.write(project_dir, current)
    # keras-tuner gives each trial its own directory below the log directory and adds its HParams summary.
    logs = task.tensorboard_log_dir or os.environ.get("AIP_TENSORBOARD_LOG_DIR") or posixpath.join(project_dir, "logs")
    tuner.search(epochs=base.num_iters, callbacks=[keras.callbacks.TensorBoard(logs, write_graph=False)])
    if not chief:
        return 0  # a distributed worker: the chief writes the results
    records, table = results_table(tuner)
    print(table, flush=True)
    artifacts.write_json(posixpath.join(project_dir, "results.json"), records)
    with tf.io.gfile.GFile(posixpath.join(project_dir, "results.md"), "w") as handle:
        handle.write(table + "\n")
    best = tuner.oracle.get_best_trials(1)
    if not best or best[0].score is None:
        raise ValueError(f"no trial of {project_dir} finished with a score (see the log of each trial)")
    best = best[0]
    values = {k: v for k, v in best.hyperparameters.values.items() if not k.startswith("tuner/")}
    sweeps = trial_sweeps(best)
    logger.info(
        "best %s %.6g (trial %s, after %d of at most %d sweeps): %s",
        tuner.oracle.objective.name,
        best.score,
        best.trial_id,
        sweeps,
        base.num_iters,
        values,
    )
    # The scored model is the one after ``sweeps`` sweeps: the retrain runs exactly that many.
    config = hypermodel.config(best.hyperparameters).replace(num_iters=sweeps)
    retrain_logs = posixpath.join(logs.rstrip("/"), f"best_trial_{best.trial_id}")
    return _retrain(task, config, best, project_dir, retrain_logs, tuner.oracle.objective.name, values)


def _retrain(task, config, best, project_dir, logs, objective, values) -> int:
    """Retrains ``config`` on train + validation with ``trainer.job.run`` and writes ``best_hyperparameters.json``.

    A job directory that already holds the committed retrain of the same configuration (a resumed search whose
    best trial did not change) is reused; the default one (inside the project) is replaced when it holds another
    trial's; an explicit one is left to the trainer, which refuses to overwrite committed outputs.
    """
    job_dir = task.job_dir
    default = not (task.output_dir or task.job_dir or os.environ.get("AIP_MODEL_DIR"))
    if default:
        job_dir = posixpath.join(project_dir, cli.BEST_MODEL_DIR)
    retrain = cli.retrain_task(task, job_dir, None, logs)
    dirs = vertex.resolve_dirs(retrain, cluster_lib.Role())
    # Per best trial: a resumed search whose best changed retrains afresh instead of meeting another run's checkpoint.
    retrain = dataclasses.replace(retrain, checkpoint_dir=posixpath.join(dirs.checkpoints, f"trial_{best.trial_id}"))
    command = cli.trainer_command(retrain, config)
    if _holds_retrain(dirs.output, retrain, config):
        logger.info("%s already holds the retrain of trial %s; reusing it", dirs.output, best.trial_id)
    else:
        if default and tf.io.gfile.exists(dirs.output):
            logger.info("replacing %s, the retrain of a former best trial", dirs.output)
            tf.io.gfile.rmtree(dirs.output)
        logger.info("retraining trial %s on train + validation: %s --job-dir=%s", best.trial_id, command, dirs.output)
        status = trainer_job.run(retrain, config, None, cluster_lib.Cluster(cluster_lib.Role()))
        if status:
            return status
    with tf.io.gfile.GFile(posixpath.join(dirs.output, "metrics.json")) as handle:
        metrics = json.loads(handle.read())
    artifacts.write_json(
        posixpath.join(project_dir, "best_hyperparameters.json"),
        {
            "mode": config.mode,
            "objective": objective,
            "best_trial": best.trial_id,
            "score": best.score,
            "num_iters": config.num_iters,
            "hyperparameters": values,
            "test": {k: v for k, v in metrics.items() if k.startswith("test_")},
            "output_dir": dirs.output,
            "trainer_command": command,
            # The trial's own run: the same split with the validation part held out; its metrics.json holds the
            # objective's value at its last sweep, which is the score above.
            "validation_command": cli.trainer_command(task, config),
        },
    )
    print(f"best model: {dirs.model}\nreproduce it with (add --job-dir=DIR):\n  {command}", flush=True)
    return 0


def _holds_retrain(output: str, task: TaskConfig, config: WALSConfig) -> bool:
    """Whether ``output`` holds the committed outputs of a trainer run of ``task`` and ``config``."""
    if not artifacts.committed(output):
        return False
    with tf.io.gfile.GFile(posixpath.join(output, "config.json")) as handle:
        saved = json.loads(handle.read())
    current = json.loads(json.dumps({"model": config.to_dict(), "task": task.to_dict()}))
    return saved.get("model") == current["model"] and saved.get("task") == current["task"]
