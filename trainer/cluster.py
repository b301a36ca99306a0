"""The job's cluster, parsed once: this task's role, the workers, the strategy and the time limits.

- Role: from ``TF_CONFIG`` (``task.type`` ``chief``/``master``; ``worker`` 0 when the cluster has no chief) or
  Vertex AI's ``CLUSTER_SPEC`` (``workerpool0`` is the chief, ``workerpool1`` the workers), the first of the two
  that names a task (``TASK_KINDS``). No cluster at all is a chief. The chief writes the outputs.
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

#: The task types of each variable and what each one is: TF1 / Cloud ML Engine's ``master`` is a chief, and
#: Vertex AI's worker pools are the chief, the workers, the parameter servers and the evaluators, in that order.
TASK_KINDS = {
    "TF_CONFIG": {"chief": "chief", "master": "chief", "worker": "worker", "ps": "ps", "evaluator": "evaluator"},
    "CLUSTER_SPEC": {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps", "workerpool3": "evaluator"},
}
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


@dataclasses.dataclass(frozen=True)
class _Task:
    """The task that ``TF_CONFIG`` / ``CLUSTER_SPEC`` names: its type as given and as a kind (``TASK_KINDS``), its
    index, and the cluster by kind."""

    type: str
    kind: str
    index: int
    cluster: dict
    trial: str | None


def _task(environ: Mapping[str, str]) -> _Task | None:
    """The task of the first of ``TF_CONFIG`` / ``CLUSTER_SPEC`` that names one (``task.type``), or None.

    Raises:
        ValueError: naming the variable and the field: not a JSON object, an unknown task type, an index that is
            not a non-negative integer, a cluster that is not an object of host lists, or one with both a chief
            and a master.
    """
    for name, spec in _specs(environ):
        task = spec.get("task") or {}
        if not isinstance(task, dict):
            raise ValueError(f"`{name}` task should be a JSON object. Received: task={task!r}")
        task_type = task.get("type")
        if not task_type:
            continue
        kinds = TASK_KINDS[name]
        if task_type not in kinds:
            raise ValueError(f"`{name}` task.type should be one of {sorted(kinds)}. Received: {task_type!r}")
        index = task.get("index", 0)
        if isinstance(index, str) and index.isascii() and index.isdigit():
            index = int(index)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"`{name}` task.index should be a non-negative integer. Received: {index!r}")
        given = spec.get("cluster") or {}
        if not isinstance(given, dict) or not all(isinstance(hosts, list) for hosts in given.values()):
            raise ValueError(
                f"`{name}` cluster should be a JSON object of task type -> list of host:port. Received: {given!r}"
            )
        if "chief" in given and "master" in given:
            raise ValueError(f"`{name}` cluster should have a chief or a master, not both. Received: {sorted(given)}")
        cluster = {kinds[kind]: hosts for kind, hosts in given.items() if kind in kinds}
        hosts = given.get(task_type)
        if hosts is not None and index >= len(hosts):
            raise ValueError(
                f"`{name}` task.index should be below the {len(hosts)} {task_type} host(s) of its cluster. "
                f"Received: {index}"
            )
        trial = str(task["trial"]) if task.get("trial") not in (None, "") else None
        return _Task(task_type, kinds[task_type], index, cluster, trial)
    return None


def role(environ: Mapping[str, str] = os.environ) -> Role:
    """The task's role from ``TF_CONFIG``, else ``CLUSTER_SPEC``; a chief when neither names a task.

    Raises:
        ValueError: a variable that is not a JSON object or names a task badly (``_task``).
    """
    return _role(_task(environ), environ)


def _role(task: _Task | None, environ: Mapping[str, str]) -> Role:
    """The ``Role`` of a parsed task (None: a single-machine run), the trial id from it or the environment."""
    trial = environ.get("CLOUD_ML_TRIAL_ID") or None
    if task is None:
        return Role(trial=trial)
    chief = task.kind == "chief" or (task.kind == "worker" and task.index == 0 and "chief" not in task.cluster)
    return Role(task.type, task.index, task.trial or trial, chief)


def from_environ(environ: Mapping[str, str] = os.environ) -> Cluster:
    """The ``Cluster`` of ``TF_CONFIG`` / ``CLUSTER_SPEC`` (see the module docstring), read as ``role`` reads it.

    Raises:
        ValueError: as ``role``.
    """
    task = _task(environ)
    this = _role(task, environ)
    if task is None:
        return Cluster(this)
    workers = sum(len(task.cluster.get(kind, [])) for kind in ("chief", "worker"))
    if workers > 1 and task.kind in ("chief", "worker"):  # evaluators and ps take no part
        tf_config = {
            "cluster": {kind: task.cluster[kind] for kind in ("chief", "worker") if kind in task.cluster},
            "task": {"type": task.kind, "index": task.index},
        }
        return Cluster(this, tf_config, workers)
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
    # Without the barrier only the other tasks' registration is bounded: the leader would wait for a task that
    # never starts forever. With it, every task, the leader too, fails after the timeout.
    context.context()._coordination_service_config.cluster_register_with_barrier = True


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
    code = child.wait()
    if code < 0:  # ended by a signal it did not handle: say so, and exit as a shell reports it
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {-code}"
        why = " (by the kernel's out-of-memory killer, or by hand)" if -code == signal.SIGKILL else ""
        print(f"trainer.task: the worker process was killed by {name}{why}", file=sys.stderr, flush=True)
        return 128 - code
    return code


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
