"""Numbered model versions, ``<models-dir>/<name>/<version>/`` (the layout TF Serving watches), written atomically.

A version is staged in a hidden sibling directory (``.staging-*``, which TF Serving and version listings ignore)
and renamed into place, so a reader sees either no version N or all of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"


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
    version = (latest(base) or 0) + 1
    while True:
        target = os.path.join(base, str(version))
        if not os.path.exists(target):
            try:
                os.rename(staged, target)
                return version
            except OSError:
                if not os.path.exists(target):
                    raise
        version += 1


def discard(staged: str) -> None:
    """Removes a staging directory (after a failure)."""
    shutil.rmtree(staged, ignore_errors=True)
