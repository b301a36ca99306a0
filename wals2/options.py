"""The names and spellings the command line accepts for the data, importable without TensorFlow.

The trainer's and the search's parsers read these (so that ``--help`` and a bad flag answer without loading
TensorFlow); ``wals2.data`` and ``wals2.datasets`` use the same objects.
"""

from __future__ import annotations

#: ``Ratings.train_validation_test`` strategies.
SPLITS = ("random", "per_user", "time")
#: MovieLens data sets by name, with the TFDS ``movielens/<variant>-ratings`` variant of each.
DATASETS = {"ml-100k": "100k", "ml-1m": "1m", "ml-20m": "20m", "ml-25m": "25m", "ml-latest-small": "latest-small"}
#: ``--delimiter`` spellings of a tab besides the tab character itself (a shell passes ``'\t'`` as two characters).
TAB_NAMES = ("\\t", "tab")


def normalize_delimiter(delimiter: str) -> str:
    """The field separator meant by ``delimiter``: ``\\t`` (backslash, t) and ``tab`` are a tab.

    Raises:
        ValueError: an empty delimiter.
    """
    if delimiter == "":
        raise ValueError("`delimiter` should be a non-empty string. Received: delimiter=''")
    return "\t" if delimiter.lower() in TAB_NAMES else delimiter
