"""Output files written all-or-nothing through ``tf.io.gfile`` (local paths, ``gs://``, ``ram://``, ...)."""

from __future__ import annotations

import io
import json
import posixpath
import uuid

import numpy as np
import tensorflow as tf


class Staging:
    """A staging directory for a run's outputs, moved into ``destination`` by ``commit()``.

    When ``destination`` does not exist yet, the staging directory is its sibling and is renamed to it whole;
    otherwise the staged entries are moved into it one by one. Entries that already exist in ``destination``
    are refused up front, before any work is done, and so is a destination that cannot be written (checked with
    a probe file). The staging directory itself is created by the first ``path()``, so a run that is killed
    before it writes its outputs leaves nothing behind.
    """

    def __init__(self, destination: str, entries: list[str]):
        self.destination = destination.rstrip("/") or destination
        self.entries = entries
        exists = tf.io.gfile.exists(self.destination)
        if exists:
            if not tf.io.gfile.isdir(self.destination):
                raise ValueError(f"output directory {self.destination} exists and is not a directory")
            clashes = [e for e in entries if tf.io.gfile.exists(_join(self.destination, e))]
            if clashes:
                raise ValueError(f"output directory {self.destination} already holds {clashes}; choose a new --job-dir")
            self.root = _join(self.destination, f".staging-{uuid.uuid4().hex[:12]}")
        else:
            parent, base = posixpath.split(self.destination)
            self.root = (
                _join(parent, f".{base}.staging-{uuid.uuid4().hex[:12]}")
                if parent
                else f".{base}.staging-{uuid.uuid4().hex[:12]}"
            )
        self._fresh = not exists
        try:
            tf.io.gfile.makedirs(self.root)
            probe = _join(self.root, ".probe")
            with tf.io.gfile.GFile(probe, "w") as handle:
                handle.write("ok")
            tf.io.gfile.remove(probe)
        except (tf.errors.OpError, OSError) as err:
            raise OSError(f"output directory {self.destination} is not writable: {err}") from None
        finally:
            self.discard()

    def path(self, entry: str) -> str:
        if entry not in self.entries:
            raise ValueError(f"{entry!r} is not one of the staged entries {self.entries}")
        tf.io.gfile.makedirs(self.root)
        return _join(self.root, entry)

    def commit(self) -> None:
        missing = [e for e in self.entries if not tf.io.gfile.exists(_join(self.root, e))]
        if missing:
            raise RuntimeError(f"staged outputs missing before commit: {missing}")
        if self._fresh and not tf.io.gfile.exists(self.destination):
            _move(self.root, self.destination)
            return
        tf.io.gfile.makedirs(self.destination)
        for entry in self.entries:
            _move(_join(self.root, entry), _join(self.destination, entry))
        self.discard()

    def discard(self) -> None:
        try:
            if tf.io.gfile.exists(self.root):
                tf.io.gfile.rmtree(self.root)
        except tf.errors.OpError:
            pass  # best effort: the staging directory name marks it as incomplete


def _join(*parts: str) -> str:
    return posixpath.join(*parts)


def _move(src: str, dst: str) -> None:
    """Renames ``src`` to ``dst``; file systems that cannot rename directories get a copy and a delete."""
    try:
        tf.io.gfile.rename(src, dst, overwrite=False)
        return
    except (tf.errors.UnimplementedError, tf.errors.FailedPreconditionError):
        if not tf.io.gfile.isdir(src):
            raise
    for directory, _, files in tf.io.gfile.walk(src):
        relative = posixpath.relpath(directory, src)
        target = dst if relative == "." else _join(dst, relative)
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(_join(directory, name), _join(target, name), overwrite=False)
    tf.io.gfile.rmtree(src)


def save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` through ``tf.io.gfile``; creates the parent directory."""
    tf.io.gfile.makedirs(posixpath.dirname(path))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(buffer.getvalue())


def write_json(path: str, value) -> None:
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
