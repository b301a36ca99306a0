"""WALSConfig validation and the command-line flags generated from it (round trip)."""

import dataclasses
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import ROOT, shared_file

from trainer import cli, flags
from trainer.cli import build_parser, resolve_configs
from trainer.config import TaskConfig
from wals2.config import WALSConfig


def parse(argv):
    return resolve_configs(build_parser().parse_args(argv))


def test_defaults_are_tf1_effective_defaults():
    task, config, preset = parse([])
    assert (config.latent_factors, config.num_iters, config.regularization, config.unobs_weight) == (5, 20, 0.07, 0.01)
    assert (config.wt_type, config.feature_wt_factor, config.feature_wt_exp) == (1, 130.0, 0.08)
    assert task.delimiter == "\t" and task.test_fraction == 0.1 and preset is None


def test_round_trip_config_to_flags_to_config():
    config = WALSConfig(
        latent_factors=17,
        num_iters=3,
        regularization=2.5,
        unobs_weight=0.0,
        wt_type=0,
        feature_wt_factor=9.0,
        feature_wt_exp=1.5,
        weights=False,
        init="scaled",
        seed=9,
        compute_loss=True,
        batch_entries=1000,
        max_row_length=64,
        solver="subspace",
        subspace_block=16,
        subspace_sweeps=3,
    )
    task = TaskConfig(
        train_file="ratings.dat",
        gcs_bucket="gs://b",
        job_dir="ram://job",
        output_dir="ram://out",
        checkpoint_dir="ram://ck",
        tensorboard_log_dir="ram://tb",
        delimiter="::",
        headers=True,
        use_optimized=False,
        test_fraction=0.25,
        validation_fraction=0.15,
        split="time",
        top_k=20,
        hypertune=True,
        verbose_logging=True,
    )
    tfds_task = TaskConfig(dataset="ml-20m", data_dir="gs://b/tfds", split="per_user")
    argv = flags.to_argv(config) + flags.to_argv(task)
    got_task, got_config, _ = parse(argv)
    assert got_config == config
    assert got_task == task
    assert parse(flags.to_argv(tfds_task))[0] == tfds_task
    # every field has a flag
    parser = build_parser()
    for cls in (WALSConfig, TaskConfig):
        for field in dataclasses.fields(cls):
            assert any(flags.flag_name(field) in action.option_strings for action in parser._actions), field.name


def test_tf1_flag_spellings_and_name_value_form():
    _, config, _ = parse(["--latent_factors=34", "--num_iters", "3", "--wt_type=log", "--unobs_weight=0.5"])
    assert (config.latent_factors, config.num_iters, config.wt_type, config.unobs_weight) == (34, 3, 0, 0.5)
    task, _, _ = parse(["--train-file=x.csv", "--job-dir=out", "--delimiter=,", "--headers", "--use-optimized"])
    assert (task.train_file, task.job_dir, task.delimiter, task.headers, task.use_optimized) == (
        "x.csv",
        "out",
        ",",
        True,
        True,
    )


def test_use_optimized_preset_and_explicit_flags_win():
    _, config, preset = parse(["--use-optimized"])
    assert preset == "tf1-optimized-ratings"
    assert (config.latent_factors, config.regularization, config.unobs_weight, config.feature_wt_factor) == (
        34,
        9.83,
        0.001,
        189.8,
    )
    _, config, _ = parse(["--use-optimized", "--latent_factors=8"])
    assert config.latent_factors == 8 and config.regularization == 9.83


def test_web_views_forces_power_law_weights():
    _, config, _ = parse(["--data-type=web_views", "--train-file=v.csv"])
    assert config.wt_type == 0
    _, config, preset = parse(["--data-type=web_views", "--use-optimized", "--train-file=v.csv"])
    assert (config.latent_factors, config.regularization, config.feature_wt_exp, preset) == (
        30,
        7.27,
        5.05,
        "tf1-optimized-web_views",
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_factors": 0}, r"`latent_factors` should be a positive integer. Received: latent_factors=0"),
        ({"regularization": -1.0}, r"`regularization` should be a finite number > 0"),
        ({"unobs_weight": float("nan")}, r"`unobs_weight` should be a finite number >= 0"),
        ({"wt_type": 2}, r"`wt_type` should be 0 \('log', power law\) or 1 \('linear'\). Received: wt_type=2"),
        ({"init": "zeros"}, r"`init` should be one of"),
        ({"num_iters": 1.5}, r"`num_iters` should be a positive integer"),
        ({"num_iters": 0}, r"`num_iters` should be a positive integer \(0 sweeps would leave the random initial"),
        ({"subspace_block": 0}, r"`subspace_block` should be a positive integer. Received: subspace_block=0"),
        ({"subspace_sweeps": 2.5}, r"`subspace_sweeps` should be a positive integer. Received: subspace_sweeps=2.5"),
        ({"solver": "lu"}, r"`solver` should be one of \('cholesky', 'cg', 'subspace'\). Received: solver='lu'"),
    ],
)
def test_config_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WALSConfig(**kwargs)


def test_wt_type_names():
    assert WALSConfig(wt_type="linear").wt_type == 1
    assert WALSConfig(wt_type="LOG").wt_type == 0
    assert WALSConfig(wt_type=0).wt_type_name == "log"


