"""MovieLens through TFDS (mocked, and the real prepare path from a local zip), timestamps, progress and splits."""

import hashlib
import json
import logging
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import shared_file

from trainer.task import main
from wals2 import data, datasets, load_bundled, read_ratings

tfds = pytest.importorskip("tensorflow_datasets")

# A small explicit matrix: 12 users x 8 movies, ~60 % observed, whole-star ratings, distinct timestamps.
RNG = np.random.default_rng(7)
CELLS = np.argwhere(RNG.random((12, 8)) < 0.6)
TRIPLES = [(int(u) + 1, int(m) * 10 + 1, float(RNG.integers(1, 6)), 978300000 + n) for n, (u, m) in enumerate(CELLS)]


def fake_movielens(*_, **__):
    """``as_dataset_fn`` for ``tfds.testing.mock_data``: TRIPLES with TFDS's string ids."""
    return tf.data.Dataset.from_tensor_slices(
        {
            "user_id": [str(u) for u, *_ in TRIPLES],
            "movie_id": [str(m) for _, m, *_ in TRIPLES],
            "user_rating": np.array([r for *_, r, _ in TRIPLES], np.float32),
            "timestamp": np.array([t for *_, t in TRIPLES], np.int64),
        }
    )


def expected_frame():
    return pd.DataFrame(TRIPLES, columns=["user", "item", "rating", "timestamp"]).sort_values(["user", "item"])


def test_tfds_ratings_become_validated_ratings_with_numeric_ids():
    with tfds.testing.mock_data(as_dataset_fn=fake_movielens):
        ratings = datasets.load_movielens("ml-1m")
    assert ratings.source == "tfds:movielens/1m-ratings"
    assert ratings.user_ids.dtype == np.int64 and list(ratings.user_ids) == sorted({u for u, *_ in TRIPLES})
    frame = ratings.to_frame().assign(timestamp=ratings.timestamps).sort_values(["user", "item"])
    pd.testing.assert_frame_equal(
        frame.reset_index(drop=True), expected_frame().reset_index(drop=True), check_dtype=False
    )


def test_tfds_random_mock_schema_loads():
    with tfds.testing.mock_data(num_examples=40):
        ratings = datasets.load_movielens("ml-20m")
    assert ratings.nnz == 40 and ratings.timestamps.shape == (40,)  # random string ids stay strings


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"`dataset` should be one of .* Received: dataset='ml-10m'"):
        datasets.tfds_name("ml-10m")


def test_trainer_dataset_ml_1m_with_tfds_mocked(tmp_path):
    job = tmp_path / "job"
    with tfds.testing.mock_data(as_dataset_fn=fake_movielens):
        code = main(["--dataset", "ml-1m", "--job-dir", str(job), "--num_iters=2", "--latent_factors=3"])
    assert code == 0
    config = json.loads((job / "config.json").read_text())
    metrics = json.loads((job / "metrics.json").read_text())
    assert config["data_source"] == "tfds:movielens/1m-ratings" and config["task"]["dataset"] == "ml-1m"
    assert (metrics["num_users"], metrics["num_items"]) == (12, 8)
    assert metrics["num_train"] + metrics["num_test"] == len(TRIPLES)
    np.testing.assert_array_equal(np.load(job / "model" / "item.npy"), sorted({m for _, m, *_ in TRIPLES}))


def write_ml100k_zip(path):
    """A zip laid out like GroupLens' ml-100k.zip (u.data, u.item, u.user), with TRIPLES as u.data."""
    genres = "|".join(["0"] * 19)
    users = sorted({u for u, *_ in TRIPLES})
    movies = sorted({m for _, m, *_ in TRIPLES})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-100k/u.data", "".join(f"{u}\t{m}\t{int(r)}\t{t}\n" for u, m, r, t in TRIPLES))
        archive.writestr(
            "ml-100k/u.item", "".join(f"{m}|Movie {m} (1995)|01-Jan-1995||http://x|{genres}\n" for m in movies)
        )
        archive.writestr("ml-100k/u.user", "".join(f"{u}|24|M|technician|85711\n" for u in users))


