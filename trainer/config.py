"""The trainer's job options (input, output, split); the hyperparameters are ``wals2.WALSConfig``."""

from __future__ import annotations

import dataclasses

from wals2 import validate
from wals2.options import DATASETS, SPLITS, normalize_delimiter

DATA_TYPES = ("ratings", "web_views")


def _field(default, doc, flag=None, **metadata):
    meta = {"help": doc, **metadata}
    if flag:
        meta["flag"] = flag
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Options of one ``python -m trainer.task`` run, with TF1's flag names (hyphenated)."""

    dataset: str | None = _field(
        None,
        "MovieLens data set through tensorflow-datasets (ml-latest-small is read from the bundled copy unless "
        "--data-dir is given); default: the bundled ml-latest-small when no --train-file.",
        "--dataset",
        choices=tuple(DATASETS),
    )
    data_dir: str | None = _field(
        None,
        "TFDS data directory for --dataset (default $TFDS_DATA_DIR or ~/tensorflow_datasets); a pre-downloaded "
        "zip goes into <data-dir>/downloads/manual/.",
        "--data-dir",
    )
    train_file: str | None = _field(
        None, "Ratings file, local or gs://; when absent, the bundled MovieLens latest-small.", "--train-file"
    )
    gcs_bucket: str | None = _field(
        None, "Prefix joined onto --train-file, as TF1's mltrain.sh passed it.", "--gcs-bucket"
    )
    job_dir: str | None = _field(
        None, "Output directory (default: the parent of $AIP_MODEL_DIR, else jobs/<timestamp>).", "--job-dir"
    )
    output_dir: str | None = _field(
        None,
        "Where model/, config.json and metrics.json go (default: --job-dir); with --hypertune, --job-dir/<trial> "
        "instead, as in TF1.",
        "--output-dir",
    )
    checkpoint_dir: str | None = _field(
        None,
        "Factors are checkpointed here after every sweep, and a rerun resumes from the latest checkpoint "
        "(default $AIP_CHECKPOINT_DIR, else <output-dir>/checkpoints).",
        "--checkpoint-dir",
    )
    tensorboard_log_dir: str | None = _field(
        None,
        "TensorBoard scalars (default $AIP_TENSORBOARD_LOG_DIR, else <output-dir>/logs).",
        "--tensorboard-log-dir",
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
        "Field separator of --train-file for ratings, any string: tab (u.data; also '\\t' or 'tab'), '::' "
        "(ratings.dat), ',' (ratings.csv).",
        "--delimiter",
    )
    headers: bool = _field(False, "The ratings file starts with a header line.", "--headers")
    use_optimized: bool = _field(
        False,
        "Start from tuned hyperparameters: TF1's in the tf1 mode (ratings or web_views), else the mode's preset "
        "for the data set it was tuned on (named by --dataset or recognised by the file's content; refused for "
        "other data). Hyperparameters given explicitly still win.",
        "--use-optimized",
    )
    test_fraction: float = _field(
        0.1, "Fraction of ratings held out as the test set (TF1: 10 %, floor(N/10)).", "--test-fraction"
    )
    validation_fraction: float = _field(
        0.0,
        "Fraction of ratings held out as the validation set, the one --hypertune optimises (TF1 had none and "
        "tuned on its test set).",
        "--validation-fraction",
    )
    split: str = _field(
        "random",
        "'random' (TF1: uniform over ratings), 'per_user' (the fractions of each user's ratings) or 'time' (each "
        "user's latest ratings are held out; needs timestamps).",
        "--split",
        choices=SPLITS,
    )
    export_top_k: int = _field(
        10, "k of the exported SavedModel's serving_default signature (recommendations per user).", "--export-top-k"
    )
    top_k: int = _field(10, "k of the ranking metrics precision@k, recall@k, NDCG@k and MAP@k.", "--top-k")
    hypertune: bool = _field(
        False,
        "Report the validation metric after every sweep to Vertex AI hyperparameter tuning: the RMSE (tag "
        "val_rmse), or in the implicit mode NDCG@--top-k (tag val_ndcg@<k>).",
        "--hypertune",
    )
    verbose_logging: bool = _field(False, "Log at DEBUG level.", "--verbose-logging")
    collective_timeout: float = _field(
        600.0,
        "Seconds a worker of a multi-worker job waits for the others (to form the cluster, and in every "
        "collective) before it exits with an error.",
        "--collective-timeout",
    )

    def __post_init__(self):
        if self.data_type not in DATA_TYPES:
            raise ValueError(f"`data_type` should be one of {DATA_TYPES}. Received: data_type={self.data_type!r}")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(f"`dataset` should be one of {tuple(DATASETS)}. Received: dataset={self.dataset!r}")
        if self.split not in SPLITS:
            raise ValueError(f"`split` should be one of {SPLITS}. Received: split={self.split!r}")
        for name in ("test_fraction", "validation_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` should be in [0, 1). Received: {name}={value!r}")
        if self.test_fraction + self.validation_fraction >= 1.0:
            raise ValueError(
                "`test_fraction` + `validation_fraction` should be < 1. Received: "
                f"test_fraction={self.test_fraction!r}, validation_fraction={self.validation_fraction!r}"
            )
        for name in ("top_k", "export_top_k"):
            validate.integer(name, getattr(self, name))
        if not (isinstance(self.collective_timeout, (int, float)) and 0 < self.collective_timeout < float("inf")):
            raise ValueError(
                f"`collective_timeout` should be a number of seconds > 0. Received: {self.collective_timeout!r}"
            )
        self._check_conflicts()
        object.__setattr__(self, "delimiter", normalize_delimiter(self.delimiter))
        if self.data_type == "web_views" and self.delimiter not in ("\t", ","):
            raise ValueError(
                f"`delimiter` is fixed to ',' for --data-type web_views. Received: delimiter={self.delimiter!r}"
            )

    def _check_conflicts(self):
        if self.dataset is not None and self.train_file is not None:
            raise ValueError(
                "`dataset` and `train_file` should not both be given: --dataset reads MovieLens through TFDS, "
                f"--train-file reads a file. Received: dataset={self.dataset!r}, train_file={self.train_file!r}"
            )
        if self.data_dir is not None and self.dataset is None:
            raise ValueError(f"`data_dir` is used only with --dataset. Received: data_dir={self.data_dir!r}")
        if self.gcs_bucket is not None and self.train_file is None:
            raise ValueError(f"`gcs_bucket` is a prefix of --train-file. Received: gcs_bucket={self.gcs_bucket!r}")
        if self.data_type == "web_views" and self.dataset is not None:
            raise ValueError(
                f"`dataset` is MovieLens ratings, not web views. Received: dataset={self.dataset!r} with "
                "data_type='web_views'"
            )
        if self.data_type == "web_views" and self.split == "time":
            raise ValueError("`split` 'time' needs timestamps, which web views have none of. Received: split='time'")
        if self.hypertune and self.validation_fraction == 0.0:
            raise ValueError(
                "`validation_fraction` should be > 0 with --hypertune: tuning optimises a validation metric "
                "(RMSE, or NDCG in the implicit mode; tuning on the test set, as TF1 did, makes the test figures "
                "optimistic). "
                "Received: validation_fraction=0.0"
            )

    def to_dict(self):
        return dataclasses.asdict(self)
