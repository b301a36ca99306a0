"""Numbered model versions under one base directory (TF Serving's layout), swapped in while serving.

``<base>/<version>/`` (version: a positive integer) is a SavedModel root such as the trainer's
``<job-dir>/model/``. ``VersionedModels`` serves the highest version that loads and warms up; a watcher thread
polls the base directory, and when a higher version appears it loads and warms it while the current one keeps
answering, then swaps the two with one assignment (a request reads ``current`` once, so it is answered by one
model).

Versions are told apart by content (``fingerprint``: a SHA-256 of every file up to 1 MiB, such as saved_model.pb
and variables/variables.index, which holds a checksum of every variable, and of the size and mtime of larger
files), never by number or size alone:

- a version that fails to load, to warm up or the compatibility check is logged and skipped; it is tried again
  once its content changes (a same-size repair included);
- the served version's directory is checked at every poll: when its content is replaced, the new content is
  loaded under the same number; when it is removed, the highest remaining version is served (the removed model
  keeps answering, with an error logged, only while no other version loads);
- a new version that would turn valid requests into errors is refused and the old one kept
  (``incompatibility``): it lacks a signature the served one has, a signature's inputs differ, or its export's
  ``top_k`` is smaller.

A replaced or refused model is freed at once (``free_unreachable``): a loaded SavedModel's objects sit in reference
cycles, which Python's cyclic collector would reach only after many more allocations, so that the server's
resident memory grew by about 22 MB per reload until a collection ran.

Local paths and any TensorFlow filesystem (gs://) work.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import posixpath
import threading
import time
from collections.abc import Callable

import tensorflow as tf

from serving.model import Recommender

logger = logging.getLogger(__name__)


def is_versioned(path: str) -> bool:
    """True when ``path`` is a base directory of numbered versions rather than a SavedModel itself."""
    if tf.io.gfile.exists(posixpath.join(path, "saved_model.pb")):
        return False
    return tf.io.gfile.isdir(path) and bool(_versions(path))


def _versions(base: str) -> dict[int, str]:
    """The numbered subdirectories of ``base`` that hold a saved_model.pb: version -> directory name, ascending.

    As TF Serving, a name is read as its number, so ``0003`` is version 3 (of two names of one number, the first
    in sorted order)."""
    found: dict[int, str] = {}
    for entry in sorted(tf.io.gfile.listdir(base)):
        name = entry.rstrip("/")
        if name.isascii() and name.isdigit() and int(name) > 0 and int(name) not in found:
            if tf.io.gfile.exists(posixpath.join(base, name, "saved_model.pb")):
                found[int(name)] = name
    return dict(sorted(found.items()))


SMALL_FILE_BYTES = 1 << 20
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's own C library; glibc only


def free_unreachable() -> None:
    """Collects the objects no longer reachable (a replaced model) and, on glibc, returns the freed heap pages to
    the system (``malloc_trim(0)``)."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def fingerprint(path: str) -> str:
    """A SHA-256 of the version directory ``path``: the content of each file up to ``SMALL_FILE_BYTES``, the size
    and mtime of each larger one (a SavedModel's variables.index holds the checksums of its data shards)."""
    digest = hashlib.sha256()
    entries = []
    for root, _, names in tf.io.gfile.walk(path):
        for name in names:
            entries.append(posixpath.join(root, name))
    for full in sorted(entries):
        stat = tf.io.gfile.stat(full)
        digest.update(posixpath.relpath(full, path).encode() + b"\0")
        if stat.length <= SMALL_FILE_BYTES:
            with tf.io.gfile.GFile(full, "rb") as f:
                digest.update(f.read())
        else:
            digest.update(b"%d:%d" % (stat.length, stat.mtime_nsec))
        digest.update(b"\0")
    return digest.hexdigest()


def incompatibility(old, new) -> str | None:
    """Why ``new`` cannot replace the served ``old`` without failing requests that ``old`` answers; None if it can."""
    old_specs, new_specs = getattr(old, "input_specs", {}), getattr(new, "input_specs", {})
    missing = sorted(set(old_specs) - set(new_specs))
    if missing:
        return f"it lacks the signatures {missing} that the served version has"
    for name, specs in old_specs.items():
        if {k: (v.dtype, v.shape.as_list()) for k, v in specs.items()} != {
            k: (v.dtype, v.shape.as_list()) for k, v in new_specs[name].items()
        }:
            return f"the inputs of its {name!r} signature differ from the served version's"
    old_k, new_k = getattr(old, "top_k", None), getattr(new, "top_k", None)
    if old_k is not None and new_k is not None and new_k < old_k:
        return f"its top_k {new_k} is smaller than the served version's {old_k} (valid requests would get 400s)"
    return None


