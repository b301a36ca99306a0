"""A seeded, GA360-shaped sessions export for trying the pipeline without Google Analytics data.

Each row is one visit (``fullVisitorId``, ``visitNumber``, ``date`` YYYYMMDD, nested ``hits``), the columns of the
BigQuery GA360 export that the extraction query reads. Articles belong to topics; each visitor favours one or two
topics, reads mostly from them (popular articles more often) and stays longer on them, so the time on page carries
a preference a factor model can learn. Some hits are EVENTs, and some PAGE hits lack the article dimension.

``python -m pipeline.sample ga.parquet`` (or ``.csv``, ``.jsonl``) writes one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys

import numpy as np

from trainer import logs

logger = logging.getLogger(__name__)


def generate(
    visitors: int = 400,
    articles: int = 120,
    topics: int = 8,
    days: int = 7,
    start_date: str = "20170801",
    custom_dimension_index: int = 10,
    seed: int = 0,
) -> list[dict]:
    """GA sessions as dicts, one per visit, reproducible from ``seed``."""
    if min(visitors, articles, topics, days) < 1 or topics > articles:
        raise ValueError(
            "`visitors`, `articles`, `topics` and `days` should be >= 1 with topics <= articles. Received: "
            f"visitors={visitors}, articles={articles}, topics={topics}, days={days}"
        )
    rng = np.random.default_rng(seed)
    first = datetime.datetime.strptime(start_date, "%Y%m%d")
    topic_of = np.arange(articles) % topics
    popularity = (1.0 + rng.permutation(articles)) ** -0.5  # a long tail of less-read articles
    ids = rng.integers(10**18, 10**19 - 1, size=visitors, dtype=np.uint64)
    sessions = []
    for v in range(visitors):
        favourites = rng.choice(topics, size=1 + int(rng.random() < 0.5), replace=False)
        liked = np.isin(topic_of, favourites)
        weights = popularity * np.where(liked, 20.0, 1.0)
        weights /= weights.sum()
        for visit in range(1 + int(rng.poisson(1.5))):
            date = first + datetime.timedelta(days=int(rng.integers(days)))
            hits, clock = [], 0
            for _ in range(3 + int(rng.poisson(4.0))):
                article = int(rng.choice(articles, p=weights))
                dwell = rng.lognormal(np.log(60_000.0 if liked[article] else 12_000.0), 0.5)
                dimensions = [{"index": 1, "value": "web"}]
                if rng.random() > 0.05:  # a few page hits miss the article dimension
                    dimensions.append({"index": custom_dimension_index, "value": f"article-{article:04d}"})
                hits.append({"time": clock, "hitNumber": len(hits) + 1, "type": "PAGE", "customDimensions": dimensions})
                if rng.random() < 0.2:
                    hits.append(
                        {
                            "time": clock + int(dwell / 2),
                            "hitNumber": len(hits) + 1,
                            "type": "EVENT",
                            "customDimensions": [{"index": custom_dimension_index, "value": "share-button"}],
                        }
                    )
                clock += int(dwell)
            sessions.append(
                {
                    "fullVisitorId": str(ids[v]),
                    "visitNumber": visit + 1,
                    "date": date.strftime("%Y%m%d"),
                    "hits": hits,
                }
            )
    return sessions


def write_export(sessions: list[dict], path: str) -> str:
    """Writes sessions as a GA export: Parquet or newline-delimited JSON (nested, as BigQuery exports them), or
    CSV with ``hits`` as JSON text. Returns ``path``."""
    lower = path.lower()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if lower.endswith(".csv"):
        import pandas as pd

        frame = pd.DataFrame(sessions, columns=["fullVisitorId", "visitNumber", "date", "hits"])
        frame["hits"] = frame["hits"].map(json.dumps)
        frame.to_csv(path, index=False)
        return path
    lines = "".join(json.dumps(s) + "\n" for s in sessions)
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(lines)
        return path
    if lower.endswith(".parquet"):
        import tempfile

        import duckdb

        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=directory, delete=False) as handle:
            handle.write(lines)
        try:
            connection = duckdb.connect()
            hits = connection.sql(
                "SELECT * REPLACE (CAST(fullVisitorId AS VARCHAR) AS fullVisitorId, CAST(date AS VARCHAR) AS date) "
                "FROM read_json(?, format='newline_delimited')",
                params=[handle.name],
            )
            hits.write_parquet(path)
            connection.close()
        finally:
            os.remove(handle.name)
        return path
    raise ValueError(f"`path` should end in .parquet, .csv, .jsonl, .ndjson or .json. Received: path={path!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sample", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="output file: .parquet, .csv or .jsonl")
    parser.add_argument("--visitors", type=int, default=400)
    parser.add_argument("--articles", type=int, default=120)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--start-date", default="20170801", help="first date, YYYYMMDD")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logs.configure()
    try:
        sessions = generate(args.visitors, args.articles, days=args.days, start_date=args.start_date, seed=args.seed)
        write_export(sessions, args.path)
    except (OSError, ValueError) as err:
        logger.error("%s", err)
        return 1
    logger.info("wrote %d visits (%d hits) to %s", len(sessions), sum(len(s["hits"]) for s in sessions), args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
