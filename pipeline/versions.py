"""Numbered model versions, ``<models-dir>/<name>/<version>/`` (the layout TF Serving watches), written atomically.

A version is staged in a hidden sibling directory (``.staging-*``, which TF Serving and version listings ignore)
and renamed into place, so a reader sees either no version N or all of it. Staging directories that a killed run
left behind are swept (``sweep``). A number is never given twice: ``.last-version`` records the highest number
published, so that removing a version (a rollback) does not make its number come back with another model.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
LAST_VERSION = ".last-version"
STALE_STAGING_S = 6 * 3600  # a staging directory untouched this long belongs to no live run


def versions(base: str) -> list[int]:
    """The version numbers under ``base`` (directories named by a positive integer), ascending."""
    if not os.path.isdir(base):
        return []
    found = []
    for entry in os.listdir(base):
        if entry.isdigit() and int(entry) > 0 and os.path.isdir(os.path.join(base, entry)):
            found.append(int(entry))
    return sorted(found)


def latest(base: str) -> int | None:
    """The highest version under ``base``, or None when there is none."""
    found = versions(base)
    return found[-1] if found else None


def stage(base: str) -> str:
    """A new, empty staging directory under ``base`` (created with its parents)."""
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=base)


def publish(staged: str, base: str) -> int:
    """Renames ``staged`` to the next version under ``base``; returns that version.

    If another writer takes the number first, the next free number is used.
    """
    version = max(latest(base) or 0, last_published(base)) + 1
    while True:
        target = os.path.join(base, str(version))
        if not os.path.exists(target):
            try:
                os.rename(staged, target)
                _record(base, version)
                return version
            except OSError:
                if not os.path.exists(target):
                    raise
        version += 1


def discard(staged: str) -> None:
    """Removes a staging directory (after a failure)."""
    shutil.rmtree(staged, ignore_errors=True)


def last_published(base: str) -> int:
    """The highest version number ever published under ``base`` (0 if none is recorded)."""
    try:
        with open(os.path.join(base, LAST_VERSION), encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit():
        raise ValueError(f"{os.path.join(base, LAST_VERSION)} should hold a version number. Received: {text!r}")
    return int(text)


def _record(base: str, version: int) -> None:
    if version <= last_published(base):
        return
    temporary = os.path.join(base, f"{LAST_VERSION}.{os.getpid()}")
    with open(temporary, "w", encoding="ascii") as f:
        f.write(f"{version}\n")
    os.replace(temporary, os.path.join(base, LAST_VERSION))


def sweep(base: str, older_than_s: float = STALE_STAGING_S) -> list[str]:
    """Removes the staging directories under ``base`` untouched for ``older_than_s`` seconds; returns them."""
    if not os.path.isdir(base):
        return []
    now, removed = time.time(), []
    for entry in os.listdir(base):
        path = os.path.join(base, entry)
        if entry.startswith(STAGING_PREFIX) and os.path.isdir(path) and now - os.path.getmtime(path) >= older_than_s:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            logger.info("removed the stale staging directory %s", path)
    return removed
