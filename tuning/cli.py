"""The command line of ``python -m tuning.search``, importable without TensorFlow (``--help`` and a bad flag answer
at once).

- ``build_parser``: the search's own flags (``SearchConfig``), then the trainer's (``trainer.cli``), so that a
  search takes the data, output and fixed-hyperparameter flags of ``python -m trainer.task``.
- ``parse``: (SearchConfig, TaskConfig, WALSConfig, fixed) from the flags, resolved as the trainer resolves them
  (``trainer.cli.resolve_configs``); flags that mean nothing to a search (``REFUSED``) exit with status 2.
- ``retrain_task`` / ``trainer_command``: the trainer run that retrains the best trial, and its command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from trainer import cli, flags
from trainer.config import TaskConfig
from wals2.config import WALSConfig

ALGORITHMS = ("random", "bayesian", "hyperband")
#: The data defaults of a search that differ from the trainer's: the objective needs a validation part.
TASK_DEFAULTS = {"validation_fraction": 0.1}
#: Trainer flags that a search refuses, with the reason (``TaskConfig`` field -> message).
REFUSED = {
    "hypertune": "a search is not a trial of a Vertex AI tuning job: it runs its own trials with keras-tuner "
    "(tune with `python -m trainer.task --hypertune` under Vertex AI instead)",
    "use_optimized": "the presets set only hyperparameters that the search varies; fix one by giving it, "
    "e.g. --latent_factors=20",
    "collective_timeout": "the search and its retrain run in one process; a distributed search is "
    "set up with KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT",
}
#: Where the best trial's retrain writes when neither --job-dir / --output-dir nor $AIP_MODEL_DIR say.
BEST_MODEL_DIR = "best_model"


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Options of one search (the data flags come from ``TaskConfig``, fixed hyperparameters from ``WALSConfig``)."""

    algorithm: str = dataclasses.field(
        default="bayesian",
        metadata={
            "help": "keras-tuner algorithm: random, bayesian or hyperband.",
            "flag": "--algorithm",
            "choices": ALGORITHMS,
        },
    )
    max_trials: int = dataclasses.field(
        default=20,
        metadata={
            "help": "Trials to run (random, bayesian); Hyperband's budget is set by --num_iters.",
            "flag": "--max-trials",
        },
    )
    directory: str = dataclasses.field(
        default="tuning_runs",
        metadata={"help": "Directory of the search projects (local or gs://).", "flag": "--directory"},
    )
    project_name: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Project name (default <dataset>-<mode>-<algorithm>).", "flag": "--project-name"},
    )
    overwrite: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "Delete an existing project instead of resuming it (a project of other search settings is "
            "never resumed).",
            "flag": "--overwrite",
        },
    )

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"`algorithm` should be one of {ALGORITHMS}. Received: algorithm={self.algorithm!r}")
        if isinstance(self.max_trials, bool) or not isinstance(self.max_trials, int) or self.max_trials < 1:
            raise ValueError(f"`max_trials` should be a positive integer. Received: max_trials={self.max_trials!r}")


#: Help texts of the trainer flags whose meaning differs in a search (``TaskConfig`` field -> help).
SEARCH_HELP = {
    "job_dir": "Where the best trial's retrain writes model/, config.json and metrics.json, as python -m "
    f"trainer.task does (default: the parent of $AIP_MODEL_DIR, else <directory>/<project>/{BEST_MODEL_DIR}).",
    "checkpoint_dir": "The retrain's per-sweep checkpoints go to <checkpoint-dir>/trial_<best trial> (default "
    "$AIP_CHECKPOINT_DIR, else <output-dir>/checkpoints).",
    "tensorboard_log_dir": "TensorBoard logs: each trial's scalars and hyperparameters (HParams) in "
    "<dir>/<trial>/execution0, the best trial's retrain in <dir>/best_trial_<trial> (default "
    "$AIP_TENSORBOARD_LOG_DIR, else <directory>/<project>/logs).",
    "validation_fraction": "Fraction of ratings held out as the validation set, on which the objective is "
    "measured; the retrain of the best trial trains on it too.",
    "top_k": "k of the objective NDCG@k in the implicit mode and of the retrain's ranking metrics.",
}


