"""Numbered model versions, ``<models-dir>/<name>/<version>/`` (the layout TF Serving watches), written atomically.

A version is staged in a hidden sibling directory (``.staging-*``, which TF Serving and version listings ignore) and
renamed into place, so a reader sees either no version N or all of it. A staging directory is named after its
writer, ``.staging-<host>-<pid>-<random>``, so that ``sweep`` removes the ones a killed run left at once when that
run was on this host (its process is gone), and the others once untouched for ``STALE_STAGING_S``. A number is never
given twice: ``.last-version`` records the highest number published, so that removing a version (a rollback) does
not make its number come back with another model.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
LAST_VERSION = ".last-version"
STALE_STAGING_S = 6 * 3600  # a staging directory untouched this long belongs to no live run


def versions(base: str) -> list[int]:
    """The version numbers under ``base`` (directories named by a positive integer), ascending."""
    return list(directories(base))


def directories(base: str) -> dict[int, str]:
    """version -> the path of its directory under ``base``, ascending. As TF Serving (and ``serving.versions``), a
    name is read as its number, so ``0003`` is version 3 (of two names of one number, the first in sorted order)."""
    if not os.path.isdir(base):
        return {}
    found: dict[int, str] = {}
    for entry in sorted(os.listdir(base)):
        if entry.isascii() and entry.isdigit() and int(entry) > 0 and os.path.isdir(os.path.join(base, entry)):
            found.setdefault(int(entry), os.path.join(base, entry))
    return dict(sorted(found.items()))


def latest(base: str) -> int | None:
    """The highest version under ``base``, or None when there is none."""
    found = versions(base)
    return found[-1] if found else None


def stage(base: str) -> str:
    """A new, empty staging directory ``<base>/.staging-<host>-<pid>-<random>`` (created with its parents)."""
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{_host()}-{os.getpid()}-", dir=base)


def _host() -> str:
    """This host's name with only the characters a staging name may hold (``-`` separates the name's fields)."""
    return "".join(c if c.isalnum() or c == "." else "_" for c in socket.gethostname()) or "_"


def _abandoned(entry: str) -> bool:
    """Whether staging directory ``entry`` was made by a process of this host that has ended."""
    fields = entry[len(STAGING_PREFIX) :].split("-")
    if len(fields) != 3 or fields[0] != _host() or not fields[1].isdigit():
        return False
    pid = int(fields[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        pass
    return False


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
    """Removes the staging directories under ``base`` that a run left: made by an ended process of this host, or
    (from another host, or named otherwise) untouched for ``older_than_s`` seconds; returns them."""
    if not os.path.isdir(base):
        return []
    now, removed = time.time(), []
    for entry in os.listdir(base):
        path = os.path.join(base, entry)
        if not (entry.startswith(STAGING_PREFIX) and os.path.isdir(path)):
            continue
        if _abandoned(entry) or now - os.path.getmtime(path) >= older_than_s:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            logger.info("removed the stale staging directory %s", path)
    return removed
