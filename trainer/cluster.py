"""The job's cluster, parsed once: this task's role, the workers, the strategy and the time limits.

``TF_CONFIG`` (or Vertex AI's ``CLUSTER_SPEC``: ``workerpool0`` is the chief, ``workerpool1`` the workers) with
more than one chief/worker task makes a multi-worker job: every chief and worker trains, on a
``tf.distribute.MultiWorkerMirroredStrategy`` whose collectives wait at most ``--collective-timeout`` seconds.
Anything else (no cluster, one task, or an evaluator / parameter-server task) is a one-worker job on the default
strategy, in which only the chief trains and writes.

Failure is bounded: ``Watchdog`` ends the process when the cluster has not formed within the timeout (a chief
that is not listening), and ``exit_on_sigterm`` makes SIGTERM end the process within a second, even while the
main thread waits inside TensorFlow for a peer (TensorFlow's own SIGTERM handler would otherwise swallow it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping

logger = logging.getLogger(__name__)

_POOLS = {"workerpool0": "chief", "workerpool1": "worker"}
#: Exit status after SIGTERM, as a shell reports a process ended by it.
SIGTERM_STATUS = 128 + signal.SIGTERM


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This task's place in the job.

    Attributes:
        role: ``vertex.Role`` (task type, index, trial, chief).
        tf_config: the ``TF_CONFIG`` of the chief/worker tasks of a multi-worker job, else None.
        workers: the number of training workers (1 without a multi-worker cluster).
    """

    role: vertex.Role  # noqa: F821 (imported where needed)
    tf_config: dict | None = None
    workers: int = 1

    @property
    def trains(self) -> bool:
        """Whether this task trains: every worker of a multi-worker job, else only the chief."""
        return self.tf_config is not None or self.role.is_chief


def from_environ(environ: Mapping[str, str] = os.environ) -> Cluster:
    """The ``Cluster`` of ``TF_CONFIG`` / ``CLUSTER_SPEC`` (see the module docstring).

    Raises:
        ValueError: a variable that is not a JSON object.
    """
    from trainer import vertex  # imports Keras: not at module level (see ``exit_on_sigterm``)

    role = vertex.role(environ)
    for name in ("TF_CONFIG", "CLUSTER_SPEC"):
        text = environ.get(name, "").strip()
        if not text:
            continue
        spec = json.loads(text)  # vertex.role has checked that it is a JSON object
        task, cluster = spec.get("task") or {}, spec.get("cluster") or {}
        if name == "CLUSTER_SPEC":
            cluster = {_POOLS[pool]: hosts for pool, hosts in cluster.items() if pool in _POOLS}
            task = {**task, "type": _POOLS.get(task.get("type"), task.get("type"))}
        workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
        if workers > 1 and task.get("type") in ("chief", "worker"):  # evaluators and ps take no part
            tf_config = {"cluster": {k: cluster[k] for k in ("chief", "worker") if k in cluster}, "task": task}
            return Cluster(role, tf_config, workers)
        return Cluster(role)
    return Cluster(role)


def strategy(cluster: Cluster, timeout: float):
    """The job's ``tf.distribute`` strategy: ``MultiWorkerMirroredStrategy`` for a multi-worker cluster (every
    collective bounded by ``timeout`` seconds), else the default strategy."""
    import tensorflow as tf

    if cluster.tf_config is None:
        return tf.distribute.get_strategy()
    os.environ["TF_CONFIG"] = json.dumps(cluster.tf_config)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


class Watchdog:
    """Ends the process with status 1 and ``message`` unless ``cancel()`` is called within ``seconds``."""

    def __init__(self, seconds: float, message: str):
        self._timer = threading.Timer(seconds, self._expire, args=(message,))
        self._timer.daemon = True
        self._timer.start()

    @staticmethod
    def _expire(message: str) -> None:
        logger.error("%s", message)
        logging.shutdown()
        os._exit(1)

    def cancel(self) -> None:
        self._timer.cancel()


def exit_on_sigterm() -> None:
    """Makes SIGTERM end the process (status ``SIGTERM_STATUS``) with one log line, whatever the main thread does.

    SIGTERM is blocked in this thread, so in every thread started after it (call this before importing anything
    that starts threads), and a daemon thread takes it with ``sigwait``: no handler that TensorFlow installs later
    can swallow it, and a main thread blocked in a collective does not delay it.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait():
        signal.sigwait({signal.SIGTERM})
        logger.error("received SIGTERM: stopping (a rerun resumes from the last checkpoint)")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(SIGTERM_STATUS)

    threading.Thread(target=wait, name="sigterm", daemon=True).start()