def test_use_optimized_picks_the_preset_of_the_mode_and_data_set(tmp_path, capsys):
    import gzip
    import shutil

    from trainer.presets import TUNED

    _, config, preset = parse(["--mode=explicit", "--use-optimized"])  # the bundled latest-small
    assert preset == "explicit-tuned-ml-latest-small"
    assert config.latent_factors == TUNED["explicit"]["ml-latest-small"]["latent_factors"]
    # Recognised by content, whatever the file is called (and gzip-compressed too).
    renamed = tmp_path / "mine.tsv"
    shutil.copy(shared_file("ml-100k", "u.data"), renamed)
    _, config, preset = parse(["--mode=implicit", "--use-optimized", f"--train-file={renamed}"])
    assert preset == "implicit-tuned-ml-100k" and config.alpha == TUNED["implicit"]["ml-100k"]["alpha"]
    zipped = tmp_path / "ratings.gz"
    zipped.write_bytes(gzip.compress(renamed.read_bytes()))
    _, config, preset = parse(["--mode=implicit", "--use-optimized", f"--train-file={zipped}", "--alpha=3"])
    assert preset == "implicit-tuned-ml-100k" and config.alpha == 3.0  # explicit flags win
    raw = shared_file("ml-latest-small", "ratings.csv")
    _, config, preset = parse(["--mode=explicit", "--use-optimized", f"--train-file={raw}", "--headers"])
    assert preset == "explicit-tuned-ml-latest-small"
    # Other data (here u.data with one rating changed, the same size): refused with the list of presets.
    other = tmp_path / "u.data"
    text = renamed.read_bytes()
    other.write_bytes(text[:9] + (b"4" if text[9:10] != b"4" else b"5") + text[10:])
    for argv in ([f"--train-file={other}"], ["--dataset=ml-1m"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.parse(["--mode=explicit", "--use-optimized", *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert (
            "there is no tuned explicit preset for" in err
            and "Presets of the explicit mode: ml-100k, ml-latest-small" in err
        )
    # TF1's presets are per data type, for any data (as in TF1).
    _, config, preset = parse(["--mode=tf1", "--use-optimized", "--dataset=ml-1m"])
    assert preset == "tf1-optimized-ratings" and config.latent_factors == 34
    _, config, preset = parse(["--use-optimized", f"--train-file={other}"])
    assert preset == "tf1-optimized-ratings"


def test_help_lists_the_choices_and_states_each_default_once():
    from wals2.config import INITS, MODES, SOLVERS

    parser = build_parser()
    text = parser.format_help()
    for flag, choices in (("--mode", MODES), ("--init", INITS), ("--solver", SOLVERS)):
        assert f"{flag} {{{','.join(choices)}}}" in text
    assert "(default: None)" not in text
    for action in parser._actions:
        if action.help and action.help != "==SUPPRESS==":
            assert len(re.findall(r"\bdefault\b", action.help, re.IGNORECASE)) <= 1, action.help
    job_dir = next(a for a in parser._actions if "--job-dir" in a.option_strings).help
    assert job_dir == "Output directory (default: the parent of $AIP_MODEL_DIR, else jobs/<timestamp>)."
    assert parse(["--solver=cg", "--init=scaled"])[1].solver == "cg"
    config = parse(["--solver", "subspace", "--subspace-block", "128", "--subspace_sweeps=2"])[1]
    assert (config.solver, config.subspace_block, config.subspace_sweeps) == ("subspace", 128, 2)
    assert parse(["--subspace_block=32"])[1].subspace_block == 32
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--solver=lu"])


#: Runs ``python -m trainer.task`` with the given arguments in this process, then prints its exit status and
#: whether TensorFlow was imported (the supervisor of a multi-worker job is not involved: no TF_CONFIG).
RUN_TASK = """
import runpy, sys
sys.argv = ["trainer.task", *sys.argv[1:]]
try:
    runpy.run_module("trainer.task", run_name="__main__")
except SystemExit as exit:
    print("status", exit.code, "tensorflow" in sys.modules, flush=True)
"""


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["--help"], 0, "usage: python -m trainer.task"),
        (["--latent_factors=abc"], 2, "argument --latent_factors: invalid int value: 'abc'"),
        (["--num_iters=0"], 2, "`num_iters` should be a positive integer"),
        (["--mode=bpr"], 2, "argument --mode: invalid choice: 'bpr'"),
        (["--dataset=ml-1m", "--train-file=x"], 2, "`dataset` and `train_file` should not both be given"),
    ],
)
def test_help_and_flag_errors_answer_without_tensorflow(argv, status, message):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "CLUSTER_SPEC")}
    env["PYTHONPATH"] = str(ROOT)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", RUN_TASK, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    seconds = time.perf_counter() - start
    assert out.stdout.strip().splitlines()[-1] == f"status {status} False", (out.stdout, out.stderr)
    assert message in out.stdout + out.stderr
    assert seconds < 3.0  # importing TensorFlow alone takes longer than this (about 5 s on 2 cores)


def test_search_help_states_the_defaults_the_search_applies():
    pytest.importorskip("keras_tuner")
    from tuning import search

    actions = {a.option_strings[0]: a for a in search.build_parser()._actions if a.option_strings}
    assert search.TASK_DEFAULTS == {"validation_fraction": 0.1}
    assert actions["--validation-fraction"].help.endswith("(default: 0.1)")
    assert actions["--test-fraction"].help.endswith("(default: 0.1)")  # the trainer's own
    assert build_parser()._option_string_actions["--validation-fraction"].help.endswith("(default: 0.0)")
    with pytest.raises(ValueError, match=r"`defaults` names fields that TaskConfig lacks: \['validation'\]"):
        flags.add_flags(build_parser(), TaskConfig, "data", defaults={"validation": 0.1})
