"""``python -m trainer.task``: train WALS on a ratings file (or the bundled MovieLens latest-small) like TF1.

Prints one line per sweep (seconds, train RMSE, test RMSE) and a summary, then writes under the output
directory: ``model/{row,col,user,item}.npy`` (TF1 layout, with real index -> id maps), ``config.json`` and
``metrics.json``. Everything is written to a staging directory first and renamed into place at the end, so a
failed run leaves no partial output.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from trainer import artifacts, flags  # noqa: E402
from trainer.config import TaskConfig  # noqa: E402
from trainer.presets import OPTIMIZED  # noqa: E402
from wals2 import WALSModel, data  # noqa: E402
from wals2.config import LOG_RATINGS, WALSConfig  # noqa: E402

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

    ``--use-optimized`` starts from TF1's tuned values; unlike TF1, hyperparameters given explicitly win over
    the preset. ``--data-type web_views`` uses the power-law item weights (wt_type 0), as TF1 forced.
    """
    task = TaskConfig(**flags.given(namespace, TaskConfig))
    explicit = flags.given(namespace, WALSConfig)
    values: dict = {}
    preset = None
    if task.use_optimized:
        preset = f"tf1-optimized-{task.data_type}"
        values.update(OPTIMIZED[task.data_type])
        overridden = sorted(set(values) & set(explicit))
        if overridden:
            logger.warning("explicit flags override the %s preset for: %s", preset, ", ".join(overridden))
    if task.data_type == "web_views":
        if explicit.get("wt_type", LOG_RATINGS) not in (LOG_RATINGS, "log", "0"):
            logger.warning("--data-type web_views uses wt_type 0 (power law), as TF1 did; ignoring --wt_type")
        explicit["wt_type"] = LOG_RATINGS
    values.update(explicit)
    return task, WALSConfig(**values), preset


def load_data(task: TaskConfig):
    if task.data_type == "web_views":
        if task.train_file is None:
            raise ValueError("`--train-file` is required with --data-type web_views.")
        return data.read_web_views(task.train_file)
    if task.train_file is None:
        return data.load_bundled()
    return data.read_ratings(task.train_file, delimiter=task.delimiter, headers=task.headers)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    namespace = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(namespace, "verbose_logging", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    try:
        task, config, preset = resolve_configs(namespace)
    except ValueError as err:
        parser.error(str(err))
    output_dir = task.output_dir or task.job_dir or os.path.join("jobs", time.strftime("%Y%m%d_%H%M%S"))
    try:
        staging = artifacts.Staging(output_dir, ["model", "config.json", "metrics.json"])
    except (OSError, ValueError) as err:
        logger.error("%s", err)
        return 1
    try:
        return _run(task, config, preset, staging)
    except (OSError, ValueError) as err:  # bad input: say what and where, without a traceback
        staging.discard()
        logger.error("%s", err)
        return 1
    except BaseException:
        staging.discard()
        raise


def _run(task: TaskConfig, config, preset: str | None, staging: artifacts.Staging) -> int:
    started = time.perf_counter()
    ratings = load_data(task)
    train, test = ratings.split(task.test_fraction, seed=config.seed)
    logger.info(
        "data: %s; %d users x %d items; %d train / %d test ratings (seed %d)",
        ratings.source,
        ratings.num_users,
        ratings.num_items,
        train.nnz,
        test.nnz,
        config.seed,
    )
    logger.info("hyperparameters%s: %s", f" (preset {preset})" if preset else "", _describe(config))
    cold = _cold_test_entries(train, test)
    model = WALSModel(ratings.num_users, ratings.num_items, config)
    model.compile(jit_compile=False)
    sweeps = SweepLog(config.num_iters)
    validation = (test.pairs(), test.values) if test.nnz else None
    load_seconds = time.perf_counter() - started
    model.fit(train, epochs=config.num_iters, validation_data=validation, callbacks=[sweeps], verbose=0)

    train_rmse = model.evaluate(train.pairs(), train.values, batch_size=65536, verbose=0, return_dict=True)["rmse"]
    test_rmse = (
        model.evaluate(test.pairs(), test.values, batch_size=65536, verbose=0, return_dict=True)["rmse"]
        if test.nnz
        else None
    )
    seconds = sweeps.seconds[1:] or sweeps.seconds
    metrics = {
        "train_rmse": float(train_rmse),
        "test_rmse": None if test_rmse is None else float(test_rmse),
        "sweeps": len(sweeps.seconds),
        "median_seconds_per_sweep": float(np.median(seconds)) if seconds else None,
        "first_sweep_seconds": sweeps.seconds[0] if sweeps.seconds else None,
        "load_seconds": load_seconds,
        "num_users": ratings.num_users,
        "num_items": ratings.num_items,
        "num_train": train.nnz,
        "num_test": test.nnz,
        "test_entries_with_cold_user_or_item": cold,
        "history": {k: [float(x) for x in v] for k, v in model.history.history.items()},
    }
    test_text = "n/a" if test_rmse is None else f"{test_rmse:.4f}"
    logger.info(
        "done: train RMSE = %.4f, test RMSE = %s after %d sweeps (median %.3f s/sweep); %d of %d test ratings "
        "touch a user or item with no training ratings (their factors are 0, so they predict 0)",
        train_rmse,
        test_text,
        metrics["sweeps"],
        metrics["median_seconds_per_sweep"] or 0.0,
        cold,
        test.nnz,
    )
    model_dir = staging.path("model")
    artifacts.save_npy(os.path.join(model_dir, "row.npy"), keras.ops.convert_to_numpy(model.user_factors))
    artifacts.save_npy(os.path.join(model_dir, "col.npy"), keras.ops.convert_to_numpy(model.item_factors))
    artifacts.save_npy(os.path.join(model_dir, "user.npy"), ratings.user_ids)
    artifacts.save_npy(os.path.join(model_dir, "item.npy"), ratings.item_ids)
    artifacts.write_json(
        staging.path("config.json"),
        {"model": config.to_dict(), "task": task.to_dict(), "preset": preset, "data_source": ratings.source},
    )
    artifacts.write_json(staging.path("metrics.json"), metrics)
    staging.commit()
    logger.info("wrote %s", staging.destination)
    return 0


def _describe(config) -> str:
    fields = [
        "latent_factors",
        "num_iters",
        "regularization",
        "unobs_weight",
        "wt_type",
        "feature_wt_factor",
        "feature_wt_exp",
        "weights",
        "init",
        "seed",
    ]
    text = ", ".join(f"{f}={getattr(config, f)}" for f in fields)
    return text.replace(f"wt_type={config.wt_type}", f"wt_type={config.wt_type} ({config.wt_type_name})")


def _cold_test_entries(train, test) -> int:
    """Test ratings whose user or item has no training rating."""
    cold_users = train.user_counts() == 0
    cold_items = train.item_counts() == 0
    return int(np.count_nonzero(cold_users[test.users] | cold_items[test.items]))


class SweepLog(keras.callbacks.Callback):
    """Logs one line per sweep and keeps each sweep's seconds (the train step alone, without validation)."""

    def __init__(self, total: int):
        super().__init__()
        self.total = total
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        test = f"  test RMSE {logs['val_rmse']:.4f}" if "val_rmse" in logs else ""
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
