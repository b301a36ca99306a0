"""Per-sweep checkpoints of the factors, and resuming from them.

``tf.train.CheckpointManager`` rather than ``.npy`` files: it writes a checkpoint's data files first and then
replaces the small ``checkpoint`` state file atomically, so a run killed during a save still finds the previous
checkpoint complete; it works through ``tf.io.gfile`` (``gs://``, ``ram://``) and prunes old checkpoints.
A sweep is a deterministic function of the item factors, so restoring U, V and the sweep count and running the
remaining sweeps gives bit-identical factors to an uninterrupted run.
"""

from __future__ import annotations

import json
import logging

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

#: The checkpoint key of the run record (``fingerprint``) that every trainer checkpoint holds.
_RUN_KEY = "run/.ATTRIBUTES/VARIABLE_VALUE"
#: The checkpoint key of the sweeps' logs (``SweepCheckpoint.history``).
_HISTORY_KEY = "history/.ATTRIBUTES/VARIABLE_VALUE"

#: Hyperparameters that do not change the factors after a given sweep (or only the floating-point order).
_NOT_IN_FINGERPRINT = ("num_iters", "compute_loss", "batch_entries", "max_row_length")


def fingerprint(config, digest: str, shape: tuple[int, int], extra: dict) -> str:
    """A JSON record of what determines the factors: hyperparameters, the training entries' ``digest``
    (``wals2.sharding.fingerprint``, the same for any number of workers), the shape and ``extra``."""
    model = {k: v for k, v in config.to_dict().items() if k not in _NOT_IN_FINGERPRINT}
    return json.dumps({"model": model, "shape": list(shape), "train": digest, **extra}, sort_keys=True)


def _differences(saved: str, run: str) -> str:
    """What differs between two ``fingerprint`` records, as "name: saved X, this run Y" parts."""
    try:
        before, now = json.loads(saved), json.loads(run)
    except json.JSONDecodeError:
        return f"saved record {saved[:200]!r}"
    flat = [{**record.pop("model", {}), **record} for record in (before, now)]
    names = sorted(set(flat[0]) | set(flat[1]))
    what = {"train": "training ratings (digest)", "shape": "shape (users, items)"}
    parts = [
        f"{what.get(name, name)}: saved {flat[0].get(name)!r}, this run {flat[1].get(name)!r}"
        for name in names
        if flat[0].get(name) != flat[1].get(name)
    ]
    return "; ".join(parts) or "the same fields, written differently"


class SweepCheckpoint(keras.callbacks.Callback):
    """Saves the factors, the biases, the sweep count and the logs of every sweep so far to ``directory`` after
    every sweep; ``restore()`` resumes a run, and ``history`` holds the logs of all its sweeps, those before the
    resume included (``{name: [value per sweep]}``, as ``keras.callbacks.History``).

    The checkpoint holds its own copies of the model's variables, so the same callback serves a model trained on
    several workers: every worker restores from the (shared) directory, and only the chief (``write``) saves.

    Args:
        directory: the checkpoint directory (any ``tf.io.gfile`` path).
        model: the ``WALSModel`` whose ``user_factors``, ``item_factors``, ``user_bias`` and ``item_bias`` are saved.
        run: ``fingerprint(...)`` of the run; a checkpoint of a different run is refused.
        write: whether this worker writes checkpoints.
        max_to_keep: checkpoints kept.
    """

    def __init__(self, directory: str, model, run: str, write: bool = True, max_to_keep: int = 2):
        super().__init__()
        self.directory = directory
        self.run = run
        self.write = write
        self._model = model
        names = ("user_factors", "item_factors", "user_bias", "item_bias")
        self._copies = {name: tf.Variable(tf.zeros(getattr(model, name).shape), name=name) for name in names}
        self._sweep = tf.Variable(0, dtype=tf.int64)
        self._run = tf.Variable("")
        self._history = tf.Variable("")  # JSON of ``history``
        self.history: dict[str, list[float]] = {}
        self._checkpoint = tf.train.Checkpoint(**self._copies, sweep=self._sweep, run=self._run, history=self._history)
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=max_to_keep)

    def restore(self, num_iters: int) -> int:
        """Loads the latest checkpoint, if any, into the model; returns the sweeps it holds (0 without one).

        Raises:
            ValueError: the checkpoint cannot be read, was written by another program, belongs to another run
                (other data, split or hyperparameters) or is past ``num_iters``.
        """
        latest = self._manager.latest_checkpoint
        if latest is None:
            return 0
        try:
            reader = tf.train.load_checkpoint(latest)
        except (tf.errors.DataLossError, tf.errors.NotFoundError) as err:
            raise ValueError(
                f"checkpoint {latest} cannot be read ({type(err).__name__}: {err.message.strip().splitlines()[0]}); "
                "use another --checkpoint-dir (or delete it) to start afresh"
            ) from None
        if not reader.has_tensor(_RUN_KEY):
            raise ValueError(
                f"checkpoint {latest} was not written by python -m trainer.task (it has no run record; it holds "
                f"{sorted(reader.get_variable_to_shape_map())[:4]}...); use another --checkpoint-dir (or delete it)"
            )
        saved = reader.get_tensor(_RUN_KEY).decode()
        if saved != self.run:
            raise ValueError(
                f"checkpoint {latest} was written by a run with other data, split or hyperparameters "
                f"({_differences(saved, self.run)}); use another --checkpoint-dir (or delete it) to start afresh"
            )
        if reader.has_tensor(_HISTORY_KEY):
            self._checkpoint.restore(latest).assert_consumed()
            self.history = json.loads(self._history.numpy().decode() or "{}")
        else:  # written before checkpoints held the history: everything else, and the history from here on
            older = tf.train.Checkpoint(**self._copies, sweep=self._sweep, run=self._run)
            older.restore(latest).assert_consumed()
        sweeps = int(self._sweep.numpy())
        if sweeps > num_iters:
            raise ValueError(
                f"`num_iters` should be >= the {sweeps} sweeps in {latest}. Received: num_iters={num_iters}"
            )
        for name, copy in self._copies.items():
            getattr(self._model, name).assign(copy)
        logger.info("resuming from %s after sweep %d of %d", latest, sweeps, num_iters)
        return sweeps

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(np.ravel(value)[0]))
        if not self.write:
            return
        for name, copy in self._copies.items():
            copy.assign(getattr(self._model, name).value)
        self._sweep.assign(epoch + 1)
        self._run.assign(self.run)
        self._history.assign(json.dumps(self.history))
        self._manager.save(checkpoint_number=epoch + 1)
