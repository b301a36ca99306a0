"""The TensorFlow settings the entry points make before TensorFlow's import (trainer/environment.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from trainer import environment
from wals2 import threads


@pytest.mark.parametrize("driver, level", [(True, "2"), (False, "3")])
def test_defaults_follow_the_machine_and_keep_what_the_user_set(tmp_path, monkeypatch, driver, level):
    marker = tmp_path / "version"
    if driver:
        marker.write_text("NVRM version: 550.54\n")
    monkeypatch.setattr(environment, "NVIDIA_DRIVER", str(marker))
    monkeypatch.setattr(threads, "available_cores", lambda: 6)
    environ: dict[str, str] = {}
    environment.set_defaults(environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": level, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_NUM_INTRAOP_THREADS": "3"}
    mine = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "0"}
    environment.set_defaults(mine)
    assert mine == {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "0"}
    serving: dict[str, str] = {}
    environment.set_defaults(serving, training=False)  # the server keeps TensorFlow's thread count
    assert serving == {"TF_CPP_MIN_LOG_LEVEL": level, "TF_ENABLE_ONEDNN_OPTS": "1"}


@pytest.mark.parametrize("cores, intra", [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (16, 8), (96, 48)])
def test_intra_op_threads_give_each_concurrent_chunk_one_share_of_the_cores(cores, intra):
    assert threads.PARALLEL_CHUNKS == 2  # the table above is for two chunks at a time
    assert threads.intra_op_threads(cores) == intra


def test_intra_op_threads_default_to_the_cores_this_process_may_use():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert threads.available_cores() == cores
    assert threads.intra_op_threads() == max(1, cores // threads.PARALLEL_CHUNKS)
    for bad in (0, -2, 2.0, True, "4"):
        with pytest.raises(ValueError, match=f"`cores` should be a positive integer. Received: cores={bad!r}"):
            threads.intra_op_threads(bad)


def test_every_entry_point_sets_them_before_importing_tensorflow():
    """Importing an entry point's module sets the variables; the trainer's and the tuner's import no TensorFlow
    (their main does), and the server's sets them first thing."""
    code = (
        "import os, sys\n"
        "from wals2 import threads\n"
        "for name in ('trainer.task', 'tuning.search', 'trainer.serve'):\n"
        "    os.environ.pop('TF_ENABLE_ONEDNN_OPTS', None)\n"
        "    os.environ.pop('TF_NUM_INTRAOP_THREADS', None)\n"
        "    __import__(name)\n"
        "    assert os.environ.get('TF_ENABLE_ONEDNN_OPTS') == '1', name\n"
        "    intra = None if name == 'trainer.serve' else str(threads.intra_op_threads())\n"
        "    assert os.environ.get('TF_NUM_INTRAOP_THREADS') == intra, name\n"
        "    assert name == 'trainer.serve' or 'tensorflow' not in sys.modules, name\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout == "ok\n", result.stderr
