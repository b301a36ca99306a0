"""The benchmark figures of benchmarks/README.md and README.md are those of the published run's JSON lines."""

import json
import os
import re

import pytest

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


def test_rounds_merge_into_one_line_per_configuration():
    def line(sweeps, rss, layout):
        return {
            "data": "d",
            "k": 8,
            "system": "s",
            "loadavg_1m_at_start": layout / 10,
            "layout_s": layout,
            "warmup_s": 2 * layout,
            "sweep_s": sweeps,
            "cpu_util": 1.5 + layout / 10,
            "median_s": sorted(sweeps)[1],
            "min_s": min(sweeps),
            "max_s": max(sweeps),
            "peak_rss_gb": rss,
        }

    merged = run.merge_rounds([line([3.0, 1.0, 2.0], 0.5, 1.0), line([6.0, 4.0, 5.0], 0.7, 3.0)])
    assert merged["sweep_s"] == [3.0, 1.0, 2.0, 6.0, 4.0, 5.0]
    assert merged["median_s"] == 3.5 and (merged["min_s"], merged["max_s"]) == (1.0, 6.0)
    assert merged["round_medians_s"] == [2.0, 5.0] and merged["rounds"] == 2
    assert merged["peak_rss_gb"] == 0.7 and merged["layout_s"] == 2.0 and merged["warmup_s"] == 4.0
    assert merged["cpu_util"] == pytest.approx(1.7) and merged["loadavg_1m_at_start"] == 0.3
    assert run.merge_rounds([line([1.0, 2.0, 3.0], 0.5, 1.0)]) == line([1.0, 2.0, 3.0], 0.5, 1.0)
    failed = {"data": "d", "k": 8, "system": "s", "error": "exit 1: boom"}
    assert run.merge_rounds([line([1.0, 2.0, 3.0], 0.5, 1.0), failed]) == failed
