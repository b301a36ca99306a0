"""Numbered model versions, ``<models-dir>/<name>/<version>/`` (the layout TF Serving watches), written atomically.

A version is staged in a hidden sibling directory (``.staging-*``, which TF Serving and version listings ignore)
and renamed into place, so a reader sees either no version N or all of it. Writers hold ``.lock`` (an exclusive
``flock``) from staging to publishing: a ``.staging-*`` directory found while holding it was left by a writer that
died, and is removed. ``.highest`` records the highest number ever published, so that a number is never given
twice, even after the highest version was deleted (a rollback): TF Serving and its clients may have seen it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
LOCK = ".lock"
HIGHEST = ".highest"


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


@contextlib.contextmanager
def writing(base: str):
    """Holds ``base``'s writer lock (created with its parents) and removes the staging directories of writers
    that died; yields ``base``."""
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, LOCK), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for entry in os.listdir(base):
                if entry.startswith(STAGING_PREFIX):
                    logger.info("removing %s, left by a writer that stopped", os.path.join(base, entry))
                    shutil.rmtree(os.path.join(base, entry), ignore_errors=True)
            yield base
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def stage(base: str) -> str:
    """A new, empty staging directory under ``base`` (call it inside ``writing(base)``)."""
    return tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=base)


def highest_published(base: str) -> int:
    """The highest version number ever published under ``base`` (0 for none), deleted versions included."""
    recorded = 0
    try:
        with open(os.path.join(base, HIGHEST)) as f:
            recorded = int(f.read().strip() or 0)
    except FileNotFoundError:
        pass
    except ValueError as err:
        raise ValueError(f"{os.path.join(base, HIGHEST)}: not a version number: {err}") from None
    return max(recorded, latest(base) or 0)


def publish(staged: str, base: str) -> int:
    """Renames ``staged`` to the next version under ``base`` (inside ``writing(base)``); returns that version,
    one more than any version ever published there, and records it."""
    version = highest_published(base) + 1
    target = os.path.join(base, str(version))
    os.rename(staged, target)
    record = os.path.join(base, HIGHEST)
    with open(record + ".tmp", "w") as f:
        f.write(f"{version}\n")
    os.replace(record + ".tmp", record)
    return version


def discard(staged: str) -> None:
    """Removes a staging directory (after a failure)."""
    shutil.rmtree(staged, ignore_errors=True)
