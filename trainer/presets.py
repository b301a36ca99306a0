"""Hyperparameter presets applied by ``--use-optimized``, per mode (and per data set for the new modes).

``tf1`` keeps TF1's own tuned values (``OPTIMIZED_PARAMS`` / ``OPTIMIZED_PARAMS_WEB`` of the tutorial). The
``explicit`` and ``implicit`` presets were found with ``python -m tuning.search --algorithm bayesian
--max-trials 20`` on the seeded validation split (seed 0, 10 % validation, 10 % test never seen by the search);
the commands and test results are in the README's results table. Of two searches per mode and data set (lambda
up to 10, then up to 100 and alpha down to 0.01), each preset is the one with the better validation score.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

#: TF1 ``OPTIMIZED_PARAMS`` (MovieLens ratings) and ``OPTIMIZED_PARAMS_WEB`` (GA web views).
OPTIMIZED = {
    "ratings": {"latent_factors": 34, "regularization": 9.83, "unobs_weight": 0.001, "feature_wt_factor": 189.8},
    "web_views": {"latent_factors": 30, "regularization": 7.27, "unobs_weight": 0.01, "feature_wt_exp": 5.05},
}

#: Tuned presets of the explicit and implicit modes, per data set.
TUNED = {
    "explicit": {
        "ml-100k": {"latent_factors": 8, "regularization": 10.0, "scale_regularization": False},
        "ml-latest-small": {"latent_factors": 51, "regularization": 10.0, "scale_regularization": False},
    },
    "implicit": {
        "ml-100k": {"latent_factors": 20, "regularization": 0.001, "alpha": 0.121},
        "ml-latest-small": {"latent_factors": 51, "regularization": 10.0, "alpha": 0.1},
    },
}

#: Per mode: (label, presets by data type or data set). TF1's are per data type, the others' per data set.
PRESETS = {"tf1": ("optimized", OPTIMIZED), **{mode: ("tuned", table) for mode, table in TUNED.items()}}

#: The data set whose preset serves data sets without one of their own.
FALLBACK = "ml-100k"


def preset(mode: str, data_type: str, dataset: str) -> tuple[str, dict]:
    """(name, hyperparameter values) of the ``--use-optimized`` preset for ``mode`` on ``dataset`` of
    ``data_type``: the mode's preset for the data set, else for the data type, else the ``FALLBACK`` one."""
    label, table = PRESETS[mode]
    key = next((k for k in (dataset, data_type) if k in table), None)
    if key is None:
        logger.warning("no tuned %s preset for %s; using the %s one", mode, dataset, FALLBACK)
        key = FALLBACK
    return f"{mode}-{label}-{key}", dict(table[key])


def dataset_name(dataset: str | None, train_file: str | None) -> str:
    """The data set a run trains on, for preset lookup: ``--dataset``, a recognised MovieLens file, or the bundled
    latest-small."""
    if dataset:
        return dataset
    if train_file is None:
        return "ml-latest-small"
    base = train_file.rstrip("/").rsplit("/", 1)[-1]
    return {"u.data": "ml-100k", "ratings.dat": "ml-1m"}.get(base, base)
