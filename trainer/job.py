"""One training job, for one worker or many: load -> split -> fit -> metrics -> export.

Every worker of the job runs ``run``; with one worker each collective is the identity:

1. load its part of the input (``cli.load_share`` calls ``cli.load_part``: its byte range of the file, or all
   of it);
2. then ``wals2.sharding.distribute``: global vocabularies, its row and column blocks, the split (the same sets for
   any number of workers);
3. ``WALSModel.fit`` (after step 4) on the worker's ``engine.Partition`` under the job's strategy, with the
   callbacks: one log line per sweep, per-sweep checkpoints (restored by every worker, written by the chief),
   and on the chief the TensorBoard scalars and the ``--hypertune`` reports;
4. before ``fit``, ``sharding.gather``: the whole train / validation / test sets on every worker (kept by the
   chief): no collective runs after ``fit``, which the chief finishes alone;
5. on the chief only: the final metrics (RMSE and ranking), then the outputs, staged and committed together:
   ``model/`` (the serving SavedModel at its root, TF1's ``row.npy``, ``col.npy``, ``user.npy``, ``item.npy``,
   and with biases ``row_bias.npy``, ``col_bias.npy``, ``global_mean.npy``, ``rating_range.npy``),
   ``config.json`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import time

import keras
import numpy as np
import tensorflow as tf

from trainer import agreement, artifacts, cli, vertex
from trainer import cluster as cluster_lib
from trainer.checkpoints import SweepCheckpoint, fingerprint
from trainer.config import TaskConfig
from trainer.summaries import SweepSummaries
from wals2 import WALSModel, metrics, modes, sharding
from wals2.callbacks import HeldoutRanking
from wals2.collectives import Collectives, WorkerFailed
from wals2.config import WALSConfig
from wals2.data import RatingsError
from wals2.export import export_saved_model

logger = logging.getLogger(__name__)


def run(task: TaskConfig, config: WALSConfig, preset: str | None, cluster: cluster_lib.Cluster) -> int:
    """Runs this task's part of the job; returns the exit status (1 with a logged reason on any failure)."""
    role = cluster.role
    if not cluster.trains:
        logger.info(
            "task %s %d takes no part in training (only the chief trains a one-worker job); exiting",
            role.task_type,
            role.task_index,
        )
        return 0
    staging = dirs = None
    try:
        dirs = vertex.resolve_dirs(task, role)
        reporter = None
        if task.hypertune and role.is_chief:
            reporter = vertex.HypertuneReport(vertex.hypertune_metric(modes.mode_of(config), task.top_k)[0])
        if role.is_chief:
            staging = artifacts.Staging(dirs.output, [dirs.model_entry, "config.json", "metrics.json"])
        if cluster.workers > 1:
            logger.info(
                "joining a cluster of %d workers (waiting at most --collective-timeout=%g s)",
                cluster.workers,
                task.collective_timeout,
            )
        strategy = cluster_lib.strategy(cluster, task.collective_timeout)
        collectives = Collectives(strategy, task.collective_timeout)  # the first collective: all have joined
        if cluster.workers > 1:
            logger.info("worker %d of %d joined the cluster", collectives.rank, collectives.count)
        return _train(task, config, preset, dirs, staging, reporter, strategy, collectives)
    except tf.errors.OpError as err:
        if cluster.workers > 1 and isinstance(err, _COLLECTIVE_ERRORS):
            logger.error(
                "a worker failed, or the workers did not all answer within --collective-timeout=%g s (is every "
                "address of TF_CONFIG / CLUSTER_SPEC reachable and its task started?) (%s); the job stops. Restart "
                "the whole job to resume from the chief's last checkpoint.",
                task.collective_timeout,
                _first_line(err),
            )
        else:
            logger.error("%s; the job stops", describe_tf_error(err))
    except WorkerFailed as err:
        logger.error("%s; the job stops", err)
    except (ImportError, OSError, ValueError) as err:  # bad input: say what and where, without a traceback
        logger.error("%s", err)
    except KeyboardInterrupt:
        again = f" with --job-dir {dirs.output}" if dirs is not None and not dirs.chosen else ""
        logger.error("interrupted; the same command%s resumes from the last sweep's checkpoint", again)
        if staging is not None:
            staging.discard()
        return cluster_lib.SIGINT_STATUS
    except BaseException:
        if staging is not None:
            staging.discard()
        raise
    if staging is not None:
        staging.discard()
    return 1


#: TensorFlow errors that, in a job of several workers, mean a peer or the network failed.
_COLLECTIVE_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
)

