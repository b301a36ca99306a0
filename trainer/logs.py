"""One log stream and format for every entry point (trainer, tuner, server, pipeline).

The library only creates loggers (``logging.getLogger(__name__)``); entry points call :func:`configure` once,
first thing in ``main``. Records go to stdout, one line each, flushed per line so that a Vertex AI / Kubernetes
log stream shows them as they happen::

    2026-12-03T12:00:00.123Z INFO trainer.job: sweep 1/20 ...
"""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The one record format: UTC ISO-8601 timestamp with milliseconds, level, logger name, message."""

_QUIET = ("absl", "tensorflow", "h5py", "urllib3", "matplotlib")


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def configure(verbose: bool = False, stream=None) -> None:
    """Sends every record to one handler on ``stream`` (stdout by default) in :data:`FORMAT`.

    Args:
        verbose: DEBUG level, and TensorFlow's / absl's INFO lines too; otherwise INFO, and those libraries'
            WARNING and above only.
        stream: where the lines go; ``sys.stdout`` (line-buffered) when None.
    """
    if stream is None:
        stream = sys.stdout
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_UTCFormatter(FORMAT))
    handler._wals2 = True  # replaced by the next call; other handlers (a host's, pytest's) are left alone
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_wals2", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
