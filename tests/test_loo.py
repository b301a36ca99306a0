"""The leave-one-out protocol of ``benchmarks.loo`` on hand-made data, and its metrics on a hand-computed case."""

from __future__ import annotations

import gzip

import numpy as np

from benchmarks import loo


def test_metrics_of_a_hand_computed_case():
    items = np.eye(3, dtype=np.float32)  # item j scores u_j
    users = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]], np.float32)
    candidates = np.array([[0, 1, 2], [0, 1, 2]])  # held-out item 0: rank 0 for user 0, rank 2 for user 1
    hr, ndcg = loo.hit_rate_and_ndcg(users, items, np.array([0, 1]), candidates)
    assert hr == 1.0 and np.isclose(ndcg, (1.0 + 1.0 / np.log2(4.0)) / 2)


def test_protocol_holds_out_each_rated_users_latest_and_samples_unrated_negatives(tmp_path, monkeypatch):
    monkeypatch.setattr(loo, "NEGATIVES", 3)
    rng = np.random.default_rng(0)
    pairs = sorted({(u, i) for u in range(1, 9) for i in rng.choice(np.arange(10, 40), 8, replace=False)})
    rated_users = {1, 2, 3}
    times = {p: int(rng.integers(1, 10**6)) for p in pairs if p[0] in rated_users}
    with gzip.open(tmp_path / loo.PAIRS, "wt") as f:
        f.writelines(f"{u}::{i}\n" for u, i in pairs)
    with gzip.open(tmp_path / loo.RATINGS, "wt") as f:
        f.writelines(f"{u}::{i}::4::{t}\n" for (u, i), t in times.items())
    train_users, train_items, held, candidates, m, n = loo.protocol(tmp_path, seed=0)
    users, items = sorted({u for u, _ in pairs}), sorted({i for _, i in pairs})
    assert (m, n) == (len(users), len(items)) and candidates.shape == (3, 4)
    latest = {u: max((t, i) for (v, i), t in times.items() if v == u)[1] for u in rated_users}
    train = {(users[u], items[i]) for u, i in zip(train_users, train_items)}
    assert train == set(pairs) - {(u, latest[u]) for u in rated_users}
    for row, u in enumerate(held):
        raw = users[u]
        assert items[candidates[row, 0]] == latest[raw]
        negatives = {items[i] for i in candidates[row, 1:]}
        assert len(negatives) == 3 and not negatives & {i for v, i in pairs if v == raw}


def test_the_published_leave_one_out_table_is_in_the_benchmark_readme():
    import json

    from conftest import ROOT

    lines = [
        json.loads(line) for line in (ROOT / "benchmarks" / "published" / "loo-ml1m-amd.jsonl").read_text().splitlines()
    ]
    assert {(r["k"], r["solver"]) for r in lines} >= {(256, "cholesky"), (256, "subspace"), (512, "subspace")}
    assert all(r["cpu"].startswith("AMD EPYC") for r in lines)
    text = (ROOT / "benchmarks" / "README.md").read_text()
    for row in loo.markdown_table(lines).splitlines():
        assert row in text, row