@pytest.mark.slow
def test_real_prepare_path_from_a_zip_in_the_manual_dir(tmp_path, monkeypatch):
    """TFDS's own download_and_prepare on a local zip; only its registered checksum is replaced by the test zip's."""
    data_dir = tmp_path / "tfds"
    manual = data_dir / "downloads" / "manual"
    manual.mkdir(parents=True)
    archive = manual / "ml-100k.zip"
    write_ml100k_zip(archive)
    assert datasets.manual_dir(str(data_dir)) == str(manual)
    # The genuine zip's sha256 is registered; a different zip is refused with a hint.
    with pytest.raises(OSError, match=r"downloads/manual/ml-100k.zip, in TFDS.s manual directory, fails its checksum"):
        datasets.load_movielens("ml-100k", data_dir=str(data_dir))
    blob = archive.read_bytes()
    info = tfds.core.download.checksums.UrlInfo(
        size=len(blob), checksum=hashlib.sha256(blob).hexdigest(), filename="ml-100k.zip"
    )
    url = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    monkeypatch.setattr(tfds.builder_cls("movielens"), "url_infos", {url: info})
    ratings = datasets.load_movielens("ml-100k", data_dir=str(data_dir))
    frame = ratings.to_frame().assign(timestamp=ratings.timestamps).sort_values(["user", "item"])
    pd.testing.assert_frame_equal(
        frame.reset_index(drop=True), expected_frame().reset_index(drop=True), check_dtype=False
    )
    # Prepared once: a later load needs neither the zip nor a download.
    archive.unlink()
    assert datasets.load_movielens("ml-100k", data_dir=str(data_dir), download=False).nnz == len(TRIPLES)


