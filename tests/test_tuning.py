"""keras-tuner search on a tiny data set: objective on validation only, results, resume, Hyperband, failures,
the retrain of the best trial and its trainer command, the project settings, the command line without
TensorFlow, and a distributed search with a chief and two workers on 127.0.0.1."""

import dataclasses
import json
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import time

import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from tuning import cli, settings
from tuning.hypermodel import WALSHyperModel
from tuning.search import is_chief, main, objective, search_space
from wals2 import Ratings, WALSConfig, WALSModel
from wals2.config import LOG_RATINGS
from wals2.modes import mode_of


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    m, n, k = 60, 40, 3
    truth = rng.normal(size=(m, k)) @ rng.normal(size=(n, k)).T
    cells = rng.choice(m * n, size=900, replace=False)
    users, items = np.divmod(cells, n)
    values = np.clip(np.round(3 + truth[users, items]), 1, 5)
    path = tmp_path_factory.mktemp("data") / "ratings.tsv"
    path.write_text(
        "".join(f"{u + 1}\t{i + 1}\t{v:.0f}\t{t}\n" for t, (u, i, v) in enumerate(zip(users, items, values)))
    )
    return str(path)


def run(ratings_file, directory, *extra):
    return main(["--train-file", ratings_file, "--directory", str(directory), "--num_iters", "3", *extra])


def test_search_writes_results_and_best_hyperparameters(ratings_file, tmp_path):
    assert run(ratings_file, tmp_path, "--mode", "explicit", "--algorithm", "random", "--max-trials", "3") == 0
    project = tmp_path / "ratings.tsv-explicit-random"
    best = json.loads((project / "best_hyperparameters.json").read_text())
    results = json.loads((project / "results.json").read_text())
    assert best["objective"] == "val_rmse" and best["mode"] == "explicit"
    assert set(best["hyperparameters"]) == {"latent_factors", "regularization", "scale_regularization"}
    assert 5 <= best["hyperparameters"]["latent_factors"] <= 50
    assert len(results) == 3
    scores = [r["score"] for r in results]
    assert scores == sorted(scores) and best["hyperparameters"]["latent_factors"] == results[0]["latent_factors"]
    assert 0.3 < best["test"]["test_rmse"] < 3.0
    assert (project / "results.md").read_text().startswith("| trial | score |")
    # TensorBoard: each trial's validation RMSE per sweep (its score is the best of them) and the retrain's scalars.
    import tensorflow as tf

    for record in results:
        (events,) = (project / "logs" / record["trial"] / "execution0" / "validation").glob("events.*")
        rmse = [
            float(tf.make_ndarray(v.tensor))
            for e in tf.compat.v1.train.summary_iterator(str(events))
            for v in e.summary.value
            if v.tag == "epoch_rmse"
        ]
        assert len(rmse) == 3 and min(rmse) == pytest.approx(record["score"], rel=1e-6)
    assert list((project / "logs" / f"best_trial_{results[0]['trial']}").glob("events.*"))


