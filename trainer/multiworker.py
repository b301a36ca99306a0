"""``python -m trainer.multiworker``: the trainer on several workers of a ``MultiWorkerMirroredStrategy``.

Used when ``TF_CONFIG`` (or Vertex AI's ``CLUSTER_SPEC``: ``workerpool0`` is the chief, ``workerpool1`` the
workers) lists more than one task; it takes ``trainer.task``'s flags plus ``--collective-timeout``. Every worker:

1. reads its shard of ``--train-file``: the lines that start in its byte range [s p / P, s (p + 1) / P) of the
   s-byte file (Hadoop-style splits, through ``tf.io.gfile``, so ``gs://`` works). Inputs that cannot be split
   by bytes (``.gz`` files, ``--dataset``, the bundled data) are read whole and the worker keeps its p-th
   contiguous range of lines;
2. all-gathers the unique raw user and item ids of the shards; the sorted union is the id map (as a single
   process builds it), so every worker maps ids to the same indices;
3. splits its entries into train / validation / test by a hash of (user id, item id, seed), which does not
   depend on the sharding (``split_masks``; only ``--split random``);
4. sends its training entries to the owners of their row block and column block (all-gathers of at most
   ``EXCHANGE_CHUNK`` entries per worker at a time, each worker keeping its blocks) and sums the weights'
   statistics (``wals2.distributed``);
5. runs the sweeps (``wals2.distributed.DistributedSweep``), logs one line per sweep with the training and
   held-out RMSE, and the chief alone checkpoints the factors after every sweep and writes
   ``model/{row,col,user,item}.npy``, ``config.json`` and ``metrics.json`` through ``artifacts.Staging``.

A restart of the whole cluster resumes from the chief's latest checkpoint, which every worker reads (the
checkpoint directory must be shared: ``gs://`` on Vertex AI). Every collective has a bounded timeout, and a
worker that dies makes the others fail with an error instead of waiting forever.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import posixpath  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer import artifacts, vertex  # noqa: E402
from wals2 import WALSModel, data, distributed, objective  # noqa: E402

logger = logging.getLogger("trainer.multiworker")

#: Entries each worker contributes to one all-gather of the training-entry exchange.
EXCHANGE_CHUNK = 1 << 20
#: Seconds a collective may wait for the other workers before the job fails (``--collective-timeout``).
DEFAULT_TIMEOUT = 600.0
_POOLS = {"workerpool0": "chief", "workerpool1": "worker"}


def cluster_config(environ: Mapping[str, str] = os.environ) -> dict | None:
    """The ``TF_CONFIG`` of a cluster with more than one chief/worker task when this task is one of them, or None
    for a one-machine run.

    ``CLUSTER_SPEC`` is mapped when ``TF_CONFIG`` is absent: ``workerpool0`` -> ``chief``, ``workerpool1`` ->
    ``worker`` (parameter-server and evaluator pools take no part).
    """
    for name in ("TF_CONFIG", "CLUSTER_SPEC"):
        text = environ.get(name, "").strip()
        if not text:
            continue
        spec = json.loads(text)
        task, cluster = spec.get("task") or {}, spec.get("cluster") or {}
        if name == "CLUSTER_SPEC":
            cluster = {_POOLS[pool]: hosts for pool, hosts in cluster.items() if pool in _POOLS}
            task = {**task, "type": _POOLS.get(task.get("type"), task.get("type"))}
        workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
        if workers > 1 and task.get("type") in ("chief", "worker"):  # evaluators and ps take no part
            return {"cluster": {k: cluster[k] for k in ("chief", "worker") if k in cluster}, "task": task}
        return None
    return None


def is_multiworker(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``TF_CONFIG`` / ``CLUSTER_SPEC`` describes more than one worker."""
    return cluster_config(environ) is not None