class VersionedModels:
    """The served ``Recommender`` (``current``) of the highest good version under ``base``.

    Args:
        base: the base directory.
        load: ``(path, version) -> Recommender`` (loads and warms up; raises if either fails).

    Raises:
        ValueError: no version under ``base`` loads.
    """

    def __init__(self, base: str, load: Callable[[str, str], Recommender] = Recommender):
        self.base = base
        self._load = load
        self._failed: dict[int, str] = {}  # version -> the fingerprint that failed
        self._served_fingerprint: str | None = None
        self._removed_logged = False
        self.current: Recommender | None = None
        self._dirs = _versions(base)  # version -> its directory's name, as last listed
        for version in reversed(self._dirs):
            self.current = self._try(version, check=False)
            if self.current is not None:
                break
        if self.current is None:
            raise ValueError(f"no version under {base} loads as a wals2 serving SavedModel")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> int:
        return int(self.current.version)

    def poll(self) -> bool:
        """Follows the base directory (see the module docstring); True if it swapped the served model."""
        try:
            found = _versions(self.base)
        except (OSError, tf.errors.OpError) as err:
            logger.warning("cannot list the model versions under %s: %s", self.base, err)
            return False
        self._dirs = found
        served = self.version
        if served not in found:
            return self._served_removed(found)
        self._removed_logged = False
        for version in reversed([v for v in found if v > served]):
            if self._swap(version, check=True):
                return True
        current = self._fingerprint(served)
        if current and current != self._served_fingerprint and self._failed.get(served) != current:
            logger.info("the content of the served version %d changed: loading it again", served)
            return self._swap(served, check=True)
        return False

    def _served_removed(self, found: dict[int, str]) -> bool:
        served = self.version
        for version in reversed(found):
            if self._swap(version, check=False, reason=f"the served version {served} was removed"):
                return True
        if not self._removed_logged:
            logger.error(
                "the served version %d was removed from %s and no other version loads: still serving it from memory",
                served,
                self.base,
            )
            self._removed_logged = True
        return False

    def _swap(self, version: int, check: bool, reason: str = "") -> bool:
        if version in self._failed and self._failed[version] == self._fingerprint(version):
            return False  # failed before, with this very content
        started = time.monotonic()
        loaded = self._try(version, check)
        if loaded is None:
            free_unreachable()  # what a failed or refused load left
            return False
        previous, self.current = self.current.version, loaded
        free_unreachable()  # the replaced model, unless a request in flight still holds it (then at the next swap)
        logger.info(
            "now serving version %s (loaded and warmed up in %.1f s; was version %s%s)",
            version,
            time.monotonic() - started,
            previous,
            f"; {reason}" if reason else "",
        )
        return True

    def _try(self, version: int, check: bool) -> Recommender | None:
        path = self._path(version)
        before = self._fingerprint(version)
        try:
            loaded = self._load(path, str(version))
        except Exception as err:  # any failure to load or to warm up skips the version; the old one keeps serving
            self._failed[version] = before
            logger.error("skipped version %d (%s): %s: %s", version, path, type(err).__name__, str(err)[:500])
            return None
        why = incompatibility(self.current, loaded) if check and self.current is not None else None
        if why:
            self._failed[version] = before
            logger.error("refused version %d (%s): %s; still serving version %s", version, path, why, self.version)
            return None
        self._failed.pop(version, None)
        self._served_fingerprint = before
        return loaded

    def _path(self, version: int) -> str:
        return posixpath.join(self.base, self._dirs.get(version, str(version)))

    def _fingerprint(self, version: int) -> str:
        try:
            return fingerprint(self._path(version))
        except (OSError, tf.errors.OpError):
            return ""

    def watch(self, interval_s: float) -> None:
        """Polls every ``interval_s`` seconds in a daemon thread until ``stop()``."""

        def loop():
            while not self._stop.wait(interval_s):
                try:
                    self.poll()
                except Exception:  # a bug here must not stop the watching: log it and poll again
                    logger.exception("error while looking for new model versions under %s", self.base)

        self._thread = threading.Thread(target=loop, name="model-versions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
