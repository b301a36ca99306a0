"""``python -m pipeline.local``: the retraining pipeline on one machine.

GA export (Parquet, CSV or JSON lines) -> the extraction query on DuckDB -> web_views CSV -> ``python -m
trainer.task --data-type web_views --use-optimized`` -> the gate (``pipeline.gate``) against the highest version
-> ``<models-dir>/<name>/<version+1>/``: the content of the trainer's ``model/`` directory (SavedModel at the
version's root, TF1's .npy files) plus its ``metrics.json`` and ``config.json``. The version is staged and
renamed into place; a failed step or a gate rejection writes no version.

The incumbent (the highest version with a ``metrics.json``) is read before training; staging directories left by
a killed run are swept first; a version number is never reused (``pipeline.versions``). SIGTERM ends the trainer
child and removes the temporary directory (exit 143).

Exit status: 0 a new version was written, 3 the gate rejected the model, 1 an error (the message says which
step), 143 ended by SIGTERM. Flags after ``--`` go to the trainer.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

from pipeline import gate, query, versions
from trainer import extras, logs

logger = logging.getLogger("pipeline.local")

REJECTED = 3
TERMINATED = 128 + signal.SIGTERM
CHILD_STOP_S = 30


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, so that no ``except Exception`` step swallows it)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def run_child(command: list[str]) -> int:
    """Runs ``command`` and returns its exit status; if this process is interrupted meanwhile (SIGTERM, Ctrl-C),
    the child is terminated (killed after ``CHILD_STOP_S``) before the interruption goes on."""
    child = subprocess.Popen(command)
    try:
        return child.wait()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=CHILD_STOP_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


#: What the pipeline always passes the trainer; a held-out validation set gives the gate its metric.
TRAINER_FLAGS = ("--data-type", "web_views", "--use-optimized", "--validation-fraction", "0.1")
#: Trainer flags the pipeline sets itself, so they cannot follow ``--``.
OWN_FLAGS = ("--train-file", "--job-dir", "--output-dir", "--data-type", "--gcs-bucket", "--dataset")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.local",
        description="Query a GA export, train, gate, and write the next model version.",
        epilog="Flags after -- go to python -m trainer.task, e.g. -- --num_iters 10 --latent_factors 20.",
    )
    parser.add_argument("--export", required=True, help=f"GA sessions export, one of {query.EXPORT_FORMATS}")
    parser.add_argument("--models-dir", required=True, help="versions go to <models-dir>/<name>/<version>/")
    parser.add_argument("--name", default="wals2", help="model name (default wals2)")
    parser.add_argument(
        "--custom-dimension",
        type=int,
        default=query.DEFAULT_CUSTOM_DIMENSION,
        help=f"hit-level custom dimension holding the content id (default {query.DEFAULT_CUSTOM_DIMENSION})",
    )
    parser.add_argument("--start-date", default=query.FIRST_DATE, help="first date, YYYYMMDD (default: all)")
    parser.add_argument("--end-date", default=query.LAST_DATE, help="last date, YYYYMMDD, inclusive (default: all)")
    gate.add_rule_flags(parser)
    parser.add_argument("--work-dir", help="keep the web_views CSV and the training job here (default: a temp dir)")
    return parser


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(pipeline flags, trainer flags): the trainer's come after ``--``."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


def check_trainer_flags(flags: list[str]) -> None:
    """Raises ValueError for a trainer flag that the pipeline sets itself."""
    for flag in flags:
        name = flag.split("=", 1)[0]
        if name in OWN_FLAGS:
            raise ValueError(f"trainer flag {name} is set by the pipeline; remove it after --. Received: {flag!r}")


def check_metric_k(metric: str, flags: list[str]) -> None:
    """Raises ValueError for a ranking ``metric`` at a k other than the trainer's ``--top-k`` (the one k its
    ``metrics.json`` holds), read from ``flags`` by the trainer's own parser, so that the gate's metric is known to
    exist before the training. A flag the trainer's parser refuses is left to the trainer's step."""
    from trainer import cli  # the standard library only
    from trainer.config import TaskConfig

    wanted = re.search(r"@(\d+)$", metric)
    if wanted is None:
        return
    parser = cli.build_parser()
    parser.exit_on_error = False
    try:
        top_k = getattr(parser.parse_known_args(flags)[0], "top_k", TaskConfig.top_k)  # only given flags are set
    except argparse.ArgumentError:
        return
    if int(wanted.group(1)) != top_k:
        raise ValueError(
            f"`--metric` {metric} is at k = {wanted.group(1)}, while the trainer's metrics.json holds k = {top_k} "
            f"(its --top-k; pass -- --top-k {wanted.group(1)}). Received: metric={metric!r}"
        )


def train(train_file: str, job_dir: str, extra: list[str]) -> None:
    """Runs ``python -m trainer.task`` (its public command line) on the web_views CSV, output in ``job_dir``.

    Raises:
        RuntimeError: the trainer exited with a non-zero status.
    """
    command = [sys.executable, "-m", "trainer.task", *TRAINER_FLAGS, "--train-file", train_file, "--job-dir", job_dir]
    command += extra
    logger.info("train: python %s", " ".join(command[1:]))
    status = run_child(command)
    if status != 0:
        raise RuntimeError(f"the trainer exited with status {status} (its log is above): {' '.join(command[1:])}")


def run(args: argparse.Namespace, trainer_flags: list[str], work: str) -> int:
    """The flow's steps in ``work``; returns the exit status."""
    base = os.path.join(args.models_dir, args.name)
    versions.sweep(base)
    incumbent = _incumbent(base)  # before training: a problem with it shows at once, not after the training
    frame = query.web_views(
        args.export, custom_dimension_index=args.custom_dimension, start_date=args.start_date, end_date=args.end_date
    )
    train_file = os.path.join(work, "web_views.csv")
    query.write_web_views(frame, train_file)
    job_dir = tempfile.mkdtemp(prefix="job-", dir=work)  # fresh, so no earlier run's checkpoints are resumed
    train(train_file, job_dir, trainer_flags)

    candidate = gate.read_metrics(os.path.join(job_dir, "metrics.json"))
    decision = gate.decide(candidate, incumbent, args.metric, args.threshold, args.tolerance)
    if not decision.passed:
        logger.warning("gate failed: %s; no version written", decision.reason)
        return REJECTED
    logger.info("gate passed: %s", decision.reason)

    staged = versions.stage(base)
    try:
        shutil.copytree(os.path.join(job_dir, "model"), staged, dirs_exist_ok=True)
        for name in ("metrics.json", "config.json"):
            shutil.copy2(os.path.join(job_dir, name), os.path.join(staged, name))
        version = versions.publish(staged, base)
    except BaseException:
        versions.discard(staged)
        raise
    logger.info("wrote version %d: %s", version, os.path.join(base, str(version)))
    return 0


