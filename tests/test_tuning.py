"""keras-tuner search on a tiny data set: objective on validation only, results, resume, Hyperband, failures,
and a distributed search with a chief and two workers on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys

import keras_tuner as kt
import numpy as np
import pytest
from conftest import ROOT

from tuning.search import WALSHyperModel, is_chief, main, objective, search_space
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


def test_interrupted_search_resumes(ratings_file, tmp_path):
    args = ("--mode", "tf1", "--algorithm", "random", "--project-name", "p")
    assert run(ratings_file, tmp_path, *args, "--max-trials", "2") == 0
    assert run(ratings_file, tmp_path, *args, "--max-trials", "3") == 0
    assert len(json.loads((tmp_path / "p" / "results.json").read_text())) == 3  # 2 reloaded + 1 new
    assert run(ratings_file, tmp_path, *args, "--max-trials", "1", "--overwrite") == 0
    assert len(json.loads((tmp_path / "p" / "results.json").read_text())) == 1


def test_hyperband_and_implicit_ndcg_objective(ratings_file, tmp_path):
    assert run(ratings_file, tmp_path, "--mode", "implicit", "--algorithm", "hyperband", "--num_iters", "3") == 0
    best = json.loads((tmp_path / "ratings.tsv-implicit-hyperband" / "best_hyperparameters.json").read_text())
    assert best["objective"] == "val_ndcg@10"
    assert "alpha" in best["hyperparameters"] and 0.0 <= best["test"]["test_ndcg@10"] <= 1.0


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
    hypermodel = WALSHyperModel(WALSConfig(num_iters=2), "ratings", train, train)
    model = WALSModel(2, 2, latent_factors=2, regularization=1e-3, feature_wt_factor=1e30)
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
