"""``python -m tuning.search``: keras-tuner search over WALS hyperparameters on a validation split.

The objective is the validation RMSE (tf1 and explicit modes) or the validation NDCG@10 (implicit mode); the
test set is never seen by the search. Each trial fits a ``WALSModel`` (one Keras epoch = one sweep); Hyperband
maps its epoch budget to sweeps and warm-starts a trial from its parent trial's saved factors. Trials that
diverge fail (``FailedTrialError``) without stopping the search. At the end the chief writes the results table
and ``best_hyperparameters.json``, retrains once on train + validation with the best values and reports the test
metrics. An interrupted search resumes from its project directory (pass ``--overwrite`` to start over).

Distributed search uses keras-tuner's own protocol: set ``KERASTUNER_TUNER_ID`` (``chief`` for the oracle, then
``tuner0``, ``tuner1``, ...), ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` on every process, with one
shared ``--directory``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import posixpath  # noqa: E402
import sys  # noqa: E402

import keras_tuner as kt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer import flags  # noqa: E402
from trainer.cli import load_data  # noqa: E402
from trainer.config import TaskConfig  # noqa: E402
from wals2 import NonFiniteFactorsError, Ratings, WALSModel, metrics  # noqa: E402
from wals2.callbacks import HeldoutRanking  # noqa: E402
from wals2.config import LINEAR_RATINGS, WALSConfig  # noqa: E402
from wals2.modes import Mode, mode_of  # noqa: E402

logger = logging.getLogger("tuning.search")

ALGORITHMS = ("random", "bayesian", "hyperband")
RANKING_K = 10
NDCG = f"val_ndcg@{RANKING_K}"
#: The data defaults of a search that differ from the trainer's: the objective needs a validation part.
TASK_DEFAULTS = {"validation_fraction": 0.1}


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Options of one search (the data flags come from ``TaskConfig``, fixed hyperparameters from ``WALSConfig``)."""

    algorithm: str = dataclasses.field(
        default="bayesian",
        metadata={
            "help": "keras-tuner algorithm: random, bayesian or hyperband.",
            "flag": "--algorithm",
            "choices": ALGORITHMS,
        },
    )
    max_trials: int = dataclasses.field(
        default=20,
        metadata={
            "help": "Trials to run (random, bayesian); Hyperband's budget is set by --num_iters.",
            "flag": "--max-trials",
        },
    )
    directory: str = dataclasses.field(
        default="tuning_runs",
        metadata={"help": "Directory of the search projects (local or gs://).", "flag": "--directory"},
    )
    project_name: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Project name (default <dataset>-<mode>-<algorithm>).", "flag": "--project-name"},
    )
    overwrite: bool = dataclasses.field(
        default=False, metadata={"help": "Delete an existing project instead of resuming it.", "flag": "--overwrite"}
    )

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"`algorithm` should be one of {ALGORITHMS}. Received: algorithm={self.algorithm!r}")
        if isinstance(self.max_trials, bool) or not isinstance(self.max_trials, int) or self.max_trials < 1:
            raise ValueError(f"`max_trials` should be a positive integer. Received: max_trials={self.max_trials!r}")


def objective(mode: Mode) -> kt.Objective:
    """Validation NDCG@10 (maximised) for a mode judged by ranking (implicit feedback), else validation RMSE."""
    return kt.Objective(NDCG, "max") if mode.ranked else kt.Objective("val_rmse", "min")


def search_space(hp: kt.HyperParameters, mode: Mode) -> dict:
    """``latent_factors`` in [5, 50] and the mode's ``search_ranges`` (of its item-weight exponent or factor, the
    one its ``wt_type`` uses)."""
    unused = {"feature_wt_exp" if mode.config.wt_type == LINEAR_RATINGS else "feature_wt_factor"}
    values = {"latent_factors": hp.Int("latent_factors", 5, 50, sampling="log")}
    for name, spec in mode.search_ranges.items():
        if name in unused:
            continue
        if spec is None:
            values[name] = hp.Boolean(name)
        else:
            low, high, sampling = spec
            values[name] = hp.Float(name, low, high, sampling=sampling)
    return values


class WALSHyperModel(kt.HyperModel):
    """Builds a ``WALSModel`` per trial and fits it on the training part, validating on the validation part."""

    def __init__(self, base: WALSConfig, data_type: str, train: Ratings, validation: Ratings):
        super().__init__(name="wals")
        self.base, self.data_type, self.train, self.validation = base, data_type, train, validation

    def config(self, hp: kt.HyperParameters) -> WALSConfig:
        return self.base.replace(**search_space(hp, mode_of(self.base)))

    def build(self, hp):
        model = WALSModel(self.train.num_users, self.train.num_items, self.config(hp))
        model.compile(jit_compile=False)
        return model

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, **kwargs):
        callbacks = list(callbacks or [])
        logger.info(
            "%s: fitting %s",
            os.environ.get("KERASTUNER_TUNER_ID", "tuner"),
            {k: v for k, v in hp.values.items() if not k.startswith("tuner/")},
        )
        if model.mode.ranked:  # first, so that later callbacks see the metric
            callbacks.insert(0, HeldoutRanking(self.validation, RANKING_K))
        try:
            return model.fit(
                self.train,
                epochs=epochs or model.config.num_iters,
                initial_epoch=initial_epoch,
                validation_data=(self.validation.pairs(), self.validation.values),
                callbacks=callbacks,
                verbose=0,
            )
        except NonFiniteFactorsError as err:
            raise kt.errors.FailedTrialError(f"trial diverged: {err}") from err


