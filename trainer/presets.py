"""Hyperparameter presets applied by ``--use-optimized``, per mode (and per data set for the new modes).

``tf1`` keeps TF1's own tuned values (``OPTIMIZED_PARAMS`` / ``OPTIMIZED_PARAMS_WEB`` of the tutorial). The
``explicit`` and ``implicit`` presets were found with ``python -m tuning.search --algorithm bayesian
--max-trials 20`` on the seeded validation split (seed 0, 10 % validation, 10 % test never seen by the search);
the commands and test results are in the README's results table. Of two searches per mode and data set (lambda
up to 10, then up to 100 and alpha down to 0.01), each preset is the one with the better validation score.
"""

from __future__ import annotations

import logging
import os

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

#: The ratings files the presets were tuned on, recognised by content: name -> (bytes, sha256 of the bytes,
#: decompressed when the file is gzip).
KNOWN_FILES = {
    "ml-100k": (1_979_173, "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),  # u.data
    "ml-latest-small": (2_483_723, "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646"),  # ratings.csv
}


def preset(mode: str, data_type: str, dataset: str | None) -> tuple[str, dict]:
    """(name, hyperparameter values) of the ``--use-optimized`` preset for ``mode`` on ``dataset`` of
    ``data_type``: TF1's per data type in the tf1 mode (as TF1 applied them to any data), else the mode's preset
    for the data set.

    Args:
        dataset: the data set the run trains on (``identify``), or None when it is not one of the known ones.

    Raises:
        ValueError: the mode has no preset for ``dataset``; the message lists the presets there are.
    """
    label, table = PRESETS[mode]
    key = next((k for k in (dataset, data_type) if k in table), None)
    if key is None:
        what = f"the data set {dataset}" if dataset else "this ratings file (not a file the presets were tuned on)"
        raise ValueError(
            f"`use_optimized`: there is no tuned {mode} preset for {what}. Presets of the {mode} mode: "
            f"{', '.join(sorted(table))} (recognised by --dataset, or by the content of their ratings file). Give "
            "the hyperparameters as flags instead, or find them with python -m tuning.search."
        )
    return f"{mode}-{label}-{key}", dict(table[key])


def identify(dataset: str | None, train_file: str | None) -> str | None:
    """The data set a run trains on, for preset lookup: ``--dataset``, the bundled latest-small without a file,
    else the known data set whose ratings file has the same content as ``train_file`` (``KNOWN_FILES``), or None.

    A file's size is compared first, so only a file of a known size is read (and hashed).
    """
    if dataset:
        return dataset
    if train_file is None:
        return "ml-latest-small"
    from trainer import paths

    if paths.is_url(train_file):
        import tensorflow as tf

        size = tf.io.gfile.stat(train_file).length
    else:
        if not os.path.isfile(train_file):
            raise ValueError(paths.missing_input(train_file))
        size = os.path.getsize(train_file)
    zipped = train_file.endswith(".gz")
    if not zipped and size not in {known for known, _ in KNOWN_FILES.values()}:
        return None
    digest = paths.sha256(train_file, gunzip=zipped)
    return next((name for name, (_, known) in KNOWN_FILES.items() if known == digest), None)
