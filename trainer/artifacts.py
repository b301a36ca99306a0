"""Output files written all-or-nothing through ``tf.io.gfile`` (local paths, ``gs://``, ``ram://``, ...).

A run's outputs (``model/``, ``config.json``, ``metrics.json``) go to one directory with other things that are
not part of the commit (checkpoints, TensorBoard logs), and several top-level names cannot be replaced by one
rename; on URL file systems such as ``gs://`` not even one directory can (it is moved file by file). So the
commit is made atomic by a marker instead, as Hadoop and Spark do with ``_SUCCESS``:

1. every output is written into a staging directory ``<destination>/.staging-<id>/``;
2. a manifest naming the entries is written into it (``COMMIT``, written under another name and renamed): from
   here on the outputs are complete, and the entries they name in the destination belong to this commit;
3. each entry is moved into the destination;
4. the manifest is renamed to ``<destination>/_SUCCESS``, the commit marker: a reader that sees it sees all of
   the run's outputs, and one that does not see it must treat whatever entries it finds as absent
   (``committed``);
5. the staging directory is removed.

A run killed at any point is repaired by the next ``Staging`` of the same destination (``recover``): without a
marker, the entries named by a staged manifest are deleted (the interrupted commit is replaced by the new run's),
and every stale staging directory of the job goes, also the ``.<job>.staging-<id>`` siblings older versions
left. Every step is one write, rename or removal, and before the marker every change to the destination is one
that ``recover`` undoes, so a kill between any two steps leaves either a committed destination or one that the
next run cleans (tested by a kill injected at each step). One run writes to one destination at a time.

Why a marker and not one rename: the entries share the job directory with the checkpoints and logs of the same
run (a rerun resumes from them), so the directory cannot be swapped whole, and ``gs://`` has no atomic rename of
a directory at all; the one operation that is atomic everywhere is the creation of a single small object.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import re
import uuid

import numpy as np
import tensorflow as tf

from trainer.paths import MARKER, already_committed, not_a_directory

logger = logging.getLogger(__name__)

#: The manifest inside a staging directory; renamed to ``MARKER`` by the last step of the commit.
MANIFEST = "COMMIT"
_STAGING = re.compile(r"\.staging-[0-9a-f]{12}")


def committed(destination: str) -> bool:
    """Whether ``destination`` holds the complete outputs of a run (its commit marker exists)."""
    return tf.io.gfile.exists(_join(destination.rstrip("/") or destination, MARKER))


def recover(destination: str) -> list[str]:
    """Removes what interrupted runs left in and beside ``destination``; returns the paths it removed.

    With a commit marker, stale staging directories are all that can be left. Without one, the entries named by
    a staged manifest were (partly) moved in by a commit that did not finish: they are deleted before the staging
    directory (and so before the manifest), so that a kill during the recovery leaves it to the next one.
    """
    destination = destination.rstrip("/") or destination
    removed = []
    parent, base = _split(destination)
    if base:  # staging directories of this job that older versions left beside it
        for path in _staging_dirs(parent, f".{base}"):
            removed.append(path)
            _rmtree(path)
    if not tf.io.gfile.isdir(destination):
        return removed
    done = committed(destination)
    for root in _staging_dirs(destination, ""):
        if not done:
            removed += _undo(destination, root)
        removed.append(root)
        _rmtree(root)
    return removed


def _undo(destination: str, root: str) -> list[str]:
    """Deletes the entries of ``destination`` that the manifest in staging directory ``root`` names."""
    removed = []
    for entry in _manifest_entries(root):
        target = _join(destination, entry)
        if tf.io.gfile.exists(target):
            removed.append(target)
            _rmtree(target) if tf.io.gfile.isdir(target) else _remove(target)
    return removed


class Staging:
    """A staging directory for a run's ``entries``, published into ``destination`` by ``commit()``.

    The constructor first repairs what interrupted runs left (``recover``), then refuses, before any work is
    done, a destination that is not a directory, holds a committed run, holds one of the entries without a
    marker (outputs of another program or of an older version), or cannot be written (checked with a probe
    file). The staging directory is created by the first ``path()``, inside ``destination`` so that every move
    stays within one directory (or bucket); a run that fails before that leaves nothing behind, and ``discard()``
    also removes a destination that only the staging created.
    """

    def __init__(self, destination: str, entries: list[str]):
        self.destination = destination.rstrip("/") or destination
        self.entries = list(entries)
        for entry in self.entries:
            if not _plain_name(entry):
                raise ValueError(f"staged entries should be plain names. Received: {entry!r}")
        self.root = _join(self.destination, f".staging-{uuid.uuid4().hex[:12]}")
        try:
            self._created = not tf.io.gfile.exists(self.destination)
            if not self._created and not tf.io.gfile.isdir(self.destination):
                raise ValueError(not_a_directory(self.destination, self.destination))
            replaced = recover(self.destination)
        except tf.errors.OpError as err:
            raise OSError(f"output directory {self.destination} cannot be read or cleaned: {err}") from None
        if replaced:
            logger.warning("removed what interrupted runs left: %s", ", ".join(replaced))
        if committed(self.destination):
            raise ValueError(already_committed(self.destination))
        clashes = [e for e in self.entries if tf.io.gfile.exists(_join(self.destination, e))]
        if clashes:
            raise ValueError(
                f"output directory {self.destination} already holds {clashes} without the commit marker {MARKER} "
                "(outputs of another program, or of a run killed by an older version): remove them or choose a new "
                "--job-dir"
            )
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
        """Where to write ``entry`` (one of ``entries``) before the commit; creates the staging directory."""
        if entry not in self.entries:
            raise ValueError(f"{entry!r} is not one of the staged entries {self.entries}")
        tf.io.gfile.makedirs(self.root)
        return _join(self.root, entry)

    def commit(self) -> None:
        """Publishes every staged entry and then the marker (steps 2-5 of the module docstring).

        Raises:
            RuntimeError: an entry was never staged (nothing is published then).
        """
        missing = [e for e in self.entries if not tf.io.gfile.exists(_join(self.root, e))]
        if missing:
            raise RuntimeError(f"staged outputs missing before commit: {missing}")
        manifest, temporary = _join(self.root, MANIFEST), _join(self.root, f".{MANIFEST}.tmp")
        _write(temporary, json.dumps({"entries": self.entries}) + "\n")
        _rename(temporary, manifest)
        for entry in self.entries:
            _move(_join(self.root, entry), _join(self.destination, entry))
        _rename(manifest, _join(self.destination, MARKER))
        _rmtree(self.root)

    def discard(self) -> None:
        """Removes the staging directory, first undoing a commit that failed halfway (best effort)."""
        try:
            if tf.io.gfile.exists(self.root):
                if not committed(self.destination):
                    _undo(self.destination, self.root)
                _rmtree(self.root)
            if self._created and tf.io.gfile.isdir(self.destination) and not tf.io.gfile.listdir(self.destination):
                tf.io.gfile.rmtree(self.destination)
        except tf.errors.OpError as err:  # best effort: the next Staging of this destination removes the rest
            logger.warning("could not remove the staged outputs %s (%s); the next run removes them", self.root, err)


def _manifest_entries(root: str) -> list[str]:
    """The entries named by the manifest in staging directory ``root``; [] when it has none (not decided yet)."""
    path = _join(root, MANIFEST)
    if not tf.io.gfile.exists(path):
        return []
    try:
        with tf.io.gfile.GFile(path) as handle:
            entries = json.loads(handle.read())["entries"]
    except (ValueError, KeyError, TypeError):  # not one of ours: leave the entries to the clash check
        return []
    return [e for e in entries if isinstance(e, str) and _plain_name(e)] if isinstance(entries, list) else []


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..", MARKER) and not _STAGING.fullmatch(name)


def _join(*parts: str) -> str:
    return posixpath.join(*parts)


def _split(path: str) -> tuple[str, str]:
    """``posixpath.split`` that keeps a URL's ``scheme://`` root: ``ram://job`` -> (``ram://``, ``job``)."""
    scheme, sep, rest = path.partition("://")
    if not sep:
        return posixpath.split(path)
    parent, base = posixpath.split(rest)
    return f"{scheme}://{parent}", base


