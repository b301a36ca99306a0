"""The keras-tuner side of a search: one ``WALSModel`` per trial, the tuner of each algorithm, the results table."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection

import keras_tuner as kt
import numpy as np

from tuning.space import objective, search_space
from wals2 import NonFiniteFactorsError, Ratings, WALSModel
from wals2.callbacks import HeldoutRanking
from wals2.config import WALSConfig
from wals2.modes import mode_of

logger = logging.getLogger(__name__)


#: The trial metric that holds how many sweeps, from the initial factors, the trial's best model had.
SWEEPS = "sweeps"


class WALSHyperModel(kt.HyperModel):
    """Builds a ``WALSModel`` per trial and fits it on the training part, validating on the validation part.

    A trial's score is its objective at its best sweep, and the trial records, as its ``SWEEPS`` metric, how many
    sweeps from the initial factors produced that model: sweeps are deterministic, so retraining the trial's
    hyperparameters with ``num_iters`` = that count reproduces the scored model. A Hyperband trial warm-started
    from a parent trial (``tuner/trial_id``) starts from the parent's best model, so its count adds the parent's.

    Args:
        base: the fixed hyperparameters; the trial's values replace the searched ones.
        train, validation: the parts of the split.
        top_k: k of the objective NDCG@k of a mode judged by ranking.
        fixed: hyperparameters given explicitly, kept out of the search space.
    """

    def __init__(
        self, base: WALSConfig, train: Ratings, validation: Ratings, top_k: int = 10, fixed: Collection[str] = ()
    ):
        super().__init__(name="wals")
        self.base, self.train, self.validation, self.top_k = base, train, validation, top_k
        self.fixed = frozenset(fixed)
        self.objective = objective(mode_of(base), top_k)
        #: The tuner's oracle (set by ``make_tuner``): the parent trials of warm-started Hyperband trials.
        self.oracle = None

    def config(self, hp: kt.HyperParameters) -> WALSConfig:
        """The trial's ``WALSConfig``: ``base`` with the values of ``hp``."""
        return self.base.replace(**search_space(hp, mode_of(self.base), self.fixed))

    def build(self, hp):
        model = WALSModel(self.train.num_users, self.train.num_items, self.config(hp))
        model.compile(jit_compile=False)
        return model

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, **kwargs):
        """Fits the trial's model; returns the logs of its best sweep with ``SWEEPS``, the sweeps behind it."""
        callbacks = list(callbacks or [])
        logger.info(
            "%s: fitting %s",
            os.environ.get("KERASTUNER_TUNER_ID", "tuner"),
            {k: v for k, v in hp.values.items() if not k.startswith("tuner/")},
        )
        if model.mode.ranked:  # first, so that later callbacks see the metric
            callbacks.insert(0, HeldoutRanking(self.validation, self.top_k))
        try:
            history = model.fit(
                self.train,
                epochs=epochs or model.config.num_iters,
                initial_epoch=initial_epoch,
                validation_data=(self.validation.pairs(), self.validation.values),
                callbacks=callbacks,
                verbose=0,
            )
        except NonFiniteFactorsError as err:
            raise kt.errors.FailedTrialError(f"trial diverged: {err}") from err
        return self.best_sweep(history.history, self._parent_sweeps(hp))

    def best_sweep(self, history: dict, start: int = 0) -> dict:
        """The logs of the first sweep of ``history`` (per-sweep lists of logs, as ``History.history``) whose
        objective is the best, with ``SWEEPS``: ``start`` (the sweeps of the initial model) + its 1-based index.
        keras-tuner's ``SaveBestEpoch`` saves the model of that same sweep (the first strict improvement)."""
        name = self.objective.name
        values = [float(np.ravel(v)[0]) for v in history[name]]
        best = 0
        for index, value in enumerate(values):
            if self.objective.better_than(value, values[best]):
                best = index
        logs = {key: float(np.ravel(series[best])[0]) for key, series in history.items()}
        return logs | {SWEEPS: start + best + 1}

    def _parent_sweeps(self, hp) -> int:
        """The sweeps behind the model a Hyperband trial starts from (its parent's best), 0 from scratch."""
        parent = hp.values.get("tuner/trial_id")
        if parent is None:
            return 0
        return trial_sweeps(self.oracle.get_trial(parent))


def trial_sweeps(trial: kt.engine.trial.Trial) -> int:
    """The sweeps from the initial factors behind a finished trial's scored model (its ``SWEEPS`` metric)."""
    if not trial.metrics.exists(SWEEPS):
        raise ValueError(
            f"trial {trial.trial_id} has no {SWEEPS!r} metric, so the sweeps of its scored model are unknown (a "
            "project of an older version); pass --overwrite to search afresh"
        )
    return int(trial.metrics.get_last_value(SWEEPS))


def make_tuner(
    algorithm: str, max_trials: int, hypermodel: WALSHyperModel, directory: str, project_name: str, overwrite: bool
) -> kt.Tuner:
    """The keras-tuner tuner of ``algorithm``; Hyperband's largest budget is ``num_iters`` sweeps."""
    common = dict(
        objective=hypermodel.objective,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        seed=hypermodel.base.seed,
    )
    if algorithm == "random":
        tuner = kt.RandomSearch(hypermodel, max_trials=max_trials, **common)
    elif algorithm == "bayesian":
        tuner = kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    else:
        tuner = kt.Hyperband(hypermodel, max_epochs=hypermodel.base.num_iters, factor=3, **common)
    hypermodel.oracle = tuner.oracle
    return tuner


def results_table(tuner: kt.Tuner) -> tuple[list[dict], str]:
    """Every finished trial, best first, as records and as a markdown table: its score, the sweeps of its scored
    model and its hyperparameters."""
    trials = tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials))
    names = sorted({k for t in trials for k in t.hyperparameters.values if not k.startswith("tuner/")})
    records = [
        {
            "trial": t.trial_id,
            "score": t.score,
            SWEEPS: trial_sweeps(t) if t.metrics.exists(SWEEPS) else None,
            "status": t.status,
            **{k: t.hyperparameters.values.get(k) for k in names},
        }
        for t in trials
    ]
    header = ["trial", "score", SWEEPS, *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        cells = [r["trial"], "n/a" if r["score"] is None else f"{r['score']:.4f}", str(r[SWEEPS] or "n/a")]
        cells += [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in names]
        lines.append("| " + " | ".join(cells) + " |")
    return records, "\n".join(lines)
