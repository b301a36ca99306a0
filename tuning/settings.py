"""The settings of a search project, stored in its directory so that other settings never resume it silently.

keras-tuner resumes any project it finds under ``--directory``/``--project-name``; trials scored on other data,
another objective or another search space would then be ranked with the new ones. ``check`` compares the settings
of this run with the ``search_settings.json`` of the project (written by ``write`` when the project starts) and
refuses a project whose settings differ, or one without the file whose state keras-tuner would reload.
"""

from __future__ import annotations

import json
import logging
import posixpath

import tensorflow as tf

logger = logging.getLogger(__name__)

FILENAME = "search_settings.json"


class SettingsMismatch(ValueError):
    """The project directory holds a search with other settings."""


def settings(algorithm: str, objective: tuple[str, str], space: list[dict], base: dict, data: dict) -> dict:
    """The settings that make two searches' trials comparable (the trial budget is not one: a search resumed with
    a larger ``--max-trials`` runs more trials of the same search).

    Args:
        algorithm: the keras-tuner algorithm.
        objective: (name, direction).
        space: the search space, ``HyperParameters.get_config()['space']``.
        base: the fixed hyperparameters (``WALSConfig.to_dict()``: mode, sweeps, seed, ...).
        data: what identifies the training and validation entries (digests, shape, split options).
    """
    return {
        "algorithm": algorithm,
        "objective": list(objective),
        "search_space": space,
        "hyperparameters": base,
        "data": data,
    }


def _normal(value):
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for each setting (one level down in dictionaries) that differs."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            lines += [f"{key}.{line}" for line in differences(old, new)]
        elif old != new:
            lines.append(f"{key}: {json.dumps(old)} -> {json.dumps(new)}")
    return lines


def check(project_dir: str, current: dict) -> bool:
    """Whether ``project_dir`` holds a search of the ``current`` settings to resume (False: no search there yet).

    Raises:
        SettingsMismatch: the project's settings differ from ``current``, or the project has keras-tuner state but
            no settings file; the message lists the differences and suggests ``--overwrite``.
        DamagedProject: a settings or keras-tuner state file is not valid JSON (named in the message).
    """
    path = posixpath.join(project_dir, FILENAME)
    advice = "pass --overwrite to delete it and start afresh, or choose another --project-name"
    if not tf.io.gfile.exists(path):
        state = tf.io.gfile.glob(posixpath.join(project_dir, "*.json")) if tf.io.gfile.isdir(project_dir) else []
        if state:
            raise SettingsMismatch(
                f"{project_dir} holds a keras-tuner project ({posixpath.basename(state[0])}) without {FILENAME}, so "
                f"its search settings are unknown; {advice}."
            )
        return False
    saved = load_json(path)
    for state in _state_files(project_dir):  # what keras-tuner will reload, checked while the file can be named
        load_json(state)
    changed = differences(saved, _normal(current))
    if changed:
        shown = changed[:8] + ([f"... and {len(changed) - 8} more"] if len(changed) > 8 else [])
        raise SettingsMismatch(
            f"{project_dir} holds a search with other settings, which this run would resume and mix with its own "
            f"trials; {advice}. Differences (project -> this run):\n  " + "\n  ".join(shown)
        )
    return True


class DamagedProject(ValueError):
    """A file of the project directory is not valid JSON (a search killed while writing it, or an edit)."""


def load_json(path: str):
    """The JSON content of a project file.

    Raises:
        DamagedProject: the file is not valid JSON; the message names it, the position and how to go on.
    """
    with tf.io.gfile.GFile(path) as handle:
        text = handle.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DamagedProject(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}; {len(text)} bytes): the "
            "search project is damaged (a search killed while writing it?); restore the file, or pass --overwrite to "
            "delete the project and start afresh"
        ) from None


def _state_files(project_dir: str) -> list[str]:
    """keras-tuner's state in ``project_dir``: the oracle's and tuners' JSON files and each trial's."""
    top = tf.io.gfile.glob(posixpath.join(project_dir, "*.json"))
    trials = tf.io.gfile.glob(posixpath.join(project_dir, "trial_*", "trial.json"))
    return sorted(p for p in top if posixpath.basename(p) != FILENAME) + sorted(trials)


def write(project_dir: str, current: dict) -> None:
    """Stores ``current`` as the project's settings."""
    tf.io.gfile.makedirs(project_dir)
    with tf.io.gfile.GFile(posixpath.join(project_dir, FILENAME), "w") as handle:
        handle.write(json.dumps(_normal(current), indent=2, sort_keys=True) + "\n")
