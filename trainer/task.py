"""``python -m trainer.task``: train WALS on MovieLens (TFDS or the bundled latest-small) or a ratings file like TF1.

Prints one line per sweep (seconds, train RMSE, validation or test RMSE) and a summary with ranking metrics,
then writes under the output directory: ``model/{row,col,user,item}.npy`` (TF1 layout, with real index -> id
maps), ``config.json`` and ``metrics.json``. Everything is written to a staging directory first and renamed into
place at the end, so a failed run leaves no partial output. The factors are checkpointed after every sweep (a
rerun of the same command resumes), TensorBoard scalars go to the log directory, and on Vertex AI only the chief
trains and writes (``trainer.vertex``).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import logging  # noqa: E402
import posixpath  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from trainer import (  # noqa: E402
    artifacts,
    flags,
    multiworker,
    presets,
    vertex,
)
from trainer.checkpoints import SweepCheckpoint, fingerprint  # noqa: E402
from trainer.config import TaskConfig  # noqa: E402
from trainer.summaries import SweepSummaries  # noqa: E402
from wals2 import WALSModel, data, datasets, metrics  # noqa: E402
from wals2.config import LOG_RATINGS, WALSConfig  # noqa: E402
from wals2.export import export_saved_model  # noqa: E402

logger = logging.getLogger("trainer.task")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description="Train a weighted-ALS recommender (TF1 WALS semantics) and write its factors.",
    )
    flags.add_flags(parser, TaskConfig, "job")
    flags.add_flags(parser, WALSConfig, "hyperparameters (TF1 names; --name=value works)")
    return parser


def resolve_configs(namespace: argparse.Namespace):
    """(TaskConfig, WALSConfig, preset name or None) from parsed flags.

    ``--use-optimized`` starts from the mode's preset (TF1's tuned values in the tf1 mode); unlike TF1,
    hyperparameters given explicitly win over the preset. ``--data-type web_views`` uses the power-law item weights
    (wt_type 0), as TF1 forced.
    """
    task = TaskConfig(**flags.given(namespace, TaskConfig))
    explicit = flags.given(namespace, WALSConfig)
    values: dict = {}
    preset = None
    if task.use_optimized:
        mode = explicit.get("mode", WALSConfig.mode)
        preset, tuned = presets.preset(mode, task.data_type, presets.dataset_name(task.dataset, task.train_file))
        values.update(tuned)
        overridden = sorted(set(values) & set(explicit))
        if overridden:
            logger.warning("explicit flags override the %s preset for: %s", preset, ", ".join(overridden))
    if task.data_type == "web_views":
        if explicit.get("wt_type", LOG_RATINGS) not in (LOG_RATINGS, "log", "0"):
            logger.warning("--data-type web_views uses wt_type 0 (power law), as TF1 did; ignoring --wt_type")
        explicit["wt_type"] = LOG_RATINGS
    values.update(explicit)
    return task, WALSConfig(**values), preset


def load_data(task: TaskConfig) -> data.Ratings:
    """The ratings of ``--train-file`` (joined onto ``--gcs-bucket``), ``--dataset``, or the bundled latest-small."""
    path = posixpath.join(task.gcs_bucket, task.train_file) if task.gcs_bucket else task.train_file
    if task.data_type == "web_views":
        if path is None:
            raise ValueError("`--train-file` is required with --data-type web_views.")
        return data.read_web_views(path)
    if path is not None:
        return data.read_ratings(path, delimiter=task.delimiter, headers=task.headers)
    if task.dataset is not None and (task.dataset != "ml-latest-small" or task.data_dir):
        return datasets.load_movielens(task.dataset, task.data_dir)
    return data.load_bundled()


def main(argv: list[str] | None = None) -> int:
    if multiworker.is_multiworker():  # TF_CONFIG / CLUSTER_SPEC with more than one chief/worker task
        return multiworker.main(argv)
    parser = build_parser()
    namespace = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(namespace, "verbose_logging", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    if not getattr(namespace, "verbose_logging", False):
        for name in ("absl", "tensorflow"):  # TF's INFO lines, e.g. one per checkpoint save
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        task, config, preset = resolve_configs(namespace)
    except ValueError as err:
        parser.error(str(err))
    try:
        this = vertex.role()
        if not this.is_chief:
            logger.info(
                "task %s %d is not the chief: trainer.task trains on one machine (trainer.multiworker on several), "
                "so only the chief trains and writes; exiting",
                this.task_type,
                this.task_index,
            )
            return 0
        dirs = vertex.resolve_dirs(task, this)
        reporter = vertex.HypertuneReport() if task.hypertune else None
        staging = artifacts.Staging(dirs.output, [dirs.model_entry, "config.json", "metrics.json"])
    except (ImportError, OSError, ValueError) as err:
        logger.error("%s", err)
        return 1
    try:
        return _run(task, config, preset, dirs, staging, reporter)
    except (ImportError, OSError, ValueError) as err:  # bad input: say what and where, without a traceback
        staging.discard()
        logger.error("%s", err)
        return 1
    except BaseException:
        staging.discard()
        raise


def _run(task: TaskConfig, config, preset, dirs: vertex.Dirs, staging: artifacts.Staging, reporter) -> int:
    started = time.perf_counter()
    ratings = load_data(task)
    train, validation, test = ratings.train_validation_test(
        task.validation_fraction, task.test_fraction, seed=config.seed, strategy=task.split
    )
    logger.info(
        "data: %s; %d users x %d items; %d train / %d validation / %d test ratings (%s split, seed %d)",
        ratings.source,
        ratings.num_users,
        ratings.num_items,
        train.nnz,
        validation.nnz,
        test.nnz,
        task.split,
        config.seed,
    )
    logger.info("hyperparameters%s: %s", f" (preset {preset})" if preset else "", _describe(config))
    data.check_training(ratings, train, config)  # before anything is written: errors name the input line
    cold = _cold_test_entries(train, test)
    model = WALSModel(ratings.num_users, ratings.num_items, config)
    model.compile(jit_compile=False)
    heldout_name, heldout = ("validation", validation) if validation.nnz else ("test", test)
    sweeps = SweepLog(config.num_iters, heldout_name)
    run = fingerprint(config, train, {"source": ratings.source, "split": task.split})
    checkpoint = SweepCheckpoint(dirs.checkpoints, model, run)
    initial = checkpoint.restore(config.num_iters)
    summaries = SweepSummaries(dirs.logs, heldout_name, sweeps.seconds)
    callbacks = [sweeps, checkpoint, summaries] + ([reporter] if reporter else [])
    load_seconds = time.perf_counter() - started
    model.fit(
        train,
        epochs=config.num_iters,
        initial_epoch=initial,
        validation_data=(heldout.pairs(), heldout.values) if heldout.nnz else None,
        callbacks=callbacks,
        verbose=0,
    )

    rmse = {name: _rmse(model, part) for name, part in (("train", train), ("validation", validation), ("test", test))}
    ranking = {}
    for name, part, exclude in (("validation", validation, None), ("test", test, validation)):
        if part.nnz:
            scores = metrics.heldout_ranking(model, part, task.top_k, exclude if exclude and exclude.nnz else None)
            ranking.update({f"{name}_{key}": value for key, value in scores.items()})
    seconds = sweeps.seconds[1:] or sweeps.seconds
    results = {
        "train_rmse": rmse["train"],
        "validation_rmse": rmse["validation"],
        "test_rmse": rmse["test"],
        **ranking,
        "top_k": task.top_k,
        "sweeps": config.num_iters,
        "resumed_from_sweep": initial,
        "median_seconds_per_sweep": float(np.median(seconds)) if seconds else None,
        "first_sweep_seconds": sweeps.seconds[0] if sweeps.seconds else None,
        "load_seconds": load_seconds,
        "num_users": ratings.num_users,
        "num_items": ratings.num_items,
        "num_train": train.nnz,
        "num_validation": validation.nnz,
        "num_test": test.nnz,
        "test_entries_with_cold_user_or_item": cold,
        "history": {k: [float(x) for x in v] for k, v in model.history.history.items()},
    }
    logger.info(
        "done: train RMSE = %.4f, validation RMSE = %s, test RMSE = %s after %d sweeps (median %.3f s/sweep); %d of "
        "%d test ratings touch a user or item with no training ratings (their factors are 0)",
        rmse["train"],
        _text(rmse["validation"]),
        _text(rmse["test"]),
        config.num_iters,
        results["median_seconds_per_sweep"] or 0.0,
        cold,
        test.nnz,
    )
    for name in ("validation", "test"):
        if f"{name}_users" in ranking:
            values = "  ".join(f"{m}@{task.top_k} {ranking[f'{name}_{m}@{task.top_k}']:.4f}" for m in metrics.METRICS)
            logger.info("ranking on %s items (%d users): %s", name, ranking[f"{name}_users"], values)
    summaries.write_final(
        {f"{name}/rmse": value for name, value in rmse.items()}
        | {key.replace("_", "/", 1): value for key, value in ranking.items() if not key.endswith("_users")},
        step=config.num_iters,
    )
    model_dir = staging.path(dirs.model_entry)
    # The serving SavedModel at the model directory's root (where Vertex AI and TF Serving look for it), with
    # TF1's .npy files beside it.
    export_saved_model(model, train, model_dir, top_k=min(task.export_top_k, ratings.num_items))
    artifacts.save_npy(posixpath.join(model_dir, "row.npy"), keras.ops.convert_to_numpy(model.user_factors))
    artifacts.save_npy(posixpath.join(model_dir, "col.npy"), keras.ops.convert_to_numpy(model.item_factors))
    artifacts.save_npy(posixpath.join(model_dir, "user.npy"), ratings.user_ids)
    artifacts.save_npy(posixpath.join(model_dir, "item.npy"), ratings.item_ids)
    artifacts.write_json(
        staging.path("config.json"),
        {"model": config.to_dict(), "task": task.to_dict(), "preset": preset, "data_source": ratings.source},
    )
    artifacts.write_json(staging.path("metrics.json"), results)
    staging.commit()
    logger.info("wrote %s (checkpoints %s, TensorBoard logs %s)", staging.destination, dirs.checkpoints, dirs.logs)
    return 0


def _rmse(model, part) -> float | None:
    if not part.nnz:
        return None
    return float(model.evaluate(part.pairs(), part.values, batch_size=65536, verbose=0, return_dict=True)["rmse"])


def _text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _describe(config) -> str:
    """The hyperparameters that matter in ``config.mode``, for the log."""
    specific = {
        "tf1": ["unobs_weight", "wt_type", "feature_wt_factor", "feature_wt_exp", "weights"],
        "explicit": ["scale_regularization"],
        "implicit": ["alpha", "scale_regularization"],
    }[config.mode]
    fields = ["mode", "latent_factors", "num_iters", "regularization", *specific, "solver", "init", "seed"]
    text = ", ".join(f"{f}={getattr(config, f)}" for f in fields)
    return text.replace(f"wt_type={config.wt_type}", f"wt_type={config.wt_type} ({config.wt_type_name})")


def _cold_test_entries(train, test) -> int:
    """Test ratings whose user or item has no training rating."""
    cold_users = train.user_counts() == 0
    cold_items = train.item_counts() == 0
    return int(np.count_nonzero(cold_users[test.users] | cold_items[test.items]))


class SweepLog(keras.callbacks.Callback):
    """Logs one line per sweep and keeps each sweep's seconds (the train step alone, without validation).

    ``heldout`` names the set behind Keras' ``val_rmse`` in the lines: validation, or test without one.
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
        logs = logs or {}
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


if __name__ == "__main__":
    sys.exit(main())
