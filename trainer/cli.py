"""The trainer's command line and inputs, shared by ``trainer.task`` and ``tuning.search``.

- ``build_parser``: the flags, generated from ``trainer.config.TaskConfig`` and ``wals2.WALSConfig``.
- ``resolve_configs`` / ``parse``: (TaskConfig, WALSConfig, preset) from the flags, ``--use-optimized`` applied.
- ``load_part``: this worker's part of the input (``--train-file``, ``--dataset`` or the bundled latest-small);
  with one worker, the whole input.

The parser and the config resolution import no TensorFlow, so that ``--help`` and a bad flag answer at once;
the loaders and ``describe`` import the library's TensorFlow modules when they are called.
"""

from __future__ import annotations

import argparse
import logging
import posixpath
from typing import TYPE_CHECKING

from trainer import flags, paths, presets
from trainer.config import TaskConfig
from wals2.config import LOG_RATINGS, WALSConfig

if TYPE_CHECKING:
    from wals2 import data
    from wals2.collectives import Collectives

logger = logging.getLogger(__name__)


def build_parser(prog: str = "python -m trainer.task", description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or "Train a weighted-ALS recommender (TF1 WALS semantics) and write its factors.",
    )
    flags.add_flags(parser, TaskConfig, "job")
    flags.add_flags(parser, WALSConfig, "hyperparameters (TF1 names; --name=value works)")
    return parser


def resolve_configs(namespace: argparse.Namespace):
    """(TaskConfig, WALSConfig, preset name or None) from parsed flags.

    ``--use-optimized`` starts from the mode's preset (TF1's tuned values in the tf1 mode); unlike TF1,
    hyperparameters given explicitly win over the preset. ``--data-type web_views`` uses the power-law item weights
    (wt_type 0), as TF1 forced.
    """
    task = TaskConfig(**flags.given(namespace, TaskConfig))
    explicit = flags.given(namespace, WALSConfig)
    values: dict = {}
    preset = None
    if task.use_optimized:
        mode = explicit.get("mode", WALSConfig.mode)
        dataset = presets.identify(task.dataset, input_path(task)) if mode in presets.TUNED else None
        preset, tuned = presets.preset(mode, task.data_type, dataset)
        logger.info("--use-optimized: the %s preset %s", preset, tuned)
        values.update(tuned)
        overridden = sorted(set(values) & set(explicit))
        if overridden:
            logger.warning("explicit flags override the %s preset for: %s", preset, ", ".join(overridden))
    if task.data_type == "web_views":
        if explicit.get("wt_type", LOG_RATINGS) not in (LOG_RATINGS, "log", "0"):
            logger.warning("--data-type web_views uses wt_type 0 (power law), as TF1 did; ignoring --wt_type")
        explicit["wt_type"] = LOG_RATINGS
    values.update(explicit)
    return task, WALSConfig(**values), preset


def parse(argv: list[str] | None, parser: argparse.ArgumentParser | None = None):
    """(TaskConfig, WALSConfig, preset) of ``argv``; a bad flag value exits with status 2 and the reason."""
    parser = parser or build_parser()
    namespace = parser.parse_args(argv)
    # The job's log stream from here on, for the preset lines of resolve_configs.
    configure_logging(getattr(namespace, "verbose_logging", False))
    try:
        return resolve_configs(namespace)
    except ValueError as err:
        parser.error(str(err))


def configure_logging(verbose: bool = False) -> None:
    """The entry points' one log stream (:func:`trainer.logs.configure`)."""
    from trainer import logs

    logs.configure(verbose)


def describe(config: WALSConfig) -> str:
    """The hyperparameters that matter in ``config.mode``, for the log."""
    from wals2.modes import mode_of

    specific = mode_of(config).hyperparameters
    fields = ["mode", "latent_factors", "num_iters", "regularization", *specific, "solver", "init", "seed"]
    text = ", ".join(f"{f}={getattr(config, f)}" for f in fields)
    return text.replace(f"wt_type={config.wt_type}", f"wt_type={config.wt_type} ({config.wt_type_name})")


def input_path(task: TaskConfig) -> str | None:
    """``--train-file`` joined onto ``--gcs-bucket``, or None."""
    if task.train_file is None:
        return None
    return posixpath.join(task.gcs_bucket, task.train_file) if task.gcs_bucket else task.train_file


def load_part(task: TaskConfig, collectives: Collectives | None = None) -> data.Ratings:
    """This worker's part of the input, with its own vocabularies (``wals2.sharding`` makes them global).

    A text file (``--train-file``, the bundled latest-small) is split by bytes into the workers' line ranges
    (``data.line_range``), with line numbers counted over the whole file; a TFDS data set is loaded whole and each
    worker keeps its contiguous range of entries. With one worker this is the whole input. Every worker returns or
    raises together (``Collectives.check``).
    """
    import tensorflow as tf

    from wals2 import data, datasets
    from wals2.collectives import Collectives
    from wals2.engine import block_bounds

    collectives = collectives or Collectives()
    path = input_path(task)
    if task.data_type == "web_views" and path is None:
        raise ValueError("`--train-file` is required with --data-type web_views.")
    if path is None and task.dataset is not None and (task.dataset != "ml-latest-small" or task.data_dir):
        ratings, error = None, None
        try:
            ratings = datasets.load_movielens(task.dataset, task.data_dir)
        except (ImportError, OSError, ValueError) as err:
            error = err
        collectives.check(error)
        bounds = block_bounds(ratings.nnz, collectives.count)
        return ratings.subset(slice(bounds[collectives.rank], bounds[collectives.rank + 1]))
    if path is None:
        path, delimiter, headers = data.bundled_path(), ",", True
    else:
        delimiter, headers = task.delimiter, task.headers or task.data_type == "web_views"
    text, error = None, None
    try:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(paths.missing_input(path))
        head, lines = data.line_range(path, collectives.rank, collectives.count, headers)
    except (OSError, ValueError) as err:
        error = err
    collectives.check(error)
    counts = collectives.sizes(lines.count(b"\n") + (1 if lines and not lines.endswith(b"\n") else 0))
    text = data.TextRange(head + lines, 1 + int(bool(head)) + int(counts[: collectives.rank].sum()))
    part, error = None, None
    try:
        if collectives.count > 1 and not lines.strip():  # a worker whose byte range holds no line
            part = _empty(task.data_type == "web_views", path)
        elif task.data_type == "web_views":
            part = data.read_web_views(path, text)
        else:
            part = data.read_ratings(path, delimiter=delimiter, headers=headers, text=text)
    except (OSError, ValueError) as err:
        error = err
    collectives.check(error)
    return part


def load_share(task: TaskConfig, seed: int, collectives: Collectives):
    """``load_part``, then ``wals2.sharding.distribute``: this worker's ``Distributed`` train / validation / test
    split of the input (the split seeded by ``seed``), with global vocabularies."""
    from wals2 import sharding

    part = load_part(task, collectives)
    return sharding.distribute(
        part,
        collectives,
        task.validation_fraction,
        task.test_fraction,
        seed,
        task.split,
        aggregate=task.data_type == "web_views",
    )


def _empty(string_ids: bool, source: str) -> data.Ratings:
    import numpy as np

    from wals2 import data

    ids = np.zeros(0, str if string_ids else np.int64)
    empty = np.zeros(0, np.int32)
    return data.Ratings(empty, empty, np.zeros(0, np.float32), ids, ids, source)
