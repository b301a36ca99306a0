"""``python -m tuning.search``: keras-tuner search over WALS hyperparameters on a validation split.

The objective is the validation RMSE (tf1 and explicit modes) or the validation NDCG@``--top-k`` (implicit mode);
the test set is never seen by the search. Each trial fits a ``WALSModel`` (one Keras epoch = one sweep); Hyperband
maps its epoch budget to sweeps and warm-starts a trial from its parent trial's saved factors. Trials that
diverge fail (``FailedTrialError``) without stopping the search. Each trial's TensorBoard scalars and
hyperparameters (keras-tuner's HParams) go under ``--tensorboard-log-dir``. At the end the chief writes the
results table, retrains the best trial's configuration on train + validation through ``python -m trainer.task``'s
job pipeline (``model/``, ``config.json``, ``metrics.json`` under ``--job-dir``), prints the trainer command that
reproduces it and writes ``best_hyperparameters.json``. An interrupted search resumes from its project directory
when its settings are the same (``tuning.settings``; pass ``--overwrite`` to start over).

Distributed search uses keras-tuner's own protocol: set ``KERASTUNER_TUNER_ID`` (``chief`` for the oracle, then
``tuner0``, ``tuner1``, ...), ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` on every process, with one
shared ``--directory``.

The flags are parsed before TensorFlow is imported (``tuning.cli``), so ``--help`` and a bad flag answer at once.
"""

from __future__ import annotations

import os

from trainer import environment  # noqa: E402  (the standard library only)

environment.set_defaults()  # before TensorFlow's import

import logging  # noqa: E402
import sys  # noqa: E402

from trainer import extras, paths  # noqa: E402  (no TensorFlow)
from trainer.cli import configure_logging, input_path  # noqa: E402  (no TensorFlow)
from tuning.cli import TASK_DEFAULTS, build_parser, parse  # noqa: E402, F401  (no TensorFlow)
from tuning.space import objective, search_space  # noqa: E402, F401  (no TensorFlow)


def is_chief(environ=os.environ) -> bool:
    """True unless this process is a keras-tuner worker (``KERASTUNER_TUNER_ID`` other than ``chief``)."""
    if "KERASTUNER_ORACLE_IP" not in environ:
        return True
    return environ.get("KERASTUNER_TUNER_ID", "").startswith("chief")


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv`` and runs the search; returns the exit status."""
    search, task, base, fixed = parse(argv)
    configure_logging(task.verbose_logging)
    try:  # a missing ratings file fails before TensorFlow's import
        paths.check_local(input_path(task), None)
    except (OSError, ValueError) as err:
        logging.getLogger("tuning.search").error("%s", err)
        return 1
    try:
        from tuning import job  # TensorFlow and keras-tuner, once the flags are known to be good
    except ModuleNotFoundError as err:
        logging.getLogger("tuning.search").error("%s", extras.missing(err, "python -m tuning.search"))
        return 1

    return job.run(search, task, base, fixed, chief=is_chief())


if __name__ == "__main__":
    sys.exit(main())
