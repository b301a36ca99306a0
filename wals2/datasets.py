"""MovieLens ratings through TensorFlow Datasets (``movielens/<name>-ratings``); TFDS is imported on first use.

The TFDS builder downloads the GroupLens zip into ``<data_dir>/downloads`` (network needed) and prepares it
once; later loads read the prepared copy. Offline, a zip fetched elsewhere is used when it lies in the manual
directory, by default ``<data_dir>/downloads/manual/<name>.zip`` (``ml-1m.zip`` and so on); TFDS checks it against
its registered size and sha256. When a download is needed, the host is probed first (``unreachable``): TFDS
retries an unreachable host ten times with backoff, for minutes, before it fails.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np
import pandas as pd
import tensorflow as tf

from wals2.data import PROGRESS_ROWS, Ratings
from wals2.options import DATASETS

logger = logging.getLogger(__name__)

#: Rows per batch read from the prepared TFDS dataset.
BATCH = 65536
#: Seconds the download host (or the HTTPS proxy) may take to resolve and accept a connection.
PROBE_SECONDS = 5.0


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
        OSError: the data set is neither prepared nor obtainable: the download host cannot be reached and there is
            no zip in the manual directory (nor an earlier download), or the zip there fails its checksum.
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
    url = f"https://files.grouplens.org/datasets/movielens/{name}.zip"
    manual_zip = os.path.join(manual_dir(data_dir), f"{name}.zip")
    offline = (
        f"Without network, download {url} elsewhere and put it into {manual_dir(data_dir)}/ (unchanged: TFDS "
        "checks its sha256)."
    )
    try:
        try:
            dataset = tfds.load(builder_name, split="train", data_dir=data_dir, download=False)
        except AssertionError:  # not prepared yet (TFDS's "could not find data"): download and prepare it
            if not download:
                raise
            if not _downloaded(name, data_dir, manual_zip):
                reason = unreachable(url)
                if reason:
                    raise _Unreachable(reason) from None
            dataset = tfds.load(builder_name, split="train", data_dir=data_dir, download=True)
    except _Unreachable as err:
        raise OSError(f"cannot download {builder_name} into {data_dir}: {err}.\n{offline}") from None
    except Exception as err:  # TFDS raises many types (network, checksum, missing files): report them all alike
        if type(err).__name__ == "NonMatchingChecksumError" and tf.io.gfile.exists(manual_zip):
            found = "; ".join(line.strip("* ") for line in str(err).splitlines()[1:3])
            raise OSError(
                f"cannot load {builder_name}: {manual_zip}, in TFDS's manual directory, fails its checksum ({found}): "
                f"it is incomplete or another file. Replace it with an unchanged copy of {url}."
            ) from err
        raise OSError(f"cannot load {builder_name} into {data_dir}: {type(err).__name__}: {err}\n{offline}") from err
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


class _Unreachable(Exception):
    """The download host cannot be reached (raised before TFDS would retry it for minutes)."""


def unreachable(url: str, seconds: float | None = None) -> str | None:
    """Why ``url``'s host (or the proxy for its scheme) cannot be reached within ``seconds``; None when it can.

    One TCP connection is opened and closed, on a daemon thread, so a name lookup that hangs is bounded too.
    """
    seconds = PROBE_SECONDS if seconds is None else seconds
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname, proxied.port or (443 if proxied.scheme == "https" else 80)
    failure: list[str] = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=seconds).close()
        except OSError as err:
            failure.append(f"{type(err).__name__}: {err}")

    thread = threading.Thread(target=connect, name="probe", daemon=True)
    thread.start()
    thread.join(seconds + 1.0)
    if thread.is_alive():
        return f"{host}:{port} gave no answer within {seconds:g} s"
    return f"{host}:{port} cannot be reached ({failure[0]})" if failure else None


def _downloaded(name: str, data_dir: str, manual_zip: str) -> bool:
    """Whether TFDS has ``name``'s zip without network: in the manual directory, or an earlier download in
    ``<data_dir>/downloads`` (complete or not: TFDS decides)."""
    return tf.io.gfile.exists(manual_zip) or bool(tf.io.gfile.glob(os.path.join(data_dir, "downloads", f"*_{name}*")))


def _decode(ids: np.ndarray) -> np.ndarray:
    """TFDS string ids (bytes) as str; ``Ratings`` turns all-integer ids into int64."""
    return np.char.decode(ids.astype("S"), "utf-8") if ids.size else ids.astype(str)