#: What each kind of TensorFlow error means for a training job, in the user's terms.
_TF_ERROR_KINDS = {
    tf.errors.ResourceExhaustedError: "out of memory, or out of disk space where it was writing",
    tf.errors.NotFoundError: "a file or directory was not found",
    tf.errors.PermissionDeniedError: "permission denied on a path",
    tf.errors.AlreadyExistsError: "a path already exists",
    tf.errors.DataLossError: "a file is truncated or corrupt (a checkpoint or an input)",
    tf.errors.FailedPreconditionError: "a path or file is not in the expected state",
    tf.errors.InvalidArgumentError: "TensorFlow refused a value",
}


def _first_line(err: tf.errors.OpError) -> str:
    text = (err.message or str(err)).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def describe_tf_error(err: tf.errors.OpError) -> str:
    """What failed, for the log: the kind of failure, and TensorFlow's own first line (which names the path).

    "No space left on device" is reported as a full disk whatever TensorFlow's error class.
    """
    text = (err.message or str(err)).lower()
    if "no space left" in text or "disk quota" in text:
        kind = "the disk is full"
    else:
        kind = next((k for cls, k in _TF_ERROR_KINDS.items() if isinstance(err, cls)), "TensorFlow failed")
    return f"{kind} ({_first_line(err)})"


def _train(task, config, preset, dirs, staging, reporter, strategy, collectives: Collectives) -> int:
    """Steps 1-5 of the module docstring on this worker; returns 0 (failures raise)."""
    started = time.perf_counter()
    record = _agreed_record(task, config, collectives)
    share, sizes = _load(task, config, preset, collectives)
    chief = staging is not None
    fitted = _fit(task, config, share, sizes, dirs, reporter, strategy, collectives, chief, started)
    if not chief:
        logger.info("worker %d of %d done; the chief writes the outputs", collectives.rank, collectives.count)
        return 0
    final = _one_process_copy(fitted.model, config, fitted.train)
    results = _evaluate(final, fitted, task, config, collectives.count)
    _log_results(results, task.top_k)
    fitted.summaries.write_final(
        {f"{name}/rmse": results[f"{name}_rmse"] for name in ("train", "validation", "test")}
        | {
            key.replace("_", "/", 1): value
            for key, value in results.items()
            if key.startswith(("validation_", "test_")) and "@" in key
        },
        step=config.num_iters,
    )
    write_outputs(final, fitted.train, staging, dirs, task, preset, collectives.count, record)
    artifacts.write_json(staging.path("metrics.json"), results)
    staging.commit()
    logger.info("wrote %s (checkpoints %s, TensorBoard logs %s)", staging.destination, dirs.checkpoints, dirs.logs)
    return 0


def _agreed_record(task, config, collectives: Collectives) -> dict | None:
    """Step 0 of several workers: every worker's settings and input identity agree (``agreement``), or all stop."""
    record, error = None, None
    if collectives.count > 1:
        try:  # the input's digest: a worker that cannot read it fails, and the others with it
            record = agreement.run_record(task, config)
        except (OSError, tf.errors.OpError) as err:
            error = err
        collectives.check(error)
    agreement.agree(record, collectives)  # before anything is read: a worker of another run stops the job
    return record


def _load(task, config, preset, collectives: Collectives):
    """Steps 1-2: this worker's share, checked as the solver would check it; (share, [train, validation, test]
    sizes of the whole job)."""
    share = cli.load_share(task, config.seed, collectives)
    error = None
    try:  # what the solver would refuse mid-sweep, named by line
        modes.check_training(share.part, share.train, config, share.partition.stats)
    except RatingsError as err:
        error = err
    collectives.check(error)
    sizes = collectives.all_reduce_sum(np.array([share.train.nnz, share.validation.nnz, share.test.nnz]))
    if not sizes[0]:
        raise RatingsError(f"{share.part.source}: no training ratings")
    m, n = share.partition.shape
    logger.info(
        "data: %s; %d users x %d items; %d train / %d validation / %d test ratings (%s split, seed %d)%s",
        share.part.source,
        m,
        n,
        *sizes,
        task.split,
        config.seed,
        f"; worker {collectives.rank} of {collectives.count}" if collectives.count > 1 else "",
    )
    logger.info("hyperparameters%s: %s", f" (preset {preset})" if preset else "", cli.describe(config))
    return share, sizes


@dataclasses.dataclass
class _Fitted:
    """What step 3 leaves: the trained model, its run's record, and (on the chief) the whole sets."""

    model: WALSModel
    sweeps: SweepLog
    initial: int
    load_seconds: float
    summaries: SweepSummaries | None
    history: dict  # the logs of every sweep of the run, those before a resume included
    train: object = None
    validation: object = None
    test: object = None


