"""The TensorFlow settings the entry points make before TensorFlow's import (trainer/environment.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from trainer import environment


@pytest.mark.parametrize("driver, level", [(True, "2"), (False, "3")])
def test_defaults_follow_the_machine_and_keep_what_the_user_set(tmp_path, monkeypatch, driver, level):
    marker = tmp_path / "version"
    if driver:
        marker.write_text("NVRM version: 550.54\n")
    monkeypatch.setattr(environment, "NVIDIA_DRIVER", str(marker))
    environ: dict[str, str] = {}
    environment.set_defaults(environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": level, "TF_ENABLE_ONEDNN_OPTS": "1"}
    mine = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "0"}
    environment.set_defaults(mine)
    assert mine == {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "0"}


def test_every_entry_point_sets_them_before_importing_tensorflow():
    """Importing an entry point's module sets the variables; the trainer's and the tuner's import no TensorFlow
    (their main does), and the server's sets them first thing."""
    code = (
        "import os, sys\n"
        "for name in ('trainer.task', 'tuning.search', 'trainer.serve'):\n"
        "    os.environ.pop('TF_ENABLE_ONEDNN_OPTS', None)\n"
        "    __import__(name)\n"
        "    assert os.environ.get('TF_ENABLE_ONEDNN_OPTS') == '1', name\n"
        "    assert name == 'trainer.serve' or 'tensorflow' not in sys.modules, name\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout == "ok\n", result.stderr
