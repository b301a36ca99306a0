"""The library stays at the bottom: importing wals2 pulls in no entry point and no optional heavy package."""

import subprocess
import sys

import pytest
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


@pytest.mark.parametrize(
    "blocked, entry, argv, extra",
    [
        ("starlette", "serving.cli", ["--model-dir", "/nonexistent"], "serve"),
        ("keras_tuner", "tuning.search", ["--max-trials", "1"], "tuning"),
        ("duckdb", "pipeline.local", ["--export", "/nonexistent", "--models-dir", "/nonexistent"], "pipeline-local"),
    ],
)
def test_an_entry_point_without_its_extra_names_the_extra(blocked, entry, argv, extra, tmp_path):
    """Run as if the extra were not installed (its module blocked): exit 1 with one line naming the extra."""
    code = f"import sys; sys.modules[{blocked!r}] = None\nfrom {entry} import main\nsys.exit(main({argv!r}))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    want = f"needs {blocked}, which the {extra} extra installs: pip install 'wals2[{extra}]'"
    assert want in out.stdout + out.stderr and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