def _fit(task, config, share, sizes, dirs, reporter, strategy, collectives, chief: bool, started: float) -> _Fitted:
    """Steps 3-4: the model under the job's strategy, resumed from its checkpoint, fitted with the callbacks."""
    m, n = share.partition.shape
    with strategy.scope():
        model = WALSModel(m, n, config)
        model.compile(jit_compile=False)
    heldout_name, heldout = ("validation", share.validation) if sizes[1] else ("test", share.test)
    sweeps = SweepLog(config.num_iters, heldout_name)
    digest = sharding.fingerprint(share.train, collectives)
    run_id = fingerprint(config, digest, (m, n), {"source": share.part.source, "split": task.split})
    checkpoint = SweepCheckpoint(dirs.checkpoints, model, run_id, write=chief)
    initial = checkpoint.restore(config.num_iters)
    resumed = [int(x[0]) for x in collectives.all_gather(np.array([initial], np.int64))]
    if len(set(resumed)) > 1:  # every worker raises: all see the same list
        raise ValueError(
            f"the workers would resume after different sweeps ({resumed}, worker by worker): each reads its own "
            f"checkpoint directory ({dirs.checkpoints} here). --checkpoint-dir (or --job-dir) must name one directory "
            "every worker reads, such as a gs:// path."
        )
    # Every collective of the job comes before ``fit``: the whole sets for the chief's metrics and export.
    sets = [sharding.gather(x, collectives) for x in (share.train, share.validation, share.test)]
    callbacks = [sweeps, checkpoint]
    summaries = None
    if chief:
        train, validation, _ = sets
        if model.mode.ranked and validation.nnz:  # the validation ranking every sweep, before its readers
            model.set_seen_items(train.users, train.items)
            callbacks.insert(0, HeldoutRanking(validation, task.top_k))
        summaries = SweepSummaries(dirs.logs, heldout_name, sweeps.seconds)
        callbacks += [summaries] + ([reporter] if reporter else [])
    else:
        sets = [None] * 3
    load_seconds = time.perf_counter() - started
    model.fit(
        share.partition,
        epochs=config.num_iters,
        initial_epoch=initial,
        validation_data=heldout if sizes[1] or sizes[2] else None,
        callbacks=callbacks,
        verbose=0,
    )
    return _Fitted(model, sweeps, initial, load_seconds, summaries, checkpoint.history, *sets)


def _one_process_copy(model: WALSModel, config: WALSConfig, train) -> WALSModel:
    """The chief's copy of the trained model outside the job's strategy, holding the whole training set's seen
    items and vocabularies (a one-worker job's model, whatever the number of workers), to evaluate and export."""
    final = WALSModel(model.num_users, model.num_items, config, name=model.name)
    final.set_weights(model.get_weights())
    final.set_seen_items(train.users, train.items, train.values)
    final.set_vocabularies(train.user_ids, train.item_ids)
    return final


def _evaluate(final: WALSModel, fitted: _Fitted, task, config: WALSConfig, workers: int) -> dict:
    """Step 5's figures, the content of ``metrics.json``: RMSE and ranking of each set, and the run's record."""
    train, validation, test = fitted.train, fitted.validation, fitted.test
    rmse = {name: final.rmse(x) for name, x in (("train", train), ("validation", validation), ("test", test))}
    ranking = {}
    for name, x, exclude in (("validation", validation, None), ("test", test, validation)):
        if x.nnz:
            scores = metrics.heldout_ranking(final, x, task.top_k, exclude if exclude and exclude.nnz else None)
            ranking.update({f"{name}_{key}": value for key, value in scores.items()})
    seconds = fitted.sweeps.seconds[1:] or fitted.sweeps.seconds
    return {
        "train_rmse": rmse["train"],
        "validation_rmse": rmse["validation"],
        "test_rmse": rmse["test"],
        **ranking,
        "top_k": task.top_k,
        "sweeps": config.num_iters,
        "resumed_from_sweep": fitted.initial,
        "workers": workers,
        "median_seconds_per_sweep": float(np.median(seconds)) if seconds else None,
        "first_sweep_seconds": fitted.sweeps.seconds[0] if fitted.sweeps.seconds else None,
        "load_seconds": fitted.load_seconds,
        "num_users": final.num_users,
        "num_items": final.num_items,
        "num_train": train.nnz,
        "num_validation": validation.nnz,
        "num_test": test.nnz,
        "test_entries_with_cold_user_or_item": _cold_test_entries(train, test),
        "history": {_history_name(k, validation.nnz): v for k, v in fitted.history.items()},
    }


