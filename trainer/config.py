"""The trainer's job options (input, output, split); the hyperparameters are ``wals2.WALSConfig``."""

from __future__ import annotations

import dataclasses

DATA_TYPES = ("ratings", "web_views")


def _field(default, doc, flag=None, **metadata):
    meta = {"help": doc, **metadata}
    if flag:
        meta["flag"] = flag
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Options of one ``python -m trainer.task`` run, with TF1's flag names (hyphenated)."""

    train_file: str | None = _field(
        None, "Ratings file, local or gs://; when absent, the bundled MovieLens latest-small.", "--train-file"
    )
    job_dir: str | None = _field(None, "Output directory (default jobs/<timestamp>).", "--job-dir")
    output_dir: str | None = _field(
        None, "Where model/, config.json and metrics.json go (default: --job-dir).", "--output-dir"
    )
    data_type: str = _field(
        "ratings",
        "'ratings' (user item rating[ timestamp]) or 'web_views' (a GA export "
        "with header clientId,contentId,timeOnPage; time summed per pair; power-law weights).",
        "--data-type",
        choices=DATA_TYPES,
    )
    delimiter: str = _field(
        "\t",
        "Field separator of --train-file for ratings: tab (u.data), '::' (ratings.dat), ',' (ratings.csv).",
        "--delimiter",
    )
    headers: bool = _field(False, "The ratings file starts with a header line.", "--headers")
    use_optimized: bool = _field(
        False,
        "Start from TF1's tuned MovieLens (or web_views) hyperparameters; hyperparameters given explicitly still win.",
        "--use-optimized",
    )
    test_fraction: float = _field(
        0.1, "Fraction of ratings held out as the test set (TF1: 10 %, floor(N/10)).", "--test-fraction"
    )
    verbose_logging: bool = _field(False, "Log at DEBUG level.", "--verbose-logging")

    def __post_init__(self):
        if self.data_type not in DATA_TYPES:
            raise ValueError(f"`data_type` should be one of {DATA_TYPES}. Received: data_type={self.data_type!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"`test_fraction` should be in [0, 1). Received: test_fraction={self.test_fraction!r}")
        if self.delimiter == "":
            raise ValueError("`delimiter` should be a non-empty string. Received: delimiter=''")
        if self.data_type == "web_views" and self.delimiter not in ("\t", ","):
            raise ValueError(
                f"`delimiter` is fixed to ',' for --data-type web_views. Received: delimiter={self.delimiter!r}"
            )

    def to_dict(self):
        return dataclasses.asdict(self)
