"""python -m trainer.task end to end: artifacts on good input; a clear error and no output on bad input."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import ROOT, shared_file

from trainer import artifacts
from trainer.task import main


def run_task(args, timeout=600, **env_vars):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env_vars)
    return subprocess.run(
        [sys.executable, "-m", "trainer.task", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_artifacts(job, num_users, num_items, k):
    model = job / "model"
    row, col = np.load(model / "row.npy"), np.load(model / "col.npy")
    user, item = np.load(model / "user.npy"), np.load(model / "item.npy")
    assert row.shape == (num_users, k) and col.shape == (num_items, k)
    assert row.dtype == col.dtype == np.float32
    assert user.shape == (num_users,) and item.shape == (num_items,)  # index -> raw id maps, not per rating
    assert np.all(np.diff(user) > 0) and np.all(np.diff(item) > 0)
    config = json.loads((job / "config.json").read_text())
    metrics = json.loads((job / "metrics.json").read_text())
    assert config["model"]["latent_factors"] == k
    assert metrics["num_users"] == num_users and metrics["num_items"] == num_items
    assert not [p for p in job.parent.iterdir() if ".staging-" in p.name]
    return config, metrics


@pytest.mark.slow
def test_bundled_default_run(tmp_path):
    job = tmp_path / "job"
    result = run_task(["--job-dir", str(job), "--num_iters", "4"])
    assert result.returncode == 0, result.stderr + result.stdout
    lines = [line for line in result.stdout.splitlines() if " sweep " in line]
    assert len(lines) == 4 and "train RMSE" in lines[0] and "test RMSE" in lines[0] and " s " in lines[0]
    assert "done: train RMSE" in result.stdout and "touch a user or item with no training ratings" in result.stdout
    config, metrics = check_artifacts(job, 610, 9724, 5)
    assert metrics["num_test"] == 10083 and metrics["sweeps"] == 4
    assert 0.3 < metrics["train_rmse"] < metrics["test_rmse"] < 3.0
    assert "val_rmse" not in metrics["history"]  # no validation set: the held-out RMSE per sweep is the test set's
    assert metrics["history"]["test_rmse"][-1] == pytest.approx(metrics["test_rmse"], rel=1e-4)
    user = np.load(job / "model" / "user.npy")
    assert user[0] == 1 and user[-1] == 610  # latest-small user ids 1..610


@pytest.mark.slow
def test_ml100k_tf1_defaults_and_optimized(tmp_path):
    data = shared_file("ml-100k", "u.data")
    rmse = {}
    for name, extra in (("default", []), ("optimized", ["--use-optimized"])):
        job = tmp_path / name
        result = run_task(["--train-file", str(data), "--job-dir", str(job), *extra])
        assert result.returncode == 0, result.stderr + result.stdout
        _, metrics = check_artifacts(job, 943, 1682, 34 if extra else 5)
        rmse[name] = metrics["test_rmse"]
    # TF1 semantics: unobserved cells are zero targets, so the RMSE stays around 1.0-1.1.
    assert 1.0 < rmse["default"] < 1.1
    assert rmse["optimized"] < rmse["default"]


def test_runs_in_process_and_writes_into_an_existing_empty_dir(tmp_path, caplog):
    data = tmp_path / "r.tsv"
    rng = np.random.default_rng(0)
    cells = rng.choice(30 * 20, size=300, replace=False)
    lines = [f"{u + 1}\t{i + 1}\t{rng.integers(1, 6)}\t0" for u, i in zip(*np.divmod(cells, 20))]
    data.write_text("\n".join(lines) + "\n")
    job = tmp_path / "job"
    job.mkdir()
    args = ["--train-file", str(data), "--job-dir", str(job), "--num_iters", "2", "--latent_factors=3"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--export-top-k", "25"]) == 0
    check_artifacts(job, 30, 20, 3)
    assert "--export-top-k 25 is more than the 20 items: the SavedModel's serving_default lists 20" in caplog.text
    # A second run into the same directory is refused before any work.
    assert main(["--train-file", str(data), "--job-dir", str(job), "--num_iters", "2"]) == 1


BAD_FILES = {
    "missing": (None, "ratings file not found"),
    "empty": ("", "the file is empty"),
    "header_only": ("user\titem\trating\n", "only a header line"),
    "non_numeric": ("1\t2\t3\n1\t3\tabc\n", "line 2: rating 'abc' is not a finite number"),
    "nan": ("1\t2\tnan\n", "line 1: rating 'nan' is not a finite number"),
    "duplicates": ("1\t2\t3\n1\t2\t4\n", "1 duplicate (user, item) pair"),
    "too_few_columns": ("1::2::3::4\n", "found 1 column(s) with delimiter '\\t'"),
    "ratings_dat_hint": ("1::2::3::4\n", "ML-1M ratings.dat files use --delimiter '::'"),
    "negative_id": ("1\t2\t3\n-4\t2\t3\n", "line 2: user id -4 is negative"),
    "empty_rating": ("1\t2\t3\tx\n2\t2\t\tx\n", "line 2: no rating (a missing or empty field)"),
    "short_row": ("1\t10\t5\n2\t20\n", "line 2: no rating (a missing or empty field)"),
    "too_many_fields": ("1\t2\t3\t4\t5\n2\t2\t3\t4\t5\n", "line 1: 5 fields with delimiter '\\t'"),
    "long_row": ("1\t2\t3\n\n4\t5\t6\t7\t8\n", "line 3: 5 fields with delimiter '\\t', where the lines before have 3"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_fail_cleanly_without_output(tmp_path, caplog, case):
    text, message = BAD_FILES[case]
    data = tmp_path / "data.tsv"
    if text is not None:
        data.write_text(text)
    job = tmp_path / "job"
    args = ["--train-file", str(data), "--job-dir", str(job)]
    if case == "header_only":
        args.append("--headers")
    assert main(args) == 1
    assert message in caplog.text and str(data) in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if text is None else ["data.tsv"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--latent_factors", "0"], "`latent_factors` should be a positive integer. Received: latent_factors=0"),
        (["--regularization=-0.5"], "`regularization` should be a finite number > 0"),
        (["--data-type", "webviews"], "invalid choice: 'webviews'"),
        (["--wt_type", "2"], "`wt_type` should be 0 ('log', power law) or 1 ('linear')"),
        (["--wt_type", "foo"], "argument --wt_type: expected 0 or 'log' (power law), 1 or 'linear', got 'foo'"),
        (["--num_iters", "many"], "invalid int value: 'many'"),
        (["--data-type=web_views", "--delimiter=::"], "`delimiter` is fixed to ','"),
        (["--dataset", "ml-10m"], "invalid choice: 'ml-10m'"),
        (["--split", "temporal"], "invalid choice: 'temporal'"),
        (["--dataset=ml-1m", "--train-file=u.data"], "`dataset` and `train_file` should not both be given"),
        (["--data-dir=/tmp/tfds"], "`data_dir` is used only with --dataset"),
        (["--gcs-bucket=gs://b"], "`gcs_bucket` is a prefix of --train-file"),
        (["--data-type=web_views", "--dataset=ml-1m"], "`dataset` is MovieLens ratings, not web views"),
        (["--data-type=web_views", "--train-file=v.csv", "--split=time"], "`split` 'time' needs timestamps"),
        (["--hypertune"], "`validation_fraction` should be > 0 with --hypertune"),
        (["--validation-fraction=0.5", "--test-fraction=0.5"], "`test_fraction` + `validation_fraction` should be < 1"),
        (["--top-k=0"], "`top_k` should be a positive integer. Received: top_k=0"),
    ],
)
def test_bad_flags_exit_2_without_output(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--job-dir", str(tmp_path / "job"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_job_dir_fails_before_training(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--job-dir", str(blocker / "job")]) == 1
    assert "not writable" in caplog.text or "Not a directory" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_web_views_sums_time_per_pair(tmp_path):
    rng = np.random.default_rng(1)
    rows = [(f"c{rng.integers(20)}", f"/a/{rng.integers(15)}", int(rng.integers(1, 300))) for _ in range(400)]
    path = tmp_path / "views.csv"
    path.write_text("clientId,contentId,timeOnPage\n" + "".join(f"{c},{a},{t}\n" for c, a, t in rows))
    job = tmp_path / "job"
    assert main(["--data-type", "web_views", "--train-file", str(path), "--job-dir", str(job), "--num_iters=2"]) == 0
    config, metrics = check_artifacts_any_ids(job)
    assert config["model"]["wt_type"] == 0  # TF1 forced the power-law weights
    pairs = {(c, a) for c, a, _ in rows}
    assert metrics["num_train"] + metrics["num_test"] == len(pairs)
    assert list(np.load(job / "model" / "user.npy")) == sorted({c for c, _, _ in rows})


def check_artifacts_any_ids(job):
    config = json.loads((job / "config.json").read_text())
    metrics = json.loads((job / "metrics.json").read_text())
    row, col = np.load(job / "model" / "row.npy"), np.load(job / "model" / "col.npy")
    assert row.shape == (metrics["num_users"], 5) and col.shape == (metrics["num_items"], 5)
    return config, metrics


def test_gcs_bucket_prefix_and_double_colon_file(tmp_path):
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(2)
    cells = rng.choice(25 * 18, size=200, replace=False)
    lines = [
        f"{u + 1}::{i + 1}::{rng.integers(1, 6)}::{978300000 + n}"
        for n, (u, i) in enumerate(zip(*np.divmod(cells, 18)))
    ]
    (tmp_path / "data" / "ratings.dat").write_text("\n".join(lines) + "\n")
    job = tmp_path / "job"
    args = ["--gcs-bucket", str(tmp_path / "data"), "--train-file", "ratings.dat", "--delimiter", "::"]
    assert main([*args, "--job-dir", str(job), "--num_iters=2", "--split=time", "--validation-fraction=0.1"]) == 0
    _, metrics = check_artifacts(job, 25, 18, 5)
    assert metrics["num_validation"] > 0 and 0.0 <= metrics["test_map@10"] <= 1.0


def test_tfds_load_failure_is_a_clear_error_without_output(tmp_path, caplog, monkeypatch):
    from wals2 import datasets

    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "load", offline)
    data_dir = tmp_path / "tfds"
    assert main(["--dataset", "ml-1m", "--data-dir", str(data_dir), "--job-dir", str(tmp_path / "job")]) == 1
    assert "cannot load movielens/1m-ratings" in caplog.text and "ConnectionError: no network" in caplog.text
    assert f"put it into {datasets.manual_dir(str(data_dir))}/" in caplog.text
    assert list(tmp_path.iterdir()) == []


# A 4-user x 3-item file, ten ratings, all valid: the base of the cases below.
GOOD = "1\t1\t4\n1\t2\t3\n1\t3\t5\n2\t1\t2\n2\t3\t1\n3\t1\t5\n3\t2\t4\n4\t2\t2\n4\t3\t3\n2\t2\t4\n"
LONG_FIELD = "x" * (10 << 20)  # 10 MB in one field
DUPLICATE = "{file}: 1 duplicate (user, item) pair(s); the first is user 4, item 3 on lines [9, 11]"
#: A proxy nobody listens on: the trainer cannot reach the download host, with or without network here.
NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": ""}

# case: (file bytes or None, extra flags, exit status, texts the output must hold; "{file}", "{dir}" filled in).
HARDENING = {
    "id_1e30": (
        b"1\t2\t3\n1e30\t2\t4\n-4\t3\t5\n",
        [],
        1,
        ["{file}: line 2: user id '1e30' is a number but not an integer"],
    ),
    "num_iters_0": (
        GOOD.encode(),
        ["--num_iters", "0"],
        2,
        [
            "`num_iters` should be a positive integer (0 sweeps would leave the random initial factors).",
            "Received: num_iters=0",
        ],
    ),
    "k_above_items": (
        GOOD.encode(),
        ["--latent_factors", "4"],
        0,
        [
            "WARNING wals2.modes: --latent_factors 4 is more than the 3 items (the data has 4 users x 3 items):",
            "U V' has rank 3 at most, so 1 of the factors add no fit",
        ],
    ),
    "not_utf8": (b"1\t2\t3\n2\t\xff\xfe\t3\n", [], 1, ["{file}: line 2: b'\\xff\\xfe\\t3\\n' is not UTF-8 text"]),
    "rating_1e39": (b"1\t2\t3\n1\t3\t1e39\n", [], 1, ["{file}: line 2: rating '1e39' overflows float32"]),
    "long_field": (
        f"1\t2\t3\n1\t3\t{LONG_FIELD}\n".encode(),
        [],
        1,
        ["{file}: line 2: rating 'xxxxxxxxxx", "... (10,485,760 characters) is not a finite number"],
    ),
    "implicit_negative": (
        GOOD.replace("2\t3\t1", "2\t3\t-1").encode(),
        ["--mode", "implicit"],
        1,
        ["{file}: line 5 (user 2, item 3): rating -1 is negative; the implicit mode needs ratings >= 0"],
    ),
    "weighted_overflow": (
        GOOD.replace("2\t3\t1", "2\t3\t1e38").encode(),
        [],
        1,
        ["{file}: line 5 (user 2, item 3): rating 1e+38 gives a weighted rating", "overflows float32 in --mode tf1"],
    ),
    "no_headers_flag": (
        b"user\titem\trating\n" + GOOD.encode(),
        [],
        1,
        [
            "{file}: line 1: rating 'rating' is not a finite number (1 such row(s) in all);",
            "(1 such row(s) in all); if line 1 is a header, pass --headers",
        ],
    ),
    "delimiter_backslash_t": (GOOD.encode(), ["--delimiter", "\\t"], 0, ["4 users x 3 items"]),
    # Read, then stopped by a duplicate that only a right split finds: quicker than a whole run.
    "delimiter_tab": ((GOOD + "4\t3\t1\n").encode(), ["--delimiter", "tab"], 1, [DUPLICATE]),
    "delimiter_multi": (GOOD.replace("\t", "<>").encode(), ["--delimiter", "<>"], 0, ["4 users x 3 items"]),
    "delimiter_regex_chars": (
        (GOOD + "4\t3\t1\n").replace("\t", " | ").encode(),
        ["--delimiter", " | "],
        1,
        [DUPLICATE],
    ),
    "delimiter_multi_bad_row": (
        b"1<>2<>3\n1<>3<>4<>5<>6\n",
        ["--delimiter", "<>"],
        1,
        ["{file}: line 2: 5 fields with delimiter '<>', where the lines before have 3"],
    ),
    "dataset_offline": (
        None,
        ["--dataset", "ml-1m", "--data-dir", "{dir}/tfds"],
        1,
        [
            "cannot download movielens/1m-ratings into {dir}/tfds: 127.0.0.1:9 cannot be reached",
            "put it into {dir}/tfds/downloads/manual/",
        ],
    ),
    "dataset_bad_manual_zip": (
        None,
        ["--dataset", "ml-1m", "--data-dir", "{dir}/tfds"],
        1,
        [
            "{dir}/tfds/downloads/manual/ml-1m.zip, in TFDS's manual directory, fails its checksum",
            "fails its checksum (Expected: UrlInfo(size=5.64 MiB",
            "Replace it with an unchanged copy of https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        ],
    ),
}


#: The cases that load TFDS run ``python -m trainer.task`` as a subprocess; the others call ``main`` in this
#: process (the trainer's messages and exit status are the same; TensorFlow is not imported again).
SUBPROCESS_CASES = {"dataset_offline", "dataset_bad_manual_zip"}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SUBPROCESS_CASES else c for c in sorted(HARDENING)]
)
def test_hardening_cases_exit_status_message_and_outputs(tmp_path, case, capfd, monkeypatch):
    text, flags, status, messages = HARDENING[case]
    data = tmp_path / "data.tsv"
    inputs = {"data.tsv"} if text is not None else set()
    if text is not None:
        data.write_bytes(text)
    if case.startswith("dataset"):
        pytest.importorskip("tensorflow_datasets")
        if case == "dataset_bad_manual_zip":
            inputs.add("tfds")
            (tmp_path / "tfds" / "downloads" / "manual").mkdir(parents=True)
            (tmp_path / "tfds" / "downloads" / "manual" / "ml-1m.zip").write_bytes(b"not the GroupLens zip")
    job = tmp_path / "job"
    args = [a.replace("{dir}", str(tmp_path)) for a in flags] + ["--job-dir", str(job), "--num_iters=1"]
    if text is not None:
        args = ["--train-file", str(data), *args]
    if "--num_iters" in flags:
        args.remove("--num_iters=1")
    started = time.perf_counter()
    if case in SUBPROCESS_CASES:
        result = run_task(args, timeout=120, **NO_NETWORK)
        returncode, output = result.returncode, result.stdout + result.stderr
    else:
        for name, value in NO_NETWORK.items():
            monkeypatch.setenv(name, value)
        try:
            returncode = main(args)
        except SystemExit as exit:  # argparse's own errors
            returncode = exit.code
        output = "".join(capfd.readouterr())
    seconds = time.perf_counter() - started
    assert returncode == status, output[-3000:]
    for message in messages:
        assert message.format(file=data, dir=tmp_path) in output, output[-3000:]
    assert "Traceback" not in output and max(len(line) for line in output.splitlines()) < 2000
    if status == 0:
        assert artifacts.committed(str(job)) and (job / "model" / "row.npy").exists()
        inputs.add("job")
    assert {p.name for p in tmp_path.iterdir()} == inputs  # no job dir and no staging beside it on failure
    assert seconds < 60  # ml-1m without network: no minutes of download retries


@pytest.mark.parametrize("case", ["missing_file", "committed_job_dir", "job_dir_below_a_file"])
def test_local_path_errors_come_before_tensorflow_is_imported(tmp_path, case):
    data = tmp_path / "r.tsv"
    data.write_text("1\t1\t5\n")
    job = tmp_path / "job"
    if case == "missing_file":
        args, message = ["--train-file", str(tmp_path / "nope.tsv")], f"ratings file not found: {tmp_path}/nope.tsv"
    elif case == "committed_job_dir":
        job.mkdir()
        (job / "_SUCCESS").write_text("{}")
        args, message = ["--train-file", str(data), "--job-dir", str(job)], "already holds the committed outputs"
    else:
        args, message = ["--train-file", str(data), "--job-dir", str(data / "job")], f"{data} is a file"
    probe = f"import sys; from trainer.task import main; print(main({args!r}), 'tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split()[-2:] == ["1", "False"], result.stdout + result.stderr
    assert message in result.stdout


def test_a_foreign_checkpoint_is_named_not_blamed_on_the_cluster(tmp_path, caplog):
    import tensorflow as tf

    data = tmp_path / "r.tsv"
    data.write_text("".join(f"{u}\t{i}\t{(u + i) % 5 + 1}\n" for u in range(1, 9) for i in range(1, 7)))
    job = tmp_path / "job"
    foreign = tf.train.Checkpoint(weights=tf.Variable([1.0, 2.0]))
    tf.train.CheckpointManager(foreign, str(job / "checkpoints"), max_to_keep=1).save()
    assert main(["--train-file", str(data), "--job-dir", str(job), "--num_iters", "1"]) == 1
    assert "was not written by python -m trainer.task" in caplog.text and "ckpt-1" in caplog.text
    assert "collective" not in caplog.text and "TF_CONFIG" not in caplog.text
    assert not (job / "_SUCCESS").exists() and not list(job.glob(".staging-*"))


@pytest.mark.parametrize(
    "error, expected",
    [
        ("ResourceExhaustedError", "out of memory, or out of disk space where it was writing"),
        ("NotFoundError", "a file or directory was not found"),
        ("PermissionDeniedError", "permission denied on a path"),
        ("DataLossError", "a file is truncated or corrupt"),
        ("UnknownError", "TensorFlow failed"),
    ],
)
def test_one_process_tensorflow_errors_say_what_failed(error, expected):
    import tensorflow as tf

    from trainer.job import describe_tf_error

    err = getattr(tf.errors, error)(None, None, "/data/out/model/row.npy; some detail\nmore")
    text = describe_tf_error(err)
    assert text.startswith(expected) and text.endswith(f" ({error}: /data/out/model/row.npy; some detail)")
    full = tf.errors.UnknownError(None, None, "/data/out/x: No space left on device")
    assert describe_tf_error(full).startswith("the disk is full (UnknownError: /data/out/x: No space left")


@pytest.mark.slow
def test_ctrl_c_ends_the_run_with_one_line_and_status_130(tmp_path):
    job = tmp_path / "job"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.task", "--job-dir", str(job), "--num_iters", "100000"],
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(120, proc.kill)  # ends the reads below if the line never comes
    watchdog.start()
    try:
        seen = []
        for line in proc.stdout:  # until the third sweep's line: checkpoints exist
            seen.append(line)
            if re.search(r" sweep +3/", line):
                break
        assert seen and re.search(r" sweep +3/", seen[-1]), "".join(seen)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode == 130, rest
    assert "interrupted; the same command resumes from the last sweep's checkpoint" in rest  # its --job-dir
    assert "Traceback" not in rest and not (job / "_SUCCESS").exists() and not (job / "model").exists()
    assert any((job / "checkpoints").iterdir())
