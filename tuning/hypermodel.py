"""The keras-tuner side of a search: one ``WALSModel`` per trial, the tuner of each algorithm, the results table."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection

import keras_tuner as kt

from tuning.space import objective, search_space
from wals2 import NonFiniteFactorsError, Ratings, WALSModel
from wals2.callbacks import HeldoutRanking
from wals2.config import WALSConfig
from wals2.modes import mode_of

logger = logging.getLogger(__name__)


class WALSHyperModel(kt.HyperModel):
    """Builds a ``WALSModel`` per trial and fits it on the training part, validating on the validation part.

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

    def config(self, hp: kt.HyperParameters) -> WALSConfig:
        """The trial's ``WALSConfig``: ``base`` with the values of ``hp``."""
        return self.base.replace(**search_space(hp, mode_of(self.base), self.fixed))

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
            callbacks.insert(0, HeldoutRanking(self.validation, self.top_k))
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


def make_tuner(
    algorithm: str, max_trials: int, hypermodel: WALSHyperModel, directory: str, project_name: str, overwrite: bool
) -> kt.Tuner:
    """The keras-tuner tuner of ``algorithm``; Hyperband's largest budget is ``num_iters`` sweeps."""
    common = dict(
        objective=objective(mode_of(hypermodel.base), hypermodel.top_k),
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        seed=hypermodel.base.seed,
    )
    if algorithm == "random":
        return kt.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if algorithm == "bayesian":
        return kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
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
