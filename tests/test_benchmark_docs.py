"""The benchmark figures of benchmarks/README.md and README.md are those of the published run's JSON lines."""

import json
import os
import re

from benchmarks import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = os.path.join(ROOT, "benchmarks", "published", "latest.jsonl")
NAMES = {"ml-1m": "ML-1M", "ml-20m": "ML-20M"}
COLUMNS = ("wals2-cholesky", "wals2-cg", "implicit-cholesky", "implicit-cg")


def published():
    with open(PUBLISHED, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [line for line in lines if "system" in line]


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def seconds(value: float) -> str:
    """The README's format of a median: three decimals under 1 s, two above."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def test_benchmark_readme_holds_the_published_table():
    results = published()
    assert {r["system"] for r in results} >= set(COLUMNS) | {"numpy", "numpy-2threads"}
    text = read("benchmarks/README.md")
    for row in run.markdown_table(results).splitlines()[2:]:
        assert row in text, row


def test_readme_performance_table_is_the_published_medians():
    by_key = {(r["data"], r["k"], r["system"]): r["median_s"] for r in published()}
    section = read("README.md").split("## Performance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| ML-", line)]
    expected = []
    for data, k in sorted({(d, k) for d, k, s in by_key if s == "implicit-cg"}, key=lambda x: (x[0] != "ml-1m", x[1])):
        cells = [NAMES[data], str(k)] + [seconds(by_key[data, k, s]) for s in COLUMNS]
        expected.append("| " + " | ".join(cells) + " |")
    assert rows == expected
