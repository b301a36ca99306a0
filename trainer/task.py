"""``python -m trainer.task``: train WALS on MovieLens (TFDS or the bundled latest-small) or a ratings file like TF1.

Prints one line per sweep (seconds, train RMSE, validation or test RMSE) and a summary with ranking metrics,
then writes under the output directory: ``model/`` (the serving SavedModel and TF1's ``.npy`` factor files, with
real index -> id maps), ``config.json`` and ``metrics.json``. Everything is written to a staging directory first
and committed at the end, so a failed run leaves no partial output. The factors are checkpointed after every sweep
(a rerun of the same command resumes), TensorBoard scalars go to the log directory, and on Vertex AI only the chief
writes (``trainer.vertex``). With ``TF_CONFIG`` / ``CLUSTER_SPEC`` listing several chief/worker tasks, every one of
them runs this same command and they train together (``trainer.cluster``, ``trainer.job``).
"""

from __future__ import annotations

from trainer import environment  # the standard library only

environment.set_defaults()  # before TensorFlow's import

import sys  # noqa: E402

from trainer import cluster  # noqa: E402  (imports no TensorFlow)

if __name__ == "__main__" and cluster.needs_supervisor():
    sys.exit(cluster.supervise(sys.argv[1:]))

import logging  # noqa: E402

from trainer import cli, paths  # noqa: E402  (neither imports TensorFlow)

logger = logging.getLogger("trainer.task")


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv``, finds this task's role in the cluster and runs the job; returns the exit status."""
    task, config, preset = cli.parse(argv)
    cli.configure_logging(task.verbose_logging)
    try:  # local paths, before TensorFlow's import: a typo fails at once
        paths.check_local(cli.input_path(task), None if task.hypertune else task.output_dir or task.job_dir)
    except (OSError, ValueError) as err:
        logger.error("%s", err)
        return 1
    from trainer import job  # TensorFlow, once the flags and local paths are known to be good

    try:
        this = cluster.from_environ()
    except ValueError as err:
        logger.error("%s", err)
        return 1
    return job.run(task, config, preset, this)


if __name__ == "__main__":
    sys.exit(main())
