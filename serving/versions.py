"""Numbered model versions under one base directory (TF Serving's layout), swapped in while serving.

``<base>/<version>/`` (version: a positive integer) is a SavedModel root such as the trainer's
``<job-dir>/model/``. ``VersionedModels`` serves the highest version that loads and warms up; a watcher thread
polls the base directory, and when a higher version appears it loads and warms it while the current one keeps
answering, then swaps the two with one assignment (a request reads ``current`` once, so it is answered by one
model). A version that fails to load or to warm up is logged and skipped; it is tried again only if its files
change. Versions lower than the one served are never loaded (removing the served version's directory does not
unload it). Local paths and any TensorFlow filesystem (gs://) work.
"""

from __future__ import annotations

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


def _versions(base: str) -> list[int]:
    """The numbered subdirectories of ``base`` that hold a saved_model.pb, ascending."""
    found = []
    for entry in tf.io.gfile.listdir(base):
        name = entry.rstrip("/")
        if name.isascii() and name.isdigit() and int(name) > 0:
            if tf.io.gfile.exists(posixpath.join(base, name, "saved_model.pb")):
                found.append(int(name))
    return sorted(found)


def _fingerprint(path: str) -> tuple:
    """(file, size) of every file under ``path``: a failed version is retried only when this changes."""
    files = []
    for root, _, names in tf.io.gfile.walk(path):
        for name in names:
            full = posixpath.join(root, name)
            files.append((full, tf.io.gfile.stat(full).length))
    return tuple(sorted(files))


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
        self._failed: dict[int, tuple] = {}
        self.current: Recommender | None = None
        for version in reversed(_versions(base)):
            self.current = self._try(version)
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
        """Loads and swaps in the highest version above the served one, if any loads; True if it swapped."""
        try:
            candidates = [v for v in _versions(self.base) if v > self.version]
        except (OSError, tf.errors.OpError) as err:
            logger.warning("cannot list the model versions under %s: %s", self.base, err)
            return False
        for version in reversed(candidates):
            if version in self._failed and self._failed[version] == self._fingerprint(version):
                continue
            started = time.monotonic()
            loaded = self._try(version)
            if loaded is not None:
                previous, self.current = self.current.version, loaded
                logger.info(
                    "now serving version %s (loaded and warmed up in %.1f s; was version %s)",
                    version,
                    time.monotonic() - started,
                    previous,
                )
                return True
        return False

    def _try(self, version: int) -> Recommender | None:
        path = posixpath.join(self.base, str(version))
        try:
            return self._load(path, str(version))
        except Exception as err:  # any failure to load or warm up skips the version; the old one keeps serving
            self._failed[version] = self._fingerprint(version)
            logger.error("skipped version %d (%s): %s: %s", version, path, type(err).__name__, str(err)[:500])
            return None

    def _fingerprint(self, version: int) -> tuple:
        try:
            return _fingerprint(posixpath.join(self.base, str(version)))
        except (OSError, tf.errors.OpError):
            return ()

    def watch(self, interval_s: float) -> None:
        """Polls every ``interval_s`` seconds in a daemon thread until ``stop()``."""

        def loop():
            while not self._stop.wait(interval_s):
                self.poll()

        self._thread = threading.Thread(target=loop, name="model-versions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