def _incumbent(base: str) -> dict | None:
    """The metrics of the highest version that has a ``metrics.json`` (None when none has: the first version)."""
    for version, directory in reversed(versions.directories(base).items()):
        metrics = gate.read_metrics(os.path.join(directory, "metrics.json"), missing_ok=True)
        if metrics is not None:
            return metrics
        logger.warning("version %d has no metrics.json: the gate compares with the version below it", version)
    return None


def main(argv: list[str] | None = None) -> int:
    own, trainer_flags = split_argv(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(own)
    logs.configure()
    try:
        check_trainer_flags(trainer_flags)
        query.parameters(args.custom_dimension, args.start_date, args.end_date)
        gate.higher_is_better(args.metric)
        check_metric_k(args.metric, trainer_flags)
        if args.name in ("", ".", "..") or set(args.name) & set("/\\"):
            raise ValueError(
                f"`--name` should be one directory name under --models-dir (no '/', not '.' or '..'). "
                f"Received: {args.name!r}"
            )
    except ValueError as err:
        parser.error(str(err))
    try:
        import duckdb  # noqa: F401  (the query's, checked before any work)
    except ModuleNotFoundError as err:
        logger.error("%s", extras.missing(err, "python -m pipeline.local"))
        return 1
    work = args.work_dir or tempfile.mkdtemp(prefix="wals2-pipeline-")
    os.makedirs(work, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(args, trainer_flags, work)
    except (OSError, RuntimeError, ValueError) as err:
        logger.error("%s", err)
        return 1
    except Terminated:
        logger.error("SIGTERM: the trainer was stopped and no version written")
        return TERMINATED
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