def _history_name(key: str, validation: int) -> str:
    """A Keras history key as ``metrics.json`` names it: ``val_*`` is ``test_*`` where the held-out set behind it is
    the test set (a job without a validation set)."""
    return key if validation or not key.startswith("val_") else "test_" + key.removeprefix("val_")


def _sweep_time(results: dict) -> str:
    """The summary line's sweep time: the median of this run's sweeps, or why there is none."""
    if results["median_seconds_per_sweep"] is None:
        return f"none run here: resumed after sweep {results['resumed_from_sweep']}"
    return f"median {results['median_seconds_per_sweep']:.3f} s/sweep"


def _log_results(results: dict, top_k: int) -> None:
    """The job's summary lines: the RMSEs, then each held-out set's ranking."""
    logger.info(
        "done: train RMSE = %.4f, validation RMSE = %s, test RMSE = %s after %d sweeps (%s); %d of "
        "%d test ratings touch a user or item with no training ratings (their factors are 0)",
        results["train_rmse"],
        _text(results["validation_rmse"]),
        _text(results["test_rmse"]),
        results["sweeps"],
        _sweep_time(results),
        results["test_entries_with_cold_user_or_item"],
        results["num_test"],
    )
    for name in ("validation", "test"):
        if f"{name}_users" in results:
            values = "  ".join(f"{m}@{top_k} {results[f'{name}_{m}@{top_k}']:.4f}" for m in metrics.METRICS)
            logger.info("ranking on %s items (%d users): %s", name, results[f"{name}_users"], values)


def write_outputs(
    model: WALSModel, train, staging, dirs, task: TaskConfig, preset, workers: int, agreed: dict | None = None
) -> None:
    """The staged outputs: the SavedModel and TF1's ``.npy`` files under ``model/``, ``config.json``."""
    model_dir = staging.path(dirs.model_entry)
    # The serving SavedModel at the model directory's root (where Vertex AI and TF Serving look for it), with
    # TF1's .npy files beside it.
    top_k = min(task.export_top_k, train.num_items)
    if top_k < task.export_top_k:
        logger.warning(
            "--export-top-k %d is more than the %d items: the SavedModel's serving_default lists %d per user",
            task.export_top_k,
            train.num_items,
            top_k,
        )
    export_saved_model(model, model_dir, top_k=top_k)
    arrays = {
        "row": model.user_factors,
        "col": model.item_factors,
        "user": train.user_ids,
        "item": train.item_ids,
    }
    if model.mode.biases:  # mu + b_i + c_j + u_i.v_j, clipped to the rating range
        arrays |= {
            "row_bias": model.user_bias,
            "col_bias": model.item_bias,
            "global_mean": model.global_mean,
            "rating_range": model.rating_range,
        }
    for name, value in arrays.items():
        artifacts.save_npy(posixpath.join(model_dir, f"{name}.npy"), keras.ops.convert_to_numpy(value))
    artifacts.write_json(
        staging.path("config.json"),
        {
            "model": model.config.to_dict(),
            "task": task.to_dict(),
            "preset": preset,
            "data_source": train.source,
            "workers": workers,
            # what every worker checked that it shared with the chief (agreement.run_record), with several
            "agreed_by_all_workers": agreed,
        },
    )


def _text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _cold_test_entries(train, test) -> int:
    """Test ratings whose user or item has no training rating."""
    cold_users = train.user_counts() == 0
    cold_items = train.item_counts() == 0
    return int(np.count_nonzero(cold_users[test.users] | cold_items[test.items]))


class SweepLog(keras.callbacks.Callback):
    """Logs one line per sweep and keeps each sweep's seconds (the train step alone).

    ``heldout`` names the set behind ``val_rmse`` in the lines: validation, or test without one.
    """

    def __init__(self, total: int, heldout: str = "test"):
        super().__init__()
        self.total = total
        self.heldout = heldout
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(np.ravel(v)[0]) for k, v in (logs or {}).items()}
        test = f"  {self.heldout} RMSE {logs['val_rmse']:.4f}" if "val_rmse" in logs else ""
        loss = f"  loss {logs['loss']:.6g}" if "loss" in logs else ""
        logger.info(
            "sweep %*d/%d  %.3f s  train RMSE %.4f%s%s",
            len(str(self.total)),
            epoch + 1,
            self.total,
            self.seconds[-1],
            logs.get("rmse", float("nan")),
            test,
            loss,
        )