def build_parser() -> argparse.ArgumentParser:
    """The search's flags, then the trainer's data, output and hyperparameter flags (help and defaults as the
    search applies them; the ``REFUSED`` ones hidden)."""
    parser = argparse.ArgumentParser(
        prog="python -m tuning.search",
        description="keras-tuner search over WALS hyperparameters on a validation split, then a retrain of the "
        "best trial through python -m trainer.task's pipeline.",
    )
    flags.add_flags(parser, SearchConfig, "search")
    flags.add_flags(parser, TaskConfig, "data and outputs (as in python -m trainer.task)", defaults=TASK_DEFAULTS)
    flags.add_flags(
        parser,
        WALSConfig,
        "fixed hyperparameters (--mode selects the objective and search space; a searched one given here is fixed)",
    )
    for action in parser._actions:
        if action.dest in REFUSED:
            action.help = argparse.SUPPRESS
        elif action.dest in SEARCH_HELP and action.help != argparse.SUPPRESS:
            own = _field(TaskConfig, action.dest)
            field = dataclasses.field(default=own.default, metadata={"help": SEARCH_HELP[action.dest]})
            action.help = flags.help_text(field, TASK_DEFAULTS.get(action.dest, dataclasses.MISSING)).replace("%", "%%")
    return parser


def _field(cls, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def parse(argv: list[str] | None, parser: argparse.ArgumentParser | None = None):
    """(SearchConfig, TaskConfig, WALSConfig, fixed) of ``argv``, where ``fixed`` names the hyperparameters given
    explicitly (kept out of the search space). A bad flag, or one of ``REFUSED``, exits with status 2."""
    parser = parser or build_parser()
    namespace = parser.parse_args(argv)
    cli.configure_logging(getattr(namespace, "verbose_logging", False))
    refused = sorted(  # the trainer's default is accepted (--hypertune=false), anything else is refused
        name for name, value in vars(namespace).items() if name in REFUSED and value != _field(TaskConfig, name).default
    )
    if refused:
        name = refused[0]
        parser.error(f"{flags.flag_name(_field(TaskConfig, name))} is not accepted by a search: {REFUSED[name]}.")
    try:
        search = SearchConfig(**flags.given(namespace, SearchConfig))
        for name, value in TASK_DEFAULTS.items():
            if not hasattr(namespace, name):
                setattr(namespace, name, value)
        task, base, _ = cli.resolve_configs(namespace)
        if task.validation_fraction <= 0:
            raise ValueError(
                "`validation_fraction` should be > 0 for a search: the objective is measured on it. "
                f"Received: validation_fraction={task.validation_fraction!r}"
            )
    except ValueError as err:
        parser.error(str(err))
    return search, task, base, frozenset(flags.given(namespace, WALSConfig))


def retrain_task(
    task: TaskConfig, job_dir: str | None, checkpoint_dir: str | None, tensorboard_log_dir: str | None = None
) -> TaskConfig:
    """The trainer's options that retrain the best trial: the search's data and outputs with no validation part
    (it trains on train + validation; the test part is drawn first, so it is the one the search left alone)."""
    return dataclasses.replace(
        task,
        validation_fraction=0.0,
        job_dir=job_dir,
        checkpoint_dir=checkpoint_dir,
        tensorboard_log_dir=tensorboard_log_dir,
    )


def changed_argv(config) -> list[str]:
    """The flags of ``config`` (a ``TaskConfig`` or ``WALSConfig``) whose values differ from the defaults."""
    defaults = set(flags.to_argv(type(config)()))
    return [arg for arg in flags.to_argv(config) if arg not in defaults]


#: ``TaskConfig`` fields that say where a run writes, left out of the reproducing command.
_OUTPUT_FIELDS = ("job_dir", "output_dir", "checkpoint_dir", "tensorboard_log_dir")


def trainer_command(task: TaskConfig, config: WALSConfig) -> str:
    """``python -m trainer.task ...`` that trains ``config`` on the data of ``task`` (without the output flags:
    add ``--job-dir``), as a shell command line."""
    task = dataclasses.replace(task, **dict.fromkeys(_OUTPUT_FIELDS))
    return shlex.join(["python", "-m", "trainer.task", *changed_argv(task), *changed_argv(config)])
