"""TensorBoard scalars of a run, written through ``tf.summary`` (so ``gs://`` log directories work)."""

from __future__ import annotations

import keras
import tensorflow as tf


class SweepSummaries(keras.callbacks.Callback):
    """Per sweep: ``train/rmse``, ``<heldout>/rmse`` (validation, or test without one), ``train/loss`` with
    ``compute_loss`` and ``sweep_seconds``; ``write_final`` adds the final metrics at the last sweep. Each tag is
    written once per step: a final metric already written at that step by the last sweep is not written again.

    Args:
        log_dir: the event file directory.
        heldout: the name of the set behind Keras' ``val_rmse``.
        seconds: a list that holds each sweep's seconds (the trainer's ``SweepLog.seconds``).
    """

    def __init__(self, log_dir: str, heldout: str, seconds: list[float]):
        super().__init__()
        self.heldout = heldout
        self.seconds = seconds
        self.log_dir = log_dir
        self._writer = None  # created by the first write, so that a run failing before it leaves no event file
        self._written: dict[str, int] = {}  # tag -> the last step it was written at

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        logs = {name: float(tf.reshape(value, [-1])[0]) for name, value in logs.items()}
        scalars = {"train/rmse": logs.get("rmse"), f"{self.heldout}/rmse": logs.get("val_rmse")}
        scalars["train/loss"] = logs.get("loss")
        scalars["sweep_seconds"] = self.seconds[-1] if self.seconds else None
        self._write(scalars, epoch + 1)

    def write_final(self, metrics: dict[str, float | None], step: int) -> None:
        """Writes ``{"test/ndcg@10": ..., ...}`` at ``step``, but for the tags the sweep at ``step`` wrote (the
        last sweep's ``train/rmse`` and held-out RMSE), and closes the writer."""
        self._write({tag: value for tag, value in metrics.items() if self._written.get(tag) != step}, step)
        self._writer.close()

    def _write(self, scalars, step):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=step):
            for tag, value in scalars.items():
                if value is not None:
                    tf.summary.scalar(tag, float(value))
                    self._written[tag] = step
        self._writer.flush()
