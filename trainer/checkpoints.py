"""Per-sweep checkpoints of the factors, and resuming from them.

``tf.train.CheckpointManager`` rather than ``.npy`` files: it writes a checkpoint's data files first and then
replaces the small ``checkpoint`` state file atomically, so a run killed during a save still finds the previous
checkpoint complete; it works through ``tf.io.gfile`` (``gs://``, ``ram://``) and prunes old checkpoints.
A sweep is a deterministic function of the item factors, so restoring U, V and the sweep count and running the
remaining sweeps gives bit-identical factors to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

#: Hyperparameters that do not change the factors after a given sweep (or only the floating-point order).
_NOT_IN_FINGERPRINT = ("num_iters", "compute_loss", "batch_entries", "max_row_length")


def fingerprint(config, train, extra: dict) -> str:
    """A JSON record of what determines the factors: hyperparameters, the training entries and ``extra``."""
    digest = hashlib.sha256()
    for array in (train.users, train.items, train.values):
        digest.update(np.ascontiguousarray(array).tobytes())
    model = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_FINGERPRINT}
    return json.dumps(
        {"model": model, "shape": list(train.shape), "train_sha256": digest.hexdigest(), **extra}, sort_keys=True
    )


class SweepCheckpoint(keras.callbacks.Callback):
    """Saves U, V and the sweep count to ``directory`` after every sweep; ``restore()`` resumes a run.

    Args:
        directory: the checkpoint directory (any ``tf.io.gfile`` path).
        model: the ``WALSModel`` whose ``user_factors`` and ``item_factors`` are saved.
        run: ``fingerprint(...)`` of the run; a checkpoint of a different run is refused.
        max_to_keep: checkpoints kept.
    """

    def __init__(self, directory: str, model, run: str, max_to_keep: int = 2):
        super().__init__()
        self.directory = directory
        self.run = run
        self._sweep = tf.Variable(0, dtype=tf.int64)
        self._run = tf.Variable("")
        self._checkpoint = tf.train.Checkpoint(
            user_factors=model.user_factors, item_factors=model.item_factors, sweep=self._sweep, run=self._run
        )
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=max_to_keep)

    def restore(self, num_iters: int) -> int:
        """Loads the latest checkpoint, if any, into the model; returns the sweeps it holds (0 without one).

        Raises:
            ValueError: the checkpoint belongs to another run (other data, split or hyperparameters) or is past
                ``num_iters``.
        """
        latest = self._manager.latest_checkpoint
        if latest is None:
            return 0
        reader = tf.train.load_checkpoint(latest)
        saved = reader.get_tensor("run/.ATTRIBUTES/VARIABLE_VALUE").decode()
        if saved != self.run:
            raise ValueError(
                f"checkpoint {latest} was written by a run with other data, split or hyperparameters; use another "
                f"--checkpoint-dir (or delete it) to start afresh. Saved: {saved}"
            )
        self._checkpoint.restore(latest).assert_consumed()
        sweeps = int(self._sweep.numpy())
        if sweeps > num_iters:
            raise ValueError(
                f"`num_iters` should be >= the {sweeps} sweeps in {latest}. Received: num_iters={num_iters}"
            )
        logger.info("resuming from %s after sweep %d of %d", latest, sweeps, num_iters)
        return sweeps

    def on_epoch_end(self, epoch, logs=None):
        self._sweep.assign(epoch + 1)
        self._run.assign(self.run)
        self._manager.save(checkpoint_number=epoch + 1)
