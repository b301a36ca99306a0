"""The pip extra that provides each optional module, for the message of an entry point run without it.

This module imports nothing: the entry points use it before (or instead of) their optional imports.
"""

from __future__ import annotations

#: Top-level module -> the ``setup.py`` extra that installs it.
EXTRAS = {
    "starlette": "serve",
    "uvicorn": "serve",
    "h11": "serve",
    "prometheus_client": "serve",
    "grpc": "serve",
    "tensorflow_serving": "serve",
    "keras_tuner": "tuning",
    "sklearn": "tuning",
    "duckdb": "pipeline-local",
    "sqlglot": "pipeline-local",
    "kfp": "pipeline",
    "google_cloud_pipeline_components": "pipeline",
    "hypertune": "vertex",
    "tensorflow_datasets": "vertex",
}


def missing(err: ModuleNotFoundError, what: str) -> str:
    """The message of ``what`` (e.g. "python -m trainer.serve") lacking the module of ``err``, naming its extra.

    Raises:
        ModuleNotFoundError: ``err`` itself, for a module no extra provides (a broken install, not a missing extra).
    """
    top = (err.name or "").split(".")[0]
    if top not in EXTRAS:
        raise err
    return f"{what} needs {top}, which the {EXTRAS[top]} extra installs: pip install 'wals2[{EXTRAS[top]}]'"
