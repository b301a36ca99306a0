"""The TensorFlow settings every entry point makes before TensorFlow's import (they are read once, at import).

Each applies only when the variable is unset; a value the user set is kept.

* ``TF_CPP_MIN_LOG_LEVEL``: 2 (TensorFlow's C++ INFO and WARNING lines off) on a machine with an NVIDIA driver,
  so that a broken GPU set-up still shows its error lines (``failed call to cuInit``); 3 (its ERROR lines off
  too) on a machine without one, where the only such lines are the missing driver's ``failed call to cuInit``
  and, in a multi-worker job, the collectives' ``StartAbort`` as the workers shut down. Every failure also
  reaches Python as an exception, which the entry points log on their own stream.
* ``TF_ENABLE_ONEDNN_OPTS``: 1. TensorFlow turns its oneDNN CPU kernels on by itself only on CPUs with AVX-512
  VNNI or AMX; on AVX2-only CPUs the sweep's Gram matmuls run 2-5x and whole sweeps 1.2-2.3x faster with them,
  with factors equal within float32 rounding (``benchmarks/README.md``). 0 turns them off.
* ``TF_NUM_INTRAOP_THREADS`` (where the process trains, ``training=True``): ``wals2.threads.intra_op_threads()``,
  max(1, cores // 2), one share of the cores per chunk a half-sweep runs at once (see ``wals2.threads``; with
  TensorFlow's default of every core per kernel, a sweep on 2 cores took 1.03-1.38x the time). 0 is TensorFlow's
  default. The model server keeps TensorFlow's default: a request is one batch of kernels, nothing runs beside it.

This module imports nothing but the standard library; with ``training`` it imports ``wals2.threads`` (which imports
nothing else), so that the model server, which serves without the ``wals2`` package, never imports it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: Present when an NVIDIA kernel driver is loaded (Linux).
NVIDIA_DRIVER = "/proc/driver/nvidia/version"


def has_nvidia_driver() -> bool:
    """Whether this machine has a loaded NVIDIA driver (the only case where CUDA errors can be acted on)."""
    return os.path.exists(NVIDIA_DRIVER)


def set_defaults(environ: MutableMapping[str, str] = os.environ, *, training: bool = True) -> None:
    """Sets ``TF_CPP_MIN_LOG_LEVEL``, ``TF_ENABLE_ONEDNN_OPTS`` and, with ``training``, ``TF_NUM_INTRAOP_THREADS``
    in ``environ`` where unset (module docstring)."""
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if has_nvidia_driver() else "3")
    environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if training:
        from wals2 import threads  # the standard library only

        environ.setdefault(threads.INTRA_OP_VARIABLE, str(threads.intra_op_threads()))