def split_masks(users, items, validation_fraction: float, test_fraction: float, seed: int):
    """(validation, test) boolean masks [nnz] of entries with raw ids (users, items): a seeded hash split.

    Each entry goes to test when h < f_t and to validation when f_t <= h < f_t + f_v, with h in [0, 1) a
    splitmix64 hash of (user id, item id, seed): the same on any sharding, about f nnz entries each.
    """
    with np.errstate(over="ignore"):  # arithmetic modulo 2^64
        key = np.asarray(users).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        key ^= np.asarray(items).astype(np.uint64) + np.uint64(seed) * np.uint64(0xBF58476D1CE4E5B9)
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            key = (key ^ (key >> np.uint64(shift))) * np.uint64(factor)
        key ^= key >> np.uint64(31)
    h = (key >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    test = h < test_fraction
    return ~test & (h < test_fraction + validation_fraction), test


def read_shard(task, rank: int, count: int) -> pd.DataFrame:
    """This worker's rows (columns user, item, rating) of the input, as described in the module docstring."""
    from trainer.task import load_data

    path = posixpath.join(task.gcs_bucket, task.train_file) if task.gcs_bucket else task.train_file
    if task.data_type != "ratings":
        raise ValueError(
            f"`--data-type` should be 'ratings' with several workers. Received: data_type={task.data_type}"
        )
    if path is None or path.endswith(".gz"):
        frame = load_data(task).to_frame()
        bounds = distributed.block_bounds(len(frame), count)
        return frame.iloc[bounds[rank] : bounds[rank + 1]]
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"ratings file not found: {path}")
    size = tf.io.gfile.stat(path).length
    start, end = size * rank // count, size * (rank + 1) // count
    with tf.io.gfile.GFile(path, "rb") as handle:
        if start > 0:
            handle.seek(start - 1)
            handle.readline()  # the line holding byte start - 1 belongs to the previous worker
        position = handle.tell()
        text = handle.read(max(end - position, 0)) if position < end else b""
        if text and not text.endswith(b"\n"):
            text += handle.readline()
    if task.headers and rank == 0:
        text = text.split(b"\n", 1)[1] if b"\n" in text else b""
    delimiter = task.delimiter
    doubled = len(delimiter) == 2 and delimiter[0] == delimiter[1]
    sep = delimiter[0] if doubled else delimiter
    if not text.strip():
        return pd.DataFrame({"user": [], "item": [], "rating": []})
    frame = pd.read_csv(io.BytesIO(text), sep=sep, header=None, dtype=str, engine="c" if len(sep) == 1 else "python")
    if doubled:
        frame = frame.iloc[:, ::2]
    if frame.shape[1] < 3:
        raise data.RatingsError(f"{path}: found {frame.shape[1]} column(s) with delimiter {delimiter!r}")
    frame = frame.iloc[:, :3]
    frame.columns = ["user", "item", "rating"]
    logger.info("worker %d of %d: read %d lines (bytes [%d, %d)) of %s", rank, count, len(frame), start, end, path)
    return frame


def _integer_ids(series: pd.Series, name: str) -> np.ndarray:
    ids = pd.to_numeric(series, errors="coerce")
    if ids.isna().any() or (ids != np.floor(ids)).any():
        raise ValueError(
            f"`{name}` ids should be integers with several workers. Received: {name}={series[ids.isna()].iloc[0]!r}"
        )
    return ids.to_numpy(np.int64)


class _Shard:
    """This worker's entries (raw ids), the global id maps and its part of the training matrix."""

    def __init__(self, strategy, frame: pd.DataFrame, task, config):
        self.user_raw = _integer_ids(frame["user"], "user")
        self.item_raw = _integer_ids(frame["item"], "item")
        self.values = pd.to_numeric(frame["rating"], errors="coerce").to_numpy(np.float64)
        if not np.all(np.isfinite(self.values)):
            raise data.RatingsError("ratings should be finite numbers; a shard holds a non-numeric rating")
        self.user_ids = np.unique(np.concatenate(distributed.all_gather(strategy, np.unique(self.user_raw))))
        self.item_ids = np.unique(np.concatenate(distributed.all_gather(strategy, np.unique(self.item_raw))))
        self.users = np.searchsorted(self.user_ids, self.user_raw)
        self.items = np.searchsorted(self.item_ids, self.item_raw)
        self.validation, self.test = split_masks(
            self.user_raw, self.item_raw, task.validation_fraction, task.test_fraction, config.seed
        )
        self.train = ~(self.validation | self.test)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)


def exchange(strategy, rows, cols, values, shape, rank: int):
    """Training entries (global indices) of this worker's row block and column block, from every worker's own.

    Returns (rows, cols, values) of the union of the two blocks, each entry once.
    """
    count = strategy.num_replicas_in_sync
    row_bounds, col_bounds = (distributed.block_bounds(size, count) for size in shape)
    r0, r1, c0, c1 = row_bounds[rank], row_bounds[rank + 1], col_bounds[rank], col_bounds[rank + 1]
    packed = np.stack([rows, cols, np.asarray(values, np.float64).view(np.int64)], axis=1).astype(np.int64)
    largest = int(distributed.worker_sizes(strategy, len(packed)).max())
    kept = []
    for start in range(0, max(largest, 1), EXCHANGE_CHUNK):
        for part in distributed.all_gather(strategy, packed[start : start + EXCHANGE_CHUNK]):
            mine = ((part[:, 0] >= r0) & (part[:, 0] < r1)) | ((part[:, 1] >= c0) & (part[:, 1] < c1))
            kept.append(part[mine])
    block = np.concatenate(kept)
    return block[:, 0], block[:, 1], block[:, 2].view(np.float64)


