"""MovieLens ratings through TensorFlow Datasets (``movielens/<name>-ratings``); TFDS is imported on first use.

The TFDS builder downloads the GroupLens zip into ``<data_dir>/downloads`` (network needed) and prepares it
once; later loads read the prepared copy. Offline, a zip fetched elsewhere is used when it lies in the manual
directory, by default ``<data_dir>/downloads/manual/<name>.zip`` (``ml-1m.zip`` and so on); TFDS checks it against
its registered size and sha256.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from wals2.data import PROGRESS_ROWS, Ratings

logger = logging.getLogger(__name__)

#: ``--dataset`` names -> TFDS ``movielens`` builder config prefix.
DATASETS = {"ml-100k": "100k", "ml-1m": "1m", "ml-20m": "20m", "ml-25m": "25m", "ml-latest-small": "latest-small"}
#: Rows per batch read from the prepared TFDS dataset.
BATCH = 65536


def tfds_name(name: str) -> str:
    """``"ml-1m"`` -> ``"movielens/1m-ratings"``."""
    if name not in DATASETS:
        raise ValueError(f"`dataset` should be one of {sorted(DATASETS)}. Received: dataset={name!r}")
    return f"movielens/{DATASETS[name]}-ratings"


def default_data_dir() -> str:
    """TFDS's data directory: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return os.environ.get("TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))


def manual_dir(data_dir: str | None = None) -> str:
    """Where TFDS looks for pre-downloaded zips: ``<data_dir>/downloads/manual``."""
    return os.path.join(data_dir or default_data_dir(), "downloads", "manual")


def load_movielens(name: str, data_dir: str | None = None, download: bool = True) -> Ratings:
    """MovieLens ``name`` (``ml-100k``, ``ml-1m``, ``ml-20m``, ``ml-25m``, ``ml-latest-small``) as ``Ratings``.

    Ids are the MovieLens user and movie ids (TFDS stores them as strings; numeric ones become int64), values
    ``user_rating`` and ``timestamps`` the rating times.

    Args:
        name: the data set.
        data_dir: TFDS data directory (local or ``gs://``); default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``.
        download: download and prepare when not prepared yet (from the manual directory's zip when present).

    Raises:
        ImportError: tensorflow-datasets is not installed.
        OSError: the data set is neither prepared nor obtainable (no network and no zip in the manual directory,
            or a zip whose checksum does not match).
        RatingsError: the prepared data has no rows or holds duplicate (user, movie) pairs.
    """
    builder_name = tfds_name(name)
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            f"`--dataset {name}` needs tensorflow-datasets: pip install 'wals2[vertex]' (or pass --train-file)"
        ) from err
    data_dir = data_dir or default_data_dir()
    logger.info("loading %s (TFDS, data_dir %s)", builder_name, data_dir)
    try:
        dataset = tfds.load(builder_name, split="train", data_dir=data_dir, download=download)
    except Exception as err:  # TFDS raises many types (network, checksum, missing files): report them all alike
        raise OSError(
            f"cannot load {builder_name} into {data_dir}: {type(err).__name__}: {err}\n"
            f"Without network, download https://files.grouplens.org/datasets/movielens/{name}.zip elsewhere and "
            f"put it into {manual_dir(data_dir)}/ (unchanged: TFDS checks its sha256)."
        ) from err
    columns = ("user_id", "movie_id", "user_rating", "timestamp")
    batches = dataset.map(lambda ex: tuple(ex[c] for c in columns)).batch(BATCH).prefetch(2)
    parts: list[list[np.ndarray]] = [[] for _ in columns]
    rows = next_report = 0
    for batch in batches.as_numpy_iterator():
        for part, values in zip(parts, batch):
            part.append(values)
        rows += len(batch[0])
        if rows >= next_report + PROGRESS_ROWS:
            next_report = rows
            logger.info("%s: %d ratings read", builder_name, rows)
    user, movie, rating, timestamp = (np.concatenate(p) if p else np.zeros(0) for p in parts)
    frame = pd.DataFrame(
        {
            "user": _decode(user),
            "item": _decode(movie),
            "rating": rating.astype(np.float64),
            "timestamp": timestamp.astype(np.int64),
        }
    )
    logger.info("read %d ratings from %s", len(frame), builder_name)
    return Ratings.from_dataframe(frame, source=f"tfds:{builder_name}", timestamp_col="timestamp")


def _decode(ids: np.ndarray) -> np.ndarray:
    """TFDS string ids (bytes) as str; ``Ratings`` turns all-integer ids into int64."""
    return np.char.decode(ids.astype("S"), "utf-8") if ids.size else ids.astype(str)
