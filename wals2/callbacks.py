"""Keras callbacks of a WALS fit."""

from __future__ import annotations

import keras

from wals2 import metrics, validate
from wals2.data import Ratings


class HeldoutRanking(keras.callbacks.Callback):
    """Adds the ranking metrics of held-out entries (``val_ndcg@10``, ``val_precision@10``, ``val_recall@10``,
    ``val_map@10``; ``wals2.metrics``) to each sweep's logs, for EarlyStopping, keras-tuner or tuning reports.

    Put it before the callbacks that read these logs. The model must know its training items
    (``set_training_data`` or ``set_seen_items``): they are never recommended. ``WALSModel.fit(ranking_k=k)``
    adds one itself (logs ``val_ndcg@<k>`` and ``val_precision@<k>``).

    Args:
        heldout: the held-out entries; every one counts as relevant.
        k: the cutoff.
        prefix: prepended to the metric names.
        names: the metrics logged (``metrics.METRICS`` names, or one of them). With the default prefix (or none),
            ``mode="auto"`` callbacks of a ``WALSModel.fit`` know that each one increases; give them
            ``mode="max"`` with another prefix.
    """

    def __init__(
        self,
        heldout: Ratings,
        k: int = metrics.RANKING_K,
        prefix: str = "val_",
        names: tuple[str, ...] = metrics.METRICS,
    ):
        super().__init__()
        validate.integer("k", k)
        names = (names,) if isinstance(names, str) else names
        unknown = sorted(set(names) - set(metrics.METRICS))
        if unknown:
            raise ValueError(f"`names` should be among {metrics.METRICS}. Received: {unknown}")
        self.heldout, self.k, self.prefix, self.names = heldout, int(k), prefix, tuple(names)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        scores = metrics.heldout_ranking(self.model, self.heldout, self.k)
        logs.update(metrics.logs(scores, self.k, self.names, self.prefix))