class _Checkpoint:
    """The chief's per-sweep checkpoint of the (replicated) factors; every worker restores the latest."""

    def __init__(self, directory: str, user_factors, item_factors, run: str, is_chief: bool):
        self.u = tf.Variable(user_factors)
        self.v = tf.Variable(item_factors)
        self.sweep = tf.Variable(0, dtype=tf.int64)
        self.run = tf.Variable(run)
        self.is_chief = is_chief
        checkpoint = tf.train.Checkpoint(u=self.u, v=self.v, sweep=self.sweep, run=self.run)
        self.manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=2)
        self.checkpoint = checkpoint

    def restore(self, run: str) -> int:
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        saved = tf.train.load_checkpoint(latest).get_tensor("run/.ATTRIBUTES/VARIABLE_VALUE").decode()
        if saved != run:
            raise ValueError(f"checkpoint {latest} was written by another run; use another --checkpoint-dir")
        self.checkpoint.restore(latest).assert_consumed()
        return int(self.sweep.numpy())

    def save(self, sweep: int, u, v) -> None:
        if self.is_chief:
            self.u.assign(u)
            self.v.assign(v)
            self.sweep.assign(sweep)
            self.manager.save(checkpoint_number=sweep)


def build_parser() -> argparse.ArgumentParser:
    from trainer.task import build_parser as task_parser

    parser = task_parser()
    parser.prog = "python -m trainer.multiworker"
    parser.add_argument(
        "--collective-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="Seconds a collective waits for the other workers before the job fails.",
    )
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """Trains on the cluster of ``TF_CONFIG`` / ``CLUSTER_SPEC``; returns the exit status (1 on any failure)."""
    from trainer.task import resolve_configs

    parser = build_parser()
    namespace = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout
    )
    for name in ("tensorflow", "absl"):  # per-save checkpoint sharding lines
        logging.getLogger(name).setLevel(logging.WARNING)
    if namespace.collective_timeout <= 0:
        parser.error(f"`--collective-timeout` should be > 0. Received: {namespace.collective_timeout}")
    timeout = namespace.collective_timeout
    del namespace.collective_timeout
    task, config, preset = resolve_configs(namespace)
    cluster = cluster_config(environ)
    if cluster is not None:
        os.environ["TF_CONFIG"] = json.dumps(cluster)
    this = vertex.role(environ)
    try:
        dirs = vertex.resolve_dirs(task, this, environ)
        staging = None
        if this.is_chief:
            staging = artifacts.Staging(dirs.output, [dirs.model_entry, "config.json", "metrics.json"])
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        return _run(strategy, task, config, preset, dirs, staging)
    except tf.errors.OpError as err:
        logger.error(
            "a worker failed or did not answer within --collective-timeout=%g s (%s: %s); the job stops. Restart "
            "the whole cluster to resume from the chief's last checkpoint.",
            timeout,
            type(err).__name__,
            str(err).strip().splitlines()[0],
        )
        return 1
    except (ImportError, OSError, ValueError) as err:
        logger.error("%s", err)
        return 1


