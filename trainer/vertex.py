"""The Vertex AI custom-training contract: output directories, the chief, and hyperparameter-tuning reports.

- Directories: ``--output-dir``, else ``--job-dir`` (TF1; under ``--hypertune``, ``--job-dir/<trial>``) win;
  otherwise the outputs go to the parent of ``$AIP_MODEL_DIR`` with the model files in ``$AIP_MODEL_DIR`` itself;
  checkpoints default to ``$AIP_CHECKPOINT_DIR`` and TensorBoard scalars to ``$AIP_TENSORBOARD_LOG_DIR``.
- Role: ``trainer.cluster.role`` (the chief writes).
- Tuning: ``cloudml-hypertune`` records the validation metric after every sweep under the tag that is the
  ``metricId`` of the tuning job spec (``hypertune_metric``): ``val_rmse`` (MINIMIZE), or in a mode judged by
  ranking (implicit feedback) ``val_ndcg@<k>`` (MAXIMIZE), NDCG@``--top-k``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import time
from collections.abc import Mapping

import keras

from wals2.metrics import direction as metric_direction

logger = logging.getLogger(__name__)

#: ``hyperparameter_metric_tag`` of the RMSE reports; the tuning job's ``metricId`` (goal MINIMIZE).
HPT_METRIC_TAG = "val_rmse"


def hypertune_metric(mode, top_k: int) -> tuple[str, str]:
    """(tag, goal) of ``--hypertune`` in ``mode`` (a ``wals2.modes.Mode``): the validation NDCG@k where the mode
    is judged by ranking, else the validation RMSE. The tag is the Keras log key it reports."""
    key = f"val_ndcg@{top_k}" if mode.ranked else HPT_METRIC_TAG
    return key, {"max": "MAXIMIZE", "min": "MINIMIZE"}[metric_direction(key)]


@dataclasses.dataclass(frozen=True)
class Dirs:
    """Where a run writes: ``output`` (staged: ``model_entry``, config.json, metrics.json), checkpoints, logs."""

    output: str
    model_entry: str
    checkpoints: str
    logs: str
    chosen: bool = True  # False for the default jobs/<timestamp>, which a rerun does not find again

    @property
    def model(self) -> str:
        return posixpath.join(self.output, self.model_entry)


def resolve_dirs(task, this, environ: Mapping[str, str] = os.environ) -> Dirs:
    """Output, model, checkpoint and log directories of a run (precedence in the module docstring).

    With ``--hypertune`` and a trial id, as in TF1, the output is ``--job-dir/<trial>`` (``--output-dir`` is used
    only without ``--job-dir``, with the trial appended too), so that trials do not collide; ``$AIP_MODEL_DIR`` is
    already per trial and is used as is.
    """
    # As TF1: a tuning trial writes to --job-dir/<trial>, ignoring --output-dir.
    explicit = (task.job_dir or task.output_dir) if task.hypertune and this.trial else task.output_dir or task.job_dir
    model_entry = "model"
    if explicit:
        output = explicit.rstrip("/") or explicit
        if task.hypertune and this.trial:
            output = posixpath.join(output, this.trial)
    elif environ.get("AIP_MODEL_DIR"):
        model_dir = environ["AIP_MODEL_DIR"].rstrip("/")
        output, model_entry = posixpath.split(model_dir)
        if not output or not model_entry:
            raise ValueError(f"`AIP_MODEL_DIR` should name a directory below a parent. Received: {model_dir!r}")
    else:
        output = posixpath.join("jobs", time.strftime("%Y%m%d_%H%M%S"))
        if environ.get("CLUSTER_SPEC") and this.is_chief:  # on Vertex AI: the container's disk goes with the job
            logger.warning(
                "no --job-dir and no $AIP_MODEL_DIR (the job's base output directory): writing to %s on this "
                "machine's disk, which is lost when the job ends; pass --job-dir gs://BUCKET/PATH",
                output,
            )
    checkpoints = task.checkpoint_dir or environ.get("AIP_CHECKPOINT_DIR") or posixpath.join(output, "checkpoints")
    logs = task.tensorboard_log_dir or environ.get("AIP_TENSORBOARD_LOG_DIR") or posixpath.join(output, "logs")
    chosen = bool(explicit or environ.get("AIP_MODEL_DIR"))
    return Dirs(output, model_entry, checkpoints.rstrip("/"), logs.rstrip("/"), chosen)


class HypertuneReport(keras.callbacks.Callback):
    """Reports the log ``key`` after every sweep (``global_step`` = sweep) through ``cloudml-hypertune``, under
    the same name as its tag (``hypertune_metric``).

    Reporting every sweep lets a tuning job with ``measurementSelectionType: BEST_MEASUREMENT`` use the best sweep.
    """

    def __init__(self, key: str = HPT_METRIC_TAG):
        super().__init__()
        self.key = key
        try:
            import hypertune
        except ImportError as err:
            raise ImportError("--hypertune needs cloudml-hypertune: pip install 'wals2[vertex]'") from err
        self._reporter = hypertune.HyperTune()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.key)
        if value is not None:
            self._reporter.report_hyperparameter_tuning_metric(
                hyperparameter_metric_tag=self.key, metric_value=float(value), global_step=epoch + 1
            )
