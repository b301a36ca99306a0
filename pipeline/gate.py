"""The promotion gate: a new model replaces the serving one only if its validation metric is good enough.

One rule, used by the local flow (``pipeline.local``) and, through ``python -m pipeline.gate``, by the Vertex AI
pipeline's gate step:

- the candidate's ``metric`` (a key of the trainer's ``metrics.json``) must be a finite number;
- with ``threshold``, it must be at most the threshold (RMSE) or at least it (ranking metrics);
- with an incumbent (the serving model's ``metrics.json``), it must be no worse than the incumbent's value, up to
  the relative ``tolerance`` (0.05 accepts a candidate 5 % worse). Without an incumbent (the first run) the
  threshold alone decides.

RMSE metrics are minimised; precision/recall/NDCG/MAP (``validation_ndcg@10`` and the like) are maximised. Both
models are scored on their own day's validation split, so the comparison is between two snapshots of the data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Mapping

from trainer import logs
from wals2.metrics import direction as metric_direction

logger = logging.getLogger(__name__)

DEFAULT_METRIC = "validation_rmse"


@dataclasses.dataclass(frozen=True)
class Decision:
    """The gate's verdict: ``passed``, the values compared, and a sentence saying why."""

    passed: bool
    metric: str
    candidate: float
    incumbent: float | None
    reason: str


def higher_is_better(metric: str) -> bool:
    """True for ranking metrics (``*precision@k``, ``*recall@k``, ``*ndcg@k``, ``*map@k``), False for ``*rmse``
    (``wals2.metrics.direction``, the registry).

    Raises:
        ValueError: a metric the registry does not know the direction of.
    """
    return metric_direction(metric) == "max"


def _value(metrics: Mapping, metric: str, what: str) -> float:
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        hint = " (validation metrics need the trainer's --validation-fraction > 0)" if "validation" in metric else ""
        raise ValueError(
            f"the {what} metrics have no finite `{metric}`{hint}. Received: {metric}={value!r}; "
            f"numbers present: {sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))}"
        )
    return float(value)


def decide(
    candidate: Mapping,
    incumbent: Mapping | None = None,
    metric: str = DEFAULT_METRIC,
    threshold: float | None = None,
    tolerance: float = 0.0,
) -> Decision:
    """Whether the candidate model (its ``metrics.json`` as a dict) may replace the incumbent.

    Raises:
        ValueError: an unknown metric, a negative tolerance, or a metric missing from either ``metrics.json``.
    """
    better_high = higher_is_better(metric)
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"`tolerance` should be a number >= 0. Received: tolerance={tolerance!r}")
    new = _value(candidate, metric, "candidate's")
    old = None if incumbent is None else _value(incumbent, metric, "incumbent's")
    word = "at least" if better_high else "at most"
    if threshold is not None and (new < threshold if better_high else new > threshold):
        return Decision(False, metric, new, old, f"{metric} {new:.6g} is not {word} the threshold {threshold:.6g}")
    if old is None:
        return Decision(True, metric, new, None, f"{metric} {new:.6g}; no serving model to compare with")
    bound = old * (1 - tolerance) if better_high else old * (1 + tolerance)
    if new < bound if better_high else new > bound:
        return Decision(
            False,
            metric,
            new,
            old,
            f"{metric} {new:.6g} is worse than the serving model's {old:.6g} (tolerance {tolerance:.3g}: "
            f"{word} {bound:.6g} needed)",
        )
    return Decision(True, metric, new, old, f"{metric} {new:.6g} against the serving model's {old:.6g}")


def read_metrics(path: str, missing_ok: bool = False) -> dict | None:
    """A ``metrics.json`` (local, or ``gs://`` through ``tf.io.gfile``); None if absent and ``missing_ok``.

    Raises:
        FileNotFoundError: absent, unless ``missing_ok``.
        ValueError: not a JSON object.
    """
    if path.startswith("gs://"):
        import tensorflow as tf

        exists, opener = tf.io.gfile.exists, tf.io.gfile.GFile
    else:
        import os

        exists, opener = os.path.exists, open
    if not exists(path):
        if missing_ok:
            return None
        raise FileNotFoundError(f"metrics file not found: {path}")
    with opener(path, "r") as handle:
        text = handle.read()
    try:
        metrics = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path}: not JSON: {err}") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: should hold a JSON object, found {type(metrics).__name__}")
    return metrics


def _write_text(path: str, text: str) -> None:
    if path.startswith("gs://"):
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(text)
        return
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.gate",
        description="Gate a new model on its metrics.json (check), or record the served model's (record).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="compare a candidate's metrics.json with the served model's")
    check.add_argument("--candidate", required=True, help="the new model's metrics.json (local or gs://)")
    check.add_argument("--incumbent", default="", help="the served model's metrics.json; absent: first run")
    add_rule_flags(check)
    check.add_argument("--decision-file", help="write 'true' or 'false' here (the pipeline step's output)")
    record = sub.add_parser("record", help="copy a deployed model's metrics.json to the served-model location")
    record.add_argument("--candidate", required=True)
    record.add_argument("--incumbent", required=True)
    return parser


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _optional_float(text: str) -> float | None:
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or nothing, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_rule_flags(parser: argparse.ArgumentParser) -> None:
    """``--metric``, ``--threshold``, ``--tolerance``: the gate's rule, for every entry point that gates."""
    parser.add_argument(
        "--metric", default=DEFAULT_METRIC, help=f"key of metrics.json to compare (default {DEFAULT_METRIC})"
    )
    parser.add_argument(
        "--threshold", type=_optional_float, help="an absolute bound the metric must meet (empty: none)"
    )
    parser.add_argument(
        "--tolerance", type=_tolerance, default=0.0, help="relative slack against the serving model (default 0)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()
    try:
        candidate = read_metrics(args.candidate)
        if args.command == "record":
            _write_text(args.incumbent, json.dumps(candidate, indent=2, sort_keys=True))
            logger.info("recorded %s as the served model's metrics (%s)", args.candidate, args.incumbent)
            return 0
        incumbent = read_metrics(args.incumbent, missing_ok=True) if args.incumbent else None
        decision = decide(candidate, incumbent, args.metric, args.threshold, args.tolerance)
    except (OSError, ValueError) as err:
        logger.error("%s", err)
        return 1
    logger.info("gate %s: %s", "passed" if decision.passed else "failed", decision.reason)
    if args.decision_file:
        _write_text(args.decision_file, "true" if decision.passed else "false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
