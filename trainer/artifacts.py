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
            parent, base = _split(self.destination)
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


def _split(path: str) -> tuple[str, str]:
    """``posixpath.split`` that keeps a URL's ``scheme://`` root: ``ram://job`` -> (``ram://``, ``job``)."""
    scheme, sep, rest = path.partition("://")
    if not sep:
        return posixpath.split(path)
    parent, base = posixpath.split(rest)
    return f"{scheme}://{parent}", base


def _move(src: str, dst: str) -> None:
    """Moves ``src`` to ``dst``. Local directories are renamed whole; on URL file systems (``gs://``, ``ram://``),
    where directories are name prefixes and renaming one can leave its files behind, every file is moved on its
    own; files that cannot be renamed are copied and deleted."""
    if "://" not in src or not tf.io.gfile.isdir(src):
        _move_file(src, dst)
        return
    for directory, _, files in tf.io.gfile.walk(src):
        relative = posixpath.relpath(directory, src)
        target = dst if relative == "." else _join(dst, relative)
        tf.io.gfile.makedirs(target)
        for name in files:
            _move_file(_join(directory, name), _join(target, name))
    tf.io.gfile.rmtree(src)


def _move_file(src: str, dst: str) -> None:
    try:
        tf.io.gfile.rename(src, dst, overwrite=False)
    except (tf.errors.UnimplementedError, tf.errors.FailedPreconditionError):
        tf.io.gfile.copy(src, dst, overwrite=False)
        tf.io.gfile.remove(src)


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
