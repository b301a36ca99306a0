"""The job's cluster, parsed once: this task's role, the workers, the strategy and the time limits.

- Role: from ``TF_CONFIG`` (``task.type`` ``chief``/``master``; ``worker`` 0 when the cluster has no chief) or
  Vertex AI's ``CLUSTER_SPEC`` (``workerpool0`` is the chief, ``workerpool1`` the workers). No cluster at all is a
  chief. The chief writes the outputs.
- Workers: more than one chief/worker task makes a multi-worker job, in which every chief and worker trains, on a
  ``tf.distribute.MultiWorkerMirroredStrategy``. Anything else (no cluster, one task, or an evaluator /
  parameter-server task) is a one-worker job on the default strategy, in which only the chief trains.
- Time limits: joining the cluster, the data exchange and the shutdown barrier wait at most
  ``--collective-timeout`` seconds, then fail with an error; a peer that dies during the sweeps is found by the
  coordination service's heartbeats (``strategy``).
- SIGTERM: while a worker waits for its peers, the main thread sits inside TensorFlow, and TensorFlow's
  coordination agent installs a SIGTERM handler that only records the signal; ``supervise`` therefore runs a
  multi-worker task in a child process and ends it at once on SIGTERM.

This module imports no TensorFlow at import time: ``python -m trainer.task`` decides to supervise before it loads it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping

logger = logging.getLogger(__name__)

CHIEF_TYPES = ("chief", "master", "workerpool0")
_POOLS = {"workerpool0": "chief", "workerpool1": "worker"}
#: Set in the environment of a supervised child (``supervise``).
SUPERVISED = "WALS2_SUPERVISED_WORKER"
#: Exit status after SIGTERM, as a shell reports a process ended by it.
SIGTERM_STATUS = 128 + signal.SIGTERM
#: Exit status after Ctrl-C (SIGINT), likewise.
SIGINT_STATUS = 128 + signal.SIGINT


@dataclasses.dataclass(frozen=True)
class Role:
    """This task's place in the job: ``task_type`` None means a single-machine run (the chief)."""

    task_type: str | None = None
    task_index: int = 0
    trial: str | None = None
    is_chief: bool = True


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This task's place in the job.

    Attributes:
        role: ``Role`` (task type, index, trial, chief).
        tf_config: the ``TF_CONFIG`` of the chief/worker tasks of a multi-worker job, else None.
        workers: the number of training workers (1 without a multi-worker cluster).
    """

    role: Role
    tf_config: dict | None = None
    workers: int = 1

    @property
    def trains(self) -> bool:
        """Whether this task trains: every worker of a multi-worker job, else only the chief."""
        return self.tf_config is not None or self.role.is_chief


def _specs(environ: Mapping[str, str]):
    """(variable name, parsed JSON object) of ``TF_CONFIG`` / ``CLUSTER_SPEC``, the set ones, in that order."""
    for name in ("TF_CONFIG", "CLUSTER_SPEC"):
        text = environ.get(name, "").strip()
        if not text:
            continue
        try:
            spec = json.loads(text)
            if not isinstance(spec, dict):
                raise TypeError(type(spec).__name__)
        except (ValueError, TypeError) as err:
            raise ValueError(f"`{name}` should be a JSON object. Received: {name}={text[:200]!r} ({err})") from None
        yield name, spec


def role(environ: Mapping[str, str] = os.environ) -> Role:
    """The task's role from ``TF_CONFIG``, else ``CLUSTER_SPEC``; a chief when neither is set.

    Raises:
        ValueError: either variable is not a JSON object.
    """
    trial = environ.get("CLOUD_ML_TRIAL_ID") or None
    for _, spec in _specs(environ):
        task = spec.get("task") or {}
        task_type = task.get("type")
        if not task_type:
            continue
        index = int(task.get("index", 0))
        cluster = spec.get("cluster") or {}
        chief = task_type in CHIEF_TYPES or (
            task_type == "worker" and index == 0 and not any(c in cluster for c in CHIEF_TYPES)
        )
        trial = str(task["trial"]) if task.get("trial") not in (None, "") else trial
        return Role(task_type, index, trial, chief)
    return Role(trial=trial)


def from_environ(environ: Mapping[str, str] = os.environ) -> Cluster:
    """The ``Cluster`` of ``TF_CONFIG`` / ``CLUSTER_SPEC`` (see the module docstring).

    Raises:
        ValueError: a variable that is not a JSON object.
    """
    this = role(environ)
    for name, spec in _specs(environ):
        task, cluster = spec.get("task") or {}, spec.get("cluster") or {}
        if name == "CLUSTER_SPEC":
            cluster = {_POOLS[pool]: hosts for pool, hosts in cluster.items() if pool in _POOLS}
            task = {**task, "type": _POOLS.get(task.get("type"), task.get("type"))}
        workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
        if workers > 1 and task.get("type") in ("chief", "worker"):  # evaluators and ps take no part
            tf_config = {"cluster": {k: cluster[k] for k in ("chief", "worker") if k in cluster}, "task": task}
            return Cluster(this, tf_config, workers)
        return Cluster(this)
    return Cluster(this)


def strategy(cluster: Cluster, timeout: float):
    """The job's ``tf.distribute`` strategy: ``MultiWorkerMirroredStrategy`` for a multi-worker cluster, else the
    default strategy.

    Joining the cluster and the shutdown barrier at exit wait at most ``timeout`` seconds
    (``tf.errors.DeadlineExceededError`` after that); the host collectives take it too (``Collectives``). The
    sweep's own collectives have no timeout of their own: a collective with one starts a thread that sleeps for the
    timeout (about 20 per sweep), so short sweeps would pile up thousands; a dead or silent peer is found by the
    coordination service's heartbeats instead, and the collectives are aborted with an error.
    """
    import tensorflow as tf

    if cluster.tf_config is None:
        return tf.distribute.get_strategy()
    os.environ["TF_CONFIG"] = json.dumps(cluster.tf_config)
    _configure_coordination(cluster.tf_config["cluster"], timeout)
    return tf.distribute.MultiWorkerMirroredStrategy()


def _configure_coordination(spec: dict, timeout: float) -> None:
    """The coordination service of ``MultiWorkerMirroredStrategy`` (which keeps a configured one) with bounded
    registration and shutdown. TensorFlow has no public option for these, hence the internal modules."""
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    cluster_spec = tf.train.ClusterSpec(spec)
    milliseconds = int(timeout * 1000)
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster_spec),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
            for job in ("chief", "worker")
            if job in cluster_spec.jobs
        ],
        cluster_register_timeout_in_ms=milliseconds,
        shutdown_barrier_timeout_in_ms=milliseconds,
    )


def needs_supervisor(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process should run the job in a supervised child: a multi-worker task, not yet a child."""
    try:
        return from_environ(environ).tf_config is not None and not environ.get(SUPERVISED)
    except ValueError:
        return False  # the child reports the bad variable


def supervise(argv: list[str]) -> int:
    """Runs ``python -m trainer.task argv`` as a child and returns its exit status; SIGTERM (or SIGINT) ends the
    child at once (SIGKILL) and this process with ``SIGTERM_STATUS`` (``SIGINT_STATUS`` for SIGINT). On Linux the
    child is also killed when this process dies of anything else (``PR_SET_PDEATHSIG``), so no orphan keeps
    training."""
    child = subprocess.Popen(
        [sys.executable, "-m", "trainer.task", *argv],
        env={**os.environ, SUPERVISED: "1"},
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )

    def stop(signum, frame):
        child.kill()  # no wait() here: the interrupted Popen.wait holds its lock
        print(
            f"trainer.task: received {signal.Signals(signum).name}; stopped the worker (a rerun of the whole job "
            "resumes from the chief's last checkpoint)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return child.wait()


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
