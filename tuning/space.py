"""What a search varies and optimises, per mode (``wals2.modes.Mode.search_ranges``); imports no TensorFlow."""

from __future__ import annotations

from collections.abc import Collection

from wals2.config import LINEAR_RATINGS
from wals2.metrics import direction as metric_direction

#: The range of ``latent_factors`` in every mode (TF1's ``config_tune.json``).
LATENT_FACTORS = (5, 50)


def objective_name(mode, top_k: int = 10) -> tuple[str, str]:
    """(log key, direction) of the objective in ``mode`` (a ``wals2.modes.Mode``): the validation NDCG@``top_k``
    (maximised) where the mode is judged by ranking (implicit feedback), else the validation RMSE (minimised)."""
    key = f"val_ndcg@{top_k}" if mode.ranked else "val_rmse"
    return key, metric_direction(key)


def objective(mode, top_k: int = 10):
    """``objective_name`` as a ``keras_tuner.Objective``."""
    import keras_tuner as kt

    return kt.Objective(*objective_name(mode, top_k))


def searched(mode, fixed: Collection[str] = ()) -> list[str]:
    """The hyperparameters a search of ``mode`` varies: ``latent_factors`` and the mode's ``search_ranges`` (of
    its item-weight exponent or factor, the one its ``wt_type`` uses), less the ``fixed`` ones."""
    unused = {"feature_wt_exp" if mode.config.wt_type == LINEAR_RATINGS else "feature_wt_factor"}
    names = ["latent_factors", *(name for name in mode.search_ranges if name not in unused)]
    return [name for name in names if name not in fixed]


def search_space(hp, mode, fixed: Collection[str] = ()) -> dict:
    """Declares the ``searched`` hyperparameters on ``hp`` (a ``keras_tuner.HyperParameters``) and returns their
    values: ``latent_factors`` integer in [5, 50] with log sampling, each range of ``search_ranges`` as a float
    ``(low, high, sampling)`` or, where it is None, a boolean."""
    values = {}
    for name in searched(mode, fixed):
        if name == "latent_factors":
            values[name] = hp.Int(name, *LATENT_FACTORS, sampling="log")
        elif mode.search_ranges[name] is None:
            values[name] = hp.Boolean(name)
        else:
            low, high, sampling = mode.search_ranges[name]
            values[name] = hp.Float(name, low, high, sampling=sampling)
    return values
