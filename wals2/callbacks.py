"""Keras callbacks of a WALS fit."""

from __future__ import annotations

import keras

from wals2 import metrics
from wals2.data import Ratings


class HeldoutRanking(keras.callbacks.Callback):
    """Adds the ranking metrics of held-out entries (``val_ndcg@10``, ``val_precision@10``, ``val_recall@10``,
    ``val_map@10``; ``wals2.metrics``) to each sweep's logs, for EarlyStopping, keras-tuner or tuning reports.

    Put it before the callbacks that read these logs. The model must know its training items
    (``set_training_data`` or ``set_seen_items``): they are never recommended.

    Args:
        heldout: the held-out entries; every one counts as relevant.
        k: the cutoff.
        prefix: prepended to the metric names.
    """

    def __init__(self, heldout: Ratings, k: int = 10, prefix: str = "val_"):
        super().__init__()
        self.heldout, self.k, self.prefix = heldout, k, prefix

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        scores = metrics.heldout_ranking(self.model, self.heldout, self.k)
        logs.update({f"{self.prefix}{name}": value for name, value in scores.items() if name != "users"})
