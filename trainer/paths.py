"""Checks of the job's local paths that run before TensorFlow is imported, so that a mistyped ``--train-file``
or a ``--job-dir`` that already holds a run fails in well under a second instead of after TensorFlow's import.

URL paths (``gs://``, ``ram://``, ...) need ``tf.io.gfile`` and are checked where they are opened
(``trainer.cli.load_part``, ``trainer.artifacts.Staging``), with the same messages.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath

#: The commit marker: present in a destination exactly when all of a run's outputs are there
#: (``trainer.artifacts``).
MARKER = "_SUCCESS"


def is_url(path: str) -> bool:
    """Whether ``path`` names a file system that only ``tf.io.gfile`` reaches (``scheme://...``)."""
    return "://" in path


def missing_input(path: str) -> str:
    return f"ratings file not found: {path}"


def already_committed(destination: str) -> str:
    return (
        f"output directory {destination} already holds the committed outputs of a run ({MARKER}); choose a new "
        "--job-dir (or a new $AIP_MODEL_DIR: the run's output directory is its parent, as on Vertex AI)"
    )


def not_a_directory(destination: str, blocker: str) -> str:
    if blocker == destination:
        return f"output directory {destination} exists and is not a directory"
    return f"output directory {destination} is not writable: {blocker} is a file, not a directory"


def check_local(input_path: str | None, output: str | None) -> None:
    """Raises what the job would raise later for a local ``input_path`` (the ratings file) that is missing or a
    directory, and for a local ``output`` directory that is a file, lies below a file, or holds a committed run.

    Raises:
        FileNotFoundError: the ratings file does not exist.
        ValueError: the ratings file is a directory; the output directory cannot be used.
    """
    if input_path and not is_url(input_path):
        if not os.path.exists(input_path):
            raise FileNotFoundError(missing_input(input_path))
        if os.path.isdir(input_path):
            raise ValueError(f"{input_path}: is a directory, expected a ratings file")
    if output and not is_url(output):
        output = output.rstrip("/") or output
        ancestor = output
        while ancestor and not os.path.exists(ancestor):
            parent = posixpath.dirname(ancestor)
            ancestor = parent if parent != ancestor else ""
        if ancestor and not os.path.isdir(ancestor):
            raise ValueError(not_a_directory(output, ancestor))
        if os.path.exists(posixpath.join(output, MARKER)):
            raise ValueError(already_committed(output))


def open_binary(path: str):
    """``path`` opened for reading bytes: with ``open`` when local (no TensorFlow), else ``tf.io.gfile``."""
    if not is_url(path):
        return open(path, "rb")  # noqa: SIM115 (the caller's context manager closes it)
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "rb")


def sha256(path: str, gunzip: bool = False) -> str:
    """The SHA-256 of the bytes of ``path`` (decompressed first with ``gunzip``), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open_binary(path) as raw:
        stream = gzip.GzipFile(fileobj=raw) if gunzip else raw
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