def _staging_dirs(directory: str, prefix: str) -> list[str]:
    """Paths ``<directory>/<prefix>.staging-<id>`` (a glob, which lists only that prefix on ``gs://``)."""
    pattern = f"{prefix}.staging-*"
    found = tf.io.gfile.glob(_join(directory, pattern) if directory else pattern)
    return sorted(
        p.rstrip("/") for p in found if re.fullmatch(re.escape(prefix) + _STAGING.pattern, _split(p.rstrip("/"))[1])
    )


def _move(src: str, dst: str) -> None:
    """Moves ``src`` to ``dst``. Local directories are renamed whole; on URL file systems (``gs://``, ``ram://``),
    where directories are name prefixes and renaming one can leave its files behind, every file is moved on its
    own."""
    if "://" not in src or not tf.io.gfile.isdir(src):
        _rename(src, dst)
        return
    moves = []
    for directory, _, files in tf.io.gfile.walk(src):
        relative = posixpath.relpath(directory, src)
        target = dst if relative == "." else _join(dst, relative)
        tf.io.gfile.makedirs(target)
        moves += [(_join(directory, name), _join(target, name)) for name in files]
    # A SavedModel's saved_model.pb last: a loader that finds it (TF Serving polls for it) finds its variables too.
    for source, target in sorted(moves, key=lambda move: posixpath.basename(move[0]) == "saved_model.pb"):
        _rename(source, target)
    _rmtree(src)


# The file-system steps of a commit, one function each (the commit's kill-injection test wraps them).


def _rename(src: str, dst: str) -> None:
    """Renames a file or local directory; files that cannot be renamed are copied and deleted."""
    try:
        tf.io.gfile.rename(src, dst, overwrite=False)
    except (tf.errors.UnimplementedError, tf.errors.FailedPreconditionError):
        tf.io.gfile.copy(src, dst, overwrite=False)
        tf.io.gfile.remove(src)


def _write(path: str, text: str) -> None:
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(text)


def _remove(path: str) -> None:
    tf.io.gfile.remove(path)


def _rmtree(path: str) -> None:
    tf.io.gfile.rmtree(path)


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