def make_tuner(search: SearchConfig, hypermodel: WALSHyperModel, project_name: str) -> kt.Tuner:
    common = dict(
        objective=objective(mode_of(hypermodel.base)),
        directory=search.directory,
        project_name=project_name,
        overwrite=search.overwrite,
        seed=hypermodel.base.seed,
    )
    if search.algorithm == "random":
        return kt.RandomSearch(hypermodel, max_trials=search.max_trials, **common)
    if search.algorithm == "bayesian":
        return kt.BayesianOptimization(hypermodel, max_trials=search.max_trials, **common)
    return kt.Hyperband(hypermodel, max_epochs=hypermodel.base.num_iters, factor=3, **common)


def results_table(tuner: kt.Tuner) -> tuple[list[dict], str]:
    """Every finished trial, best first, as records and as a markdown table."""
    trials = tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials))
    names = sorted({k for t in trials for k in t.hyperparameters.values if not k.startswith("tuner/")})
    records = [
        {
            "trial": t.trial_id,
            "score": t.score,
            "status": t.status,
            **{k: t.hyperparameters.values.get(k) for k in names},
        }
        for t in trials
    ]
    header = ["trial", "score", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        cells = [r["trial"], "n/a" if r["score"] is None else f"{r['score']:.4f}"]
        cells += [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in names]
        lines.append("| " + " | ".join(cells) + " |")
    return records, "\n".join(lines)


def final_report(config: WALSConfig, train: Ratings, validation: Ratings, test: Ratings) -> dict:
    """Retrains once on train + validation with ``config`` and scores the test set (RMSE and ranking@10)."""
    both = dataclasses.replace(
        train,
        users=np.concatenate([train.users, validation.users]),
        items=np.concatenate([train.items, validation.items]),
        values=np.concatenate([train.values, validation.values]),
        timestamps=None,
    )
    model = WALSModel(both.num_users, both.num_items, config)
    model.compile(jit_compile=False)
    model.fit(both, verbose=0)
    report = {"test_rmse": None}
    if test.nnz:
        report["test_rmse"] = float(
            model.evaluate(test.pairs(), test.values, batch_size=65536, verbose=0, return_dict=True)["rmse"]
        )
        ranking = metrics.heldout_ranking(model, test, RANKING_K)
        report.update({f"test_{k}": v for k, v in ranking.items()})
    return report


def is_chief(environ=os.environ) -> bool:
    """True unless this process is a keras-tuner worker (``KERASTUNER_TUNER_ID`` other than ``chief``)."""
    if "KERASTUNER_ORACLE_IP" not in environ:
        return True
    return environ.get("KERASTUNER_TUNER_ID", "").startswith("chief")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.search",
        description="keras-tuner search over WALS hyperparameters on a validation split.",
    )
    flags.add_flags(parser, SearchConfig, "search")
    flags.add_flags(parser, TaskConfig, "data (as in python -m trainer.task)", defaults=TASK_DEFAULTS)
    flags.add_flags(parser, WALSConfig, "fixed hyperparameters (--mode selects the objective and search space)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    namespace = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout
    )
    try:
        search = SearchConfig(**flags.given(namespace, SearchConfig))
        # The objective needs a validation part (TASK_DEFAULTS: 10 % unless given); the test part is drawn first,
        # so it is the same test set as the trainer's with the same seed and --test-fraction.
        task = TaskConfig(**{**TASK_DEFAULTS, **flags.given(namespace, TaskConfig)})
        base = WALSConfig(**flags.given(namespace, WALSConfig))
        if task.validation_fraction <= 0:
            raise ValueError(
                "`validation_fraction` should be > 0 for a search: the objective is measured on it. "
                f"Received: validation_fraction={task.validation_fraction!r}"
            )
    except ValueError as err:
        parser.error(str(err))
    ratings = load_data(task)
    train, validation, test = ratings.train_validation_test(
        task.validation_fraction, task.test_fraction, seed=base.seed, strategy=task.split
    )
    dataset = task.dataset or (posixpath.basename(task.train_file) if task.train_file else "ml-latest-small")
    project = search.project_name or f"{dataset}-{base.mode}-{search.algorithm}"
    logger.info(
        "data: %s; %d train / %d validation / %d test ratings; project %s/%s",
        ratings.source,
        train.nnz,
        validation.nnz,
        test.nnz,
        search.directory,
        project,
    )
    hypermodel = WALSHyperModel(base, task.data_type, train, validation)
    tuner = make_tuner(search, hypermodel, project)
    tuner.search(epochs=base.num_iters)
    if not is_chief():
        return 0  # a distributed worker: the chief writes the results
    records, table = results_table(tuner)
    print(table)
    best = tuner.get_best_hyperparameters(1)[0].values
    best = {k: v for k, v in best.items() if not k.startswith("tuner/")}
    config = hypermodel.config(tuner.get_best_hyperparameters(1)[0])
    report = final_report(config, train, validation, test)
    project_dir = posixpath.join(search.directory, project)
    _write_json(
        posixpath.join(project_dir, "best_hyperparameters.json"),
        {
            "mode": base.mode,
            "dataset": dataset,
            "objective": tuner.oracle.objective.name,
            "hyperparameters": best,
            "test": report,
        },
    )
    _write_json(posixpath.join(project_dir, "results.json"), records)
    with tf.io.gfile.GFile(posixpath.join(project_dir, "results.md"), "w") as handle:
        handle.write(table + "\n")
    logger.info("best %s: %s", tuner.oracle.objective.name, json.dumps(best, sort_keys=True))
    logger.info(
        "retrained on train + validation; test: %s",
        "  ".join(f"{k} {v:.4f}" for k, v in report.items() if isinstance(v, float)),
    )
    return 0


def _write_json(path: str, value) -> None:
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True, default=float) + "\n")


if __name__ == "__main__":
    sys.exit(main())