def _run(strategy, task, config, preset, dirs, staging) -> int:
    if task.split != "random":
        raise ValueError(f"`--split` should be 'random' with several workers. Received: split={task.split}")
    started = time.perf_counter()
    count = strategy.num_replicas_in_sync
    rank = distributed.replica_rank(strategy)
    shard = _Shard(strategy, read_shard(task, rank, count), task, config)
    m, n = shard.shape
    train = shard.train
    stats = distributed.global_statistics(strategy, objective.statistics(shard.items[train], shard.values[train], n))
    rows, cols, values = exchange(strategy, shard.users[train], shard.items[train], shard.values[train], (m, n), rank)
    keys = rows * n + cols
    duplicates = distributed.all_reduce_sum(strategy, np.array([keys.size - np.unique(keys).size]))[0]
    if duplicates:
        raise data.RatingsError(f"the training ratings hold duplicate (user, item) pairs ({duplicates} or more)")
    logger.info(
        "data: %d users x %d items; %d train ratings over %d workers (this is worker %d)",
        m,
        n,
        stats.count,
        count,
        rank,
    )
    sweep = distributed.DistributedSweep(strategy, rows, cols, values, (m, n), config, stats)
    model = WALSModel(m, n, config)  # its seeded initial factors, as a single process draws them
    u, v = model.user_factors.numpy(), model.item_factors.numpy()
    explicit = sweep.weighting.bias_offsets
    if explicit:
        u, v = (np.concatenate([x, np.zeros((x.shape[0], 1), np.float32)], axis=1) for x in (u, v))
    r0, r1 = sweep.row_bounds[rank : rank + 2]
    digest = hashlib.sha256(np.sort(keys[(rows >= r0) & (rows < r1)]).tobytes())
    parts = distributed.all_gather(strategy, np.frombuffer(digest.digest()[:8], np.int64))
    run = json.dumps({"model": config.to_dict() | {"num_iters": 0}, "shape": [m, n], "train": str(parts)})
    checkpoint = _Checkpoint(dirs.checkpoints, u, v, run, staging is not None)
    initial = checkpoint.restore(run)
    agreed = np.concatenate(distributed.all_gather(strategy, np.array([initial])))
    if np.any(agreed != initial):
        raise ValueError(
            f"the workers restored different sweeps {agreed.tolist()}: the checkpoint directory must be shared"
        )
    if initial:
        u, v = checkpoint.u.numpy(), checkpoint.v.numpy()
        logger.info(
            "resuming from %s after sweep %d of %d", checkpoint.manager.latest_checkpoint, initial, config.num_iters
        )
    heldout = shard.validation if task.validation_fraction else shard.test
    load_seconds = time.perf_counter() - started
    seconds, history = [], {"rmse": [], "val_rmse": []}
    for epoch in range(initial, config.num_iters):
        start = time.perf_counter()
        u, v = sweep(u, v)
        seconds.append(time.perf_counter() - start)
        logs = sweep.metrics(u, v)
        val = _rmse(strategy, sweep, u, v, shard, heldout)
        history["rmse"].append(logs["rmse"])
        history["val_rmse"].append(val)
        logger.info(
            "sweep %d/%d  %.3f s  train RMSE %.4f  held-out RMSE %.4f",
            epoch + 1,
            config.num_iters,
            seconds[-1],
            logs["rmse"],
            val,
        )
        checkpoint.save(epoch + 1, u, v)
    results = {
        "train_rmse": sweep.metrics(u, v)["rmse"],
        "validation_rmse": _rmse(strategy, sweep, u, v, shard, shard.validation),
        "test_rmse": _rmse(strategy, sweep, u, v, shard, shard.test),
        "sweeps": config.num_iters,
        "resumed_from_sweep": initial,
        "workers": count,
        "median_seconds_per_sweep": float(np.median(seconds)) if seconds else None,
        "load_seconds": load_seconds,
        "num_users": m,
        "num_items": n,
        "num_train": stats.count,
        "history": history,
    }
    logger.info("done: train RMSE %.4f, test RMSE %s", results["train_rmse"], results["test_rmse"])
    if staging is None:
        return 0
    k = config.latent_factors
    model_dir = staging.path(dirs.model_entry)
    artifacts.save_npy(posixpath.join(model_dir, "row.npy"), np.asarray(u)[:, :k])
    artifacts.save_npy(posixpath.join(model_dir, "col.npy"), np.asarray(v)[:, :k])
    artifacts.save_npy(posixpath.join(model_dir, "user.npy"), shard.user_ids)
    artifacts.save_npy(posixpath.join(model_dir, "item.npy"), shard.item_ids)
    if explicit:
        artifacts.save_npy(posixpath.join(model_dir, "row_bias.npy"), np.asarray(u)[:, k])
        artifacts.save_npy(posixpath.join(model_dir, "col_bias.npy"), np.asarray(v)[:, k])
    artifacts.write_json(
        staging.path("config.json"),
        {"model": config.to_dict(), "task": task.to_dict(), "preset": preset, "workers": count},
    )
    artifacts.write_json(staging.path("metrics.json"), results)
    staging.commit()
    logger.info("wrote %s (checkpoints %s)", staging.destination, dirs.checkpoints)
    return 0


def _rmse(strategy, sweep, u, v, shard, mask) -> float | None:
    """The RMSE over every worker's entries in ``mask`` (None when there are none)."""
    pred = sweep.predict(u, v, shard.users[mask], shard.items[mask]).numpy().astype(np.float64)
    target = np.ones_like(pred) if sweep.config.mode == "implicit" else shard.values[mask]
    total, entries = distributed.all_reduce_sum(strategy, np.array([np.sum((target - pred) ** 2), pred.size]))
    return float(np.sqrt(total / entries)) if entries else None


if __name__ == "__main__":
    sys.exit(main())