@pytest.mark.slow
def test_interrupted_search_resumes(ratings_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tuning.job")
    args = ("--mode", "tf1", "--algorithm", "random", "--project-name", "p")
    assert run(ratings_file, tmp_path, *args, "--max-trials", "2") == 0
    assert "resuming the search" not in caplog.text
    assert run(ratings_file, tmp_path, *args, "--max-trials", "3") == 0  # the same settings, a larger budget
    assert "resuming the search" in caplog.text
    best = json.loads((tmp_path / "p" / "best_hyperparameters.json").read_text())
    model = json.loads((tmp_path / "p" / "best_model" / "config.json").read_text())["model"]
    assert {k: model[k] for k in best["hyperparameters"]} == best["hyperparameters"]  # the new best, retrained
    caplog.clear()
    assert run(ratings_file, tmp_path, *args, "--max-trials", "3") == 0  # finished: no trial, the retrain reused
    assert "reusing it" in caplog.text and "retraining trial" not in caplog.text
    assert len(json.loads((tmp_path / "p" / "results.json").read_text())) == 3  # 2 reloaded + 1 new
    assert run(ratings_file, tmp_path, *args, "--max-trials", "1", "--overwrite") == 0
    assert len(json.loads((tmp_path / "p" / "results.json").read_text())) == 1


def test_search_space_follows_tf1_config_tune():
    hp = kt.HyperParameters()
    values = search_space(hp, mode_of(WALSConfig()))
    assert set(values) == {"latent_factors", "regularization", "unobs_weight", "feature_wt_factor"}
    spaces = {p.name: p for p in hp.space}
    assert (spaces["regularization"].min_value, spaces["regularization"].max_value) == (1e-3, 10.0)
    assert (spaces["latent_factors"].min_value, spaces["latent_factors"].max_value) == (5, 50)
    assert spaces["feature_wt_factor"].sampling == "log"
    web_views = WALSConfig(wt_type=LOG_RATINGS)  # what --data-type web_views sets
    assert "feature_wt_exp" in search_space(kt.HyperParameters(), mode_of(web_views))
    for mode, direction in (("implicit", "max"), ("tf1", "min"), ("explicit", "min")):
        assert objective(mode_of(WALSConfig(mode=mode))).direction == direction


def test_diverging_trial_fails_cleanly():
    train = Ratings(
        np.array([0, 1], np.int32),
        np.array([0, 1], np.int32),
        np.array([1e8, -1e8], np.float32),
        np.arange(2),
        np.arange(2),
    )
    hypermodel = WALSHyperModel(WALSConfig(num_iters=2), train, train)
    # k = 1: the one-entry rows take the k x k path, which overflows (the L x L form stays finite at k = 2).
    model = WALSModel(2, 2, latent_factors=1, regularization=1e-3, feature_wt_factor=1e30)
    model.compile()
    with pytest.raises(kt.errors.FailedTrialError, match="diverged"):
        hypermodel.fit(kt.HyperParameters(), model)


def test_chief_detection():
    assert is_chief({})
    assert is_chief({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_TUNER_ID": "chief"})
    assert not is_chief({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_TUNER_ID": "tuner0"})


@pytest.mark.slow
def test_distributed_search_chief_and_two_workers(ratings_file, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [
        sys.executable,
        "-m",
        "tuning.search",
        "--train-file",
        ratings_file,
        "--directory",
        str(tmp_path),
        "--num_iters",
        "2",
        "--mode",
        "tf1",
        "--algorithm",
        "random",
        "--max-trials",
        "4",
    ]
    procs = []
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            env = dict(
                os.environ,
                KERASTUNER_TUNER_ID=tuner_id,
                KERASTUNER_ORACLE_IP="127.0.0.1",
                KERASTUNER_ORACLE_PORT=str(port),
                TF_CPP_MIN_LOG_LEVEL="2",
            )
            procs.append(
                subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        outputs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    project = tmp_path / "ratings.tsv-tf1-random"
    results = json.loads((project / "results.json").read_text())
    assert len(results) == 4
    ran = {tuner: f"{tuner}: fitting" in out for tuner, out in zip(("tuner0", "tuner1"), outputs[1:])}
    assert all(ran.values()), ran  # both workers ran trials; only the chief wrote the results
    assert "best val_rmse" in outputs[0] and "best val_rmse" not in outputs[1] + outputs[2]


#: Runs ``python -m tuning.search`` with the given arguments in this process, then prints its exit status and
#: whether TensorFlow and keras-tuner were imported.
RUN_SEARCH = """
import runpy, sys
sys.argv = ["tuning.search", *sys.argv[1:]]
try:
    runpy.run_module("tuning.search", run_name="__main__")
except SystemExit as exit:
    print("status", exit.code, "tensorflow" in sys.modules, "keras_tuner" in sys.modules, flush=True)
"""


@pytest.mark.parametrize(
    "argv, status, message",
    [
        (["--help"], 0, "usage: python -m tuning.search"),
        (["--hypertune"], 2, "--hypertune is not accepted by a search: a search is not a trial of a Vertex AI"),
        (["--use-optimized"], 2, "--use-optimized is not accepted by a search: the presets set only"),
        (["--collective-timeout=5"], 2, "--collective-timeout is not accepted by a search"),
        (["--validation-fraction=0"], 2, "`validation_fraction` should be > 0 for a search"),
        (["--algorithm=grid"], 2, "argument --algorithm: invalid choice: 'grid'"),
        (["--max-trials=0"], 2, "`max_trials` should be a positive integer"),
        (["--dataset=ml-1m", "--train-file=x"], 2, "`dataset` and `train_file` should not both be given"),
    ],
)
def test_help_and_flag_errors_answer_without_tensorflow(argv, status, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CONFIG", "CLUSTER_SPEC", "KERASTUNER"))}
    env["PYTHONPATH"] = str(ROOT)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", RUN_SEARCH, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    seconds = time.perf_counter() - start
    assert out.stdout.strip().splitlines()[-1] == f"status {status} False False", (out.stdout, out.stderr)
    assert message in out.stdout + out.stderr
    assert seconds < 3.0  # importing TensorFlow alone takes longer than this (about 5 s on 2 cores)


def test_help_states_the_defaults_the_search_uses():
    parser = cli.build_parser()
    search, task, base, fixed = cli.parse([], parser)
    used = {**dataclasses.asdict(search), **task.to_dict(), **base.to_dict()}
    stated = {}
    for action in parser._actions:
        found = re.search(r"\(default: (.+)\)$", action.help or "")
        if found:
            stated[action.dest] = found.group(1)
    assert stated["validation_fraction"] == "0.1" and task.validation_fraction == 0.1  # the trainer's is 0.0
    assert {k: (v, used[k]) for k, v in stated.items() if v != repr(used[k])} == {}
    assert len(stated) >= 20 and fixed == frozenset()
    listed = {a.dest for a in parser._actions if a.help != "==SUPPRESS=="}
    assert listed.isdisjoint(cli.REFUSED) and {"job_dir", "export_top_k", "tensorboard_log_dir"} <= listed
    assert cli.parse(["--hypertune=false", "--latent_factors=7"], parser)[3] == {"latent_factors"}


def test_the_trainer_command_parses_back_to_the_retrain_configs():
    from trainer.cli import parse as trainer_parse
    from trainer.config import TaskConfig

    task = TaskConfig(
        train_file="my data/r.csv",
        delimiter=",",
        headers=True,
        split="per_user",
        test_fraction=0.2,
        validation_fraction=0.1,
        top_k=5,
        export_top_k=3,
        tensorboard_log_dir="tb",
    )
    config = WALSConfig(
        mode="explicit", latent_factors=7, regularization=0.123456789012345, scale_regularization=True, weights=False
    )
    retrain = cli.retrain_task(task, "out", "checkpoints")
    assert (retrain.validation_fraction, retrain.job_dir, retrain.checkpoint_dir) == (0.0, "out", "checkpoints")
    argv = shlex.split(cli.trainer_command(retrain, config))
    assert argv[:3] == ["python", "-m", "trainer.task"] and "--no-weights" in argv and "--headers" in argv
    parsed_task, parsed_config, preset = trainer_parse(argv[3:])
    assert parsed_config == config and preset is None
    assert parsed_task == dataclasses.replace(retrain, job_dir=None, checkpoint_dir=None, tensorboard_log_dir=None)


#: metrics.json entries that are timings, not results.
TIMINGS = ("median_seconds_per_sweep", "first_sweep_seconds", "load_seconds")


@pytest.mark.slow
def test_the_best_trial_is_retrained_and_its_printed_trainer_command_reproduces_it(ratings_file, tmp_path, capsys):
    from trainer import task as trainer_task

    searched, again = tmp_path / "best", tmp_path / "again"
    args = ("--mode", "explicit", "--algorithm", "random", "--max-trials", "2", "--latent_factors", "4")
    assert run(ratings_file, tmp_path / "runs", *args, "--job-dir", str(searched), "--export-top-k", "3") == 0
    command = re.search(r"reproduce it with .*\n +(python -m trainer\.task .*)\n", capsys.readouterr().out).group(1)
    project = tmp_path / "runs" / "ratings.tsv-explicit-random"
    best = json.loads((project / "best_hyperparameters.json").read_text())
    results = json.loads((project / "results.json").read_text())
    assert best["trainer_command"] == command and best["output_dir"] == str(searched)
    assert best["score"] == results[0]["score"] == min(r["score"] for r in results)
    argv = shlex.split(command)
    assert "--export-top-k=3" in argv and not {a.split("=")[0] for a in argv} & {"--job-dir", "--validation-fraction"}
    assert trainer_task.main([*argv[3:], "--job-dir", str(again)]) == 0

    for name in ("row", "col", "row_bias", "col_bias", "user", "item", "global_mean"):
        np.testing.assert_array_equal(
            np.load(searched / "model" / f"{name}.npy"), np.load(again / "model" / f"{name}.npy")
        )
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (searched, again)]
    for record in metrics:
        for key in TIMINGS:
            record.pop(key)
    assert metrics[0] == metrics[1]
    # Retrained on train + validation: the 900 ratings less the floor(900 / 10) test ratings.
    assert (metrics[0]["num_train"], metrics[0]["num_validation"], metrics[0]["num_test"]) == (810, 0, 90)
    assert best["test"] == {k: v for k, v in metrics[0].items() if k.startswith("test_")}
    configs = [json.loads((d / "config.json").read_text()) for d in (searched, again)]
    assert configs[0]["model"] == configs[1]["model"]
    assert configs[0]["model"]["latent_factors"] == 4  # given, so fixed: not searched
    assert set(best["hyperparameters"]) == {"regularization", "scale_regularization"}
    assert (
        configs[0]["model"]["regularization"]
        == best["hyperparameters"]["regularization"]
        == results[0]["regularization"]
    )
    assert configs[0]["task"]["export_top_k"] == 3 and (searched / "model" / "saved_model.pb").exists()


@pytest.mark.slow
def test_a_project_of_other_settings_is_refused(ratings_file, tmp_path, caplog):
    args = ("--algorithm", "random", "--project-name", "p", "--max-trials", "1")
    assert run(ratings_file, tmp_path, *args) == 0
    project = tmp_path / "p"
    stored = json.loads((project / settings.FILENAME).read_text())
    assert stored["algorithm"] == "random" and stored["hyperparameters"]["mode"] == "tf1"
    assert (project / cli.BEST_MODEL_DIR / "model" / "row.npy").exists()  # the default --job-dir
    lines = open(ratings_file).read().splitlines(keepends=True)
    other = tmp_path / "ratings.tsv"  # the same name, one rating changed
    other.write_text(
        re.sub(r"\t(\d)\t", lambda m: f"\t{6 - int(m.group(1))}\t", lines[0], count=1) + "".join(lines[1:])
    )
    for extra, difference in (
        (("--mode", "explicit"), 'hyperparameters.mode: "tf1" -> "explicit"'),
        (("--num_iters", "4"), "hyperparameters.num_iters: 3 -> 4"),
        (("--algorithm", "bayesian"), 'algorithm: "random" -> "bayesian"'),
        (("--regularization", "1"), "search_space: "),
        (("--validation-fraction", "0.2"), "data.validation_fraction: 0.1 -> 0.2"),
        (("--train-file", str(other)), "data.train: "),
    ):
        caplog.clear()
        assert run(ratings_file, tmp_path, *args, *extra) == 1, extra
        assert "holds a search with other settings" in caplog.text and "--overwrite" in caplog.text
        assert difference in caplog.text, caplog.text
    assert len(json.loads((project / "results.json").read_text())) == 1  # no trial of other settings was added
    (project / settings.FILENAME).unlink()  # a project of an older version: its settings are unknown
    caplog.clear()
    assert run(ratings_file, tmp_path, *args) == 1
    assert f"without {settings.FILENAME}" in caplog.text and "--overwrite" in caplog.text
    assert run(ratings_file, tmp_path, *args, "--mode", "explicit", "--overwrite") == 0
    assert json.loads((project / settings.FILENAME).read_text())["hyperparameters"]["mode"] == "explicit"


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["oracle.json", "trial_0/trial.json", "search_settings.json"])
def test_a_truncated_project_file_is_named(ratings_file, tmp_path, caplog, damaged):
    args = ("--algorithm", "random", "--project-name", "p", "--max-trials", "1")
    assert run(ratings_file, tmp_path, *args) == 0
    path = tmp_path / "p" / damaged
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # a search killed while writing it
    caplog.clear()
    assert run(ratings_file, tmp_path, *args, "--max-trials", "2") == 1
    assert f"{path}: not valid JSON (" in caplog.text and "--overwrite" in caplog.text
    assert "Traceback" not in caplog.text


def test_settings_differences_name_each_changed_entry():
    saved = {"algorithm": "random", "data": {"train": "ab", "split": "random"}, "space": [1, 2]}
    current = {"algorithm": "random", "data": {"train": "cd", "split": "random"}, "space": [1, 3]}
    assert settings.differences(saved, current) == ['data.train: "ab" -> "cd"', "space: [1, 2] -> [1, 3]"]
    assert settings.differences(saved, saved) == []


def test_the_readme_flag_table_states_the_search_defaults():
    from test_readme import matches, section, table_rows

    parser = cli.build_parser()
    search, task, base, _ = cli.parse([], parser)
    used = {**dataclasses.asdict(search), **task.to_dict(), **base.to_dict()}
    dest = {a.option_strings[0]: a.dest for a in parser._actions if a.option_strings}
    rows = table_rows(section("## Tuning"), "`--")
    listed, refused = set(), set()
    for cells in rows:
        names = [name.strip(" `") for name in cells[0].split(",")]
        if cells[1] == "refused":
            refused.update(dest[name] for name in names)
            continue
        for name in names:
            assert matches(cells[1], used[dest[name]]), (name, cells[1], used[dest[name]])
            listed.add(dest[name])
    assert refused == set(cli.REFUSED)
    own = {f.name for f in dataclasses.fields(cli.SearchConfig)}
    assert own | set(cli.SEARCH_HELP) | {"export_top_k"} <= listed, "a search flag missing from the README table"


@pytest.mark.slow
def test_searched_hyperparameters_given_as_flags_are_fixed(ratings_file, tmp_path, caplog):
    hp = kt.HyperParameters()
    mode = mode_of(WALSConfig(mode="explicit"))
    assert set(search_space(hp, mode, fixed={"latent_factors", "mode"})) == {"regularization", "scale_regularization"}
    fixed = ("--latent_factors=3", "--regularization=1", "--scale_regularization=false")
    assert run(ratings_file, tmp_path, "--mode=explicit", *fixed) == 1
    assert "every hyperparameter that the explicit mode searches is fixed by a flag" in caplog.text
    assert not (tmp_path / "ratings.tsv-explicit-bayesian").exists()


def test_the_delivered_model_is_the_scored_one_when_the_best_sweep_is_not_the_last(ratings_file, tmp_path, capsys):
    """lambda = 1 scaled by the row counts is too strong for these 720 ratings: the validation RMSE is lowest after
    the first sweep, so the best trial peaks early, and both the retrain and the validation command run exactly
    that many sweeps."""
    from trainer import task as trainer_task

    args = ("--mode", "explicit", "--algorithm", "random", "--max-trials", "2", "--num_iters", "8")
    args += ("--regularization", "1", "--scale_regularization", "true")
    assert main(["--train-file", ratings_file, "--directory", str(tmp_path / "runs"), *args]) == 0
    command = re.search(r"reproduce it with .*\n +(python -m trainer\.task .*)\n", capsys.readouterr().out).group(1)
    project = tmp_path / "runs" / "ratings.tsv-explicit-random"
    best = json.loads((project / "best_hyperparameters.json").read_text())
    assert 1 <= best["num_iters"] < 8, best  # the scored model is not the last sweep's
    assert f"--num_iters={best['num_iters']}" in shlex.split(command)
    # The trial's own run (train part only, validation held out) ends on the scored model.
    argv = shlex.split(best["validation_command"])
    assert trainer_task.main([*argv[3:], "--job-dir", str(tmp_path / "validation")]) == 0
    trial = json.loads((tmp_path / "validation" / "metrics.json").read_text())
    assert trial["sweeps"] == best["num_iters"]
    assert trial["validation_rmse"] == pytest.approx(best["score"], abs=1e-6)
    assert min(trial["history"]["val_rmse"]) == pytest.approx(best["score"], abs=1e-6)
    # The delivered model: the printed command, run again, gives the same factors as the search's retrain.
    assert trainer_task.main([*shlex.split(command)[3:], "--job-dir", str(tmp_path / "again")]) == 0
    for name in ("row", "col"):
        np.testing.assert_array_equal(
            np.load(project / "best_model" / "model" / f"{name}.npy"),
            np.load(tmp_path / "again" / "model" / f"{name}.npy"),
        )
    delivered = json.loads((project / "best_model" / "config.json").read_text())["model"]
    assert delivered["num_iters"] == best["num_iters"]


@pytest.mark.slow
def test_hyperband_implicit_ndcg_and_warm_started_trials_counting_their_parents_sweeps(ratings_file, tmp_path):
    """Hyperband in the implicit mode maximises the validation NDCG@10. A trial that continues a parent trial
    starts from the parent's best model: its recorded sweeps add the parent's, and training its hyperparameters
    for that many sweeps from scratch gives its score."""
    from trainer import task as trainer_task

    directory = tmp_path / "runs"
    argv = ["--train-file", ratings_file, "--directory", str(directory), "--num_iters", "4"]
    assert main([*argv, "--mode", "implicit", "--algorithm", "hyperband"]) == 0
    project = directory / "ratings.tsv-implicit-hyperband"
    best = json.loads((project / "best_hyperparameters.json").read_text())
    assert best["objective"] == "val_ndcg@10"
    assert "alpha" in best["hyperparameters"] and 0.0 <= best["test"]["test_ndcg@10"] <= 1.0
    trials = {}
    for path in project.glob("trial_*/trial.json"):
        record = json.loads(path.read_text())
        metrics = record["metrics"]["metrics"]
        trials[record["trial_id"]] = (
            record["hyperparameters"]["values"],
            metrics["sweeps"]["observations"][0]["value"][0],
        )
    children = [(tid, hp, sweeps) for tid, (hp, sweeps) in trials.items() if "tuner/trial_id" in hp]
    assert children, "Hyperband continued no trial"
    for _, hp, sweeps in children:
        parent = trials[hp["tuner/trial_id"]][1]
        assert parent + 1 <= sweeps <= parent + hp["tuner/epochs"] - hp["tuner/initial_epoch"]
    tid, hp, sweeps = max(children, key=lambda child: child[2])
    score = json.loads((project / f"trial_{tid}" / "trial.json").read_text())["score"]
    values = [f"--{name}={hp[name]}" for name in ("latent_factors", "regularization", "alpha")]
    command = [*shlex.split(best["validation_command"])[3:], *values, f"--num_iters={int(sweeps)}"]
    assert trainer_task.main([*command, "--job-dir", str(tmp_path / "trial")]) == 0
    trial = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    assert trial["validation_ndcg@10"] == pytest.approx(score, abs=1e-6)


def test_best_sweep_is_the_first_best_and_counts_from_the_start():
    base = WALSConfig(mode="explicit")
    rows = Ratings.from_dataframe(pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [1.0, 2.0]}))
    hypermodel = WALSHyperModel(base, rows, rows)
    history = {"val_rmse": [[0.9], [0.7], [0.7], [0.8]], "rmse": [[1.0], [0.5], [0.4], [0.3]]}
    assert hypermodel.best_sweep(history) == {"val_rmse": 0.7, "rmse": 0.5, "sweeps": 2}
    assert hypermodel.best_sweep(history, start=3)["sweeps"] == 5
    ranked = WALSHyperModel(WALSConfig(mode="implicit"), rows, rows, top_k=5)
    assert ranked.best_sweep({"val_ndcg@5": [[0.1], [0.3], [0.2]]}) == {"val_ndcg@5": 0.3, "sweeps": 2}