def test_files_keep_timestamps_and_log_progress(tmp_path, monkeypatch, caplog):
    path = tmp_path / "ratings.dat"
    path.write_text("".join(f"{u}::{m}::{int(r)}::{t}\n" for u, m, r, t in TRIPLES))
    monkeypatch.setattr(data, "PROGRESS_ROWS", 10)
    with caplog.at_level(logging.INFO, logger="wals2.data"):
        ratings = read_ratings(str(path), delimiter="::")
    progress = [r.getMessage() for r in caplog.records if "lines read" in r.getMessage()]
    assert len(progress) == len(TRIPLES) // 10 and progress[0].endswith("% of the file)")
    frame = ratings.to_frame().assign(timestamp=ratings.timestamps).sort_values(["user", "item"])
    pd.testing.assert_frame_equal(
        frame.reset_index(drop=True), expected_frame().reset_index(drop=True), check_dtype=False
    )
    assert read_ratings(str(write(tmp_path, "three.tsv", "1\t2\t3\n"))).timestamps is None


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_random_split_is_tf1s_and_validation_comes_from_the_rest():
    ratings = load_bundled()
    # Oracle: TF1's size, floor(N/10) entries, drawn as documented: those of smallest splitmix64 key of
    # (user * n + item + (seed + 1) * golden) mod 2^64, here in Python integers.
    mask, n = (1 << 64) - 1, ratings.num_items

    def key(user, item):
        z = (int(user) * n + int(item) + 4 * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    keys = np.array([key(u, i) for u, i in zip(ratings.users, ratings.items)], dtype=np.uint64)
    test_idx = np.argsort(keys)[: ratings.nnz // 10]
    train2, test2 = ratings.split(0.1, seed=3)
    train, validation, test = ratings.train_validation_test(0.0, 0.1, seed=3)
    expected = set(zip(ratings.users[test_idx], ratings.items[test_idx]))
    assert set(zip(test.users, test.items)) == expected == set(zip(test2.users, test2.items))
    assert validation.nnz == 0 and train.nnz == train2.nnz
    train, validation, test = ratings.train_validation_test(0.2, 0.1, seed=3)
    assert set(zip(test.users, test.items)) == expected  # adding a validation set keeps the test set
    assert validation.nnz == int(ratings.nnz * 0.2) and train.nnz + validation.nnz + test.nnz == ratings.nnz
    keys = [set(zip(p.users, p.items)) for p in (train, validation, test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


@pytest.mark.parametrize("strategy", ["per_user", "time"])
def test_per_user_and_time_splits(strategy):
    ratings = load_bundled()
    train, validation, test = ratings.train_validation_test(0.1, 0.2, seed=1, strategy=strategy)
    counts = ratings.user_counts()
    np.testing.assert_array_equal(test.user_counts(), np.floor(counts * 0.2).astype(int))
    np.testing.assert_array_equal(validation.user_counts(), np.floor(counts * 0.1).astype(int))
    assert train.user_counts().min() >= 1
    again = ratings.train_validation_test(0.1, 0.2, seed=1, strategy=strategy)[2]
    np.testing.assert_array_equal(again.items, test.items)
    if strategy == "time":  # every user's held-out ratings are no older than the user's training ratings
        frame = lambda r, name: pd.DataFrame({"user": r.users, name: r.timestamps})  # noqa: E731
        latest_train = frame(train, "t").groupby("user")["t"].max()
        earliest_val = frame(validation, "v").groupby("user")["v"].min()
        latest_val = frame(validation, "v").groupby("user")["v"].max()
        earliest_test = frame(test, "s").groupby("user")["s"].min()
        joined = pd.concat([latest_train, earliest_val, latest_val, earliest_test], axis=1).dropna()
        assert len(joined) > 500
        assert (joined.iloc[:, 0] <= joined.iloc[:, 1]).all() and (joined.iloc[:, 2] <= joined.iloc[:, 3]).all()


def test_split_errors():
    ratings = load_bundled()
    with pytest.raises(ValueError, match=r"`validation_fraction` \+ `test_fraction` should be < 1"):
        ratings.train_validation_test(0.5, 0.5)
    with pytest.raises(ValueError, match="`strategy` should be one of"):
        ratings.train_validation_test(0.1, 0.1, strategy="by_time")
    no_time = data.Ratings(*(getattr(ratings, f) for f in ("users", "items", "values", "user_ids", "item_ids")))
    with pytest.raises(ValueError, match="`strategy` 'time' needs timestamps"):
        no_time.train_validation_test(0.1, 0.1, strategy="time")


def test_real_ml_1m_subset_reads_with_double_colon():
    path = shared_file("ml-1m", "ratings.first-487650-lines.dat.gz")
    ratings = read_ratings(str(path), delimiter="::")
    assert ratings.nnz == 487650 and ratings.num_users == 2999 and ratings.num_items == 3615
    assert ratings.timestamps.min() > 9e8


def not_prepared(*args, download=True, **kwargs):
    """``tfds.load`` of a data set that is not prepared, and that may not be downloaded in the test."""
    if not download:
        raise AssertionError("Dataset movielens: could not find data in the data directory")
    pytest.fail("tfds.load(download=True) was called although the download host cannot be reached")


@pytest.mark.parametrize(
    "connect, message",
    [
        ("refused", r"files.grouplens.org:443 cannot be reached \(ConnectionRefusedError: \[Errno 111\] refused\)"),
        ("hangs", r"files.grouplens.org:443 gave no answer within 0.2 s"),
    ],
)
def test_unreachable_download_host_fails_fast_without_tfds_retries(tmp_path, monkeypatch, connect, message):
    calls = []

    def create_connection(address, timeout=None):
        calls.append((address, timeout))
        if connect == "hangs":
            time.sleep(3)
        raise ConnectionRefusedError(111, "refused")

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets.socket, "create_connection", create_connection)
    monkeypatch.setattr(datasets, "PROBE_SECONDS", 0.2)
    monkeypatch.setattr(tfds, "load", not_prepared)
    started = time.perf_counter()
    with pytest.raises(OSError, match=rf"(?s)cannot download movielens/1m-ratings into .*{message}.*Without network"):
        datasets.load_movielens("ml-1m", data_dir=str(tmp_path / "tfds"))
    assert time.perf_counter() - started < 2.0
    assert calls == [(("files.grouplens.org", 443), 0.2)]


def test_probe_goes_to_the_https_proxy(monkeypatch):
    calls = []
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    class Connection:
        def close(self):
            calls.append("closed")

    monkeypatch.setattr(datasets.socket, "create_connection", lambda a, timeout: calls.append(a) or Connection())
    assert datasets.unreachable("https://files.grouplens.org/datasets/movielens/ml-1m.zip") is None
    assert calls == [("proxy.example", 3128), "closed"]


def test_no_probe_for_a_prepared_copy_or_a_zip_in_the_manual_dir(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        pytest.fail("probed the download host")

    monkeypatch.setattr(datasets.socket, "create_connection", no_network)
    with tfds.testing.mock_data(as_dataset_fn=fake_movielens):  # prepared: the first tfds.load answers
        assert datasets.load_movielens("ml-1m", data_dir=str(tmp_path / "a")).nnz == len(TRIPLES)
    manual = tmp_path / "b" / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "ml-1m.zip").write_bytes(b"not the GroupLens zip")  # real TFDS, offline: its checksum check fails
    with pytest.raises(OSError, match=r"ml-1m.zip, in TFDS's manual directory, fails its checksum \(Expected"):
        datasets.load_movielens("ml-1m", data_dir=str(tmp_path / "b"))
