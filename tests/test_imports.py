"""The library stays at the bottom: importing wals2 pulls in no entry point and no optional heavy package."""

import subprocess
import sys

from conftest import ROOT


def test_import_wals2_does_not_import_entry_points_or_extras():
    code = (
        "import sys, wals2\n"
        "entry = ('trainer', 'tuning', 'serving', 'uvicorn', 'starlette', 'keras_tuner', 'tensorflow_datasets')\n"
        "bad = [m for m in entry if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
