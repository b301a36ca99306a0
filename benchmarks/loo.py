"""ML-1M leave-one-out ranking (the NCF paper's protocol) for the implicit mode's solvers at large k.

Each evaluated user's latest rating is held out and ranked against 99 items the user never rated, sampled with a
fixed seed; HR@10 is the share of users whose held-out item ranks in the top 10 of those 100, NDCG@10 the mean of
1 / log2(rank + 2) over them (rank from 0; 0 outside the top 10). The model trains on every other (user, movie)
pair as implicit feedback (r = 1, confidence 1 + alpha).

Data, from ``../shared/data/ml-1m`` (never copied into the repository): ``user-movie-pairs.all-1000209.dat.gz``
(all 1,000,209 pairs, without ratings or times) and ``ratings.first-487650-lines.dat.gz`` (the ratings, with
timestamps, of users 1-2999). The latest rating needs a timestamp, so the evaluated users are those of the
second file (ties in time: the later line); every pair of the other users is training data.

    python -m benchmarks.loo --factors 256 --solvers cholesky subspace --sweeps 10 --out loo.jsonl

One JSON line per (k, solver): fit seconds, HR@10, NDCG@10, the objective, and the CPU.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from trainer import environment  # noqa: E402  (the standard library only)

environment.set_defaults()  # oneDNN as the trainer has it, before TensorFlow's import

import numpy as np  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m"
PAIRS = "user-movie-pairs.all-1000209.dat.gz"
RATINGS = "ratings.first-487650-lines.dat.gz"
NEGATIVES = 99
CUTOFF = 10


def _read(path: pathlib.Path, columns: int) -> np.ndarray:
    with gzip.open(path, "rt") as f:
        rows = [line.split("::")[:columns] for line in f if line.strip()]
    return np.asarray(rows, dtype=np.int64)


def protocol(data: pathlib.Path = DATA, seed: int = 0):
    """(train users, train items, held-out [u, item], candidates [u, 100] with the held-out item first, the
    number of users and of items), every id an index."""
    pairs = _read(data / PAIRS, 2)
    rated = _read(data / RATINGS, 4)  # user, movie, rating, timestamp
    users, user_index = np.unique(pairs[:, 0], return_inverse=True)
    items, item_index = np.unique(pairs[:, 1], return_inverse=True)
    # Each rated user's latest rating (the later line on a tie): sort by (user, time, line) and keep the last.
    order = np.lexsort((np.arange(len(rated)), rated[:, 3], rated[:, 0]))
    last = order[np.r_[rated[order[1:], 0] != rated[order[:-1], 0], True]]
    held_users = np.searchsorted(users, rated[last, 0])
    held_items = np.searchsorted(items, rated[last, 1])
    keys = user_index * len(items) + item_index
    held_keys = held_users * len(items) + held_items
    keep = ~np.isin(keys, held_keys)
    rng = np.random.default_rng(seed)
    seen = np.zeros(len(items), bool)
    by_user = np.argsort(user_index, kind="stable")
    starts = np.searchsorted(user_index[by_user], np.arange(len(users) + 1))
    candidates = np.empty((len(held_users), NEGATIVES + 1), np.int64)
    for row, (u, i) in enumerate(zip(held_users, held_items)):
        own = item_index[by_user[starts[u] : starts[u + 1]]]  # every item the user rated, held-out one included
        seen[own] = True
        unrated = np.flatnonzero(~seen)
        seen[own] = False
        candidates[row, 0] = i
        candidates[row, 1:] = rng.choice(unrated, NEGATIVES, replace=False)
    return user_index[keep], item_index[keep], held_users, candidates, len(users), len(items)


def hit_rate_and_ndcg(user_factors, item_factors, held_users, candidates) -> tuple[float, float]:
    """HR@10 and NDCG@10 of the held-out item (column 0 of ``candidates``) among its row's 100 candidates."""
    scores = np.einsum("bk,bck->bc", user_factors[held_users], item_factors[candidates])
    # Rank: candidates scoring strictly above the held-out item, plus half of the ties (none in practice).
    above = (scores[:, 1:] > scores[:, :1]).sum(axis=1)
    hits = above < CUTOFF
    return float(hits.mean()), float(np.where(hits, 1.0 / np.log2(above + 2.0), 0.0).mean())


def fit(train_users, train_items, shape, factors, solver, sweeps, regularization, alpha, block, seed, init):
    """The wals2 implicit-mode fit: (U, V, seconds of the sweeps, the objective per sweep)."""
    import wals2

    ratings = wals2.Ratings(
        users=train_users.astype(np.int32),
        items=train_items.astype(np.int32),
        values=np.ones(train_users.size, np.float32),
        user_ids=np.arange(shape[0]),
        item_ids=np.arange(shape[1]),
        source=PAIRS,
    )
    options = {"subspace_block": block} if solver == "subspace" else {}
    model = wals2.WALSModel(
        *shape,
        latent_factors=factors,
        mode="implicit",
        regularization=regularization,
        alpha=alpha,
        solver=solver,
        seed=seed,
        init=init,
        compute_loss=True,
        **options,
    )
    model.compile(jit_compile=False)
    started = time.perf_counter()
    history = model.fit(ratings, epochs=sweeps, verbose=0)
    seconds = time.perf_counter() - started
    return model.user_factors.numpy(), model.item_factors.numpy(), seconds, history.history.get("loss", [])


def markdown_table(lines: list[dict]) -> str:
    """The published table of ``benchmarks/README.md`` from JSON lines of this benchmark (tested against it)."""
    rows = [
        "| k | solver | init | sweeps | fit s | s/sweep | objective | HR@10 | NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in lines:
        solver = r["solver"] + (f" (b = {r['subspace_block']})" if r["subspace_block"] else "")
        rows.append(
            f"| {r['k']} | {solver} | {r.get('init', 'normal')} | {r['sweeps']} | {r['fit_s']:.0f} | "
            f"{r['fit_s'] / r['sweeps']:.1f} | {r['loss'][-1]:,.0f} | {r['hr@10']:.4f} | {r['ndcg@10']:.4f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA), help="the ml-1m folder (default: ../shared/data/ml-1m)")
    parser.add_argument("--factors", type=int, nargs="+", default=[256])
    parser.add_argument("--solvers", nargs="+", default=["cholesky", "subspace"])
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--regularization", type=float, default=50.0)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--subspace-block", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init", default="normal", help="initial factors: 'normal' N(0, 1) (TF1's) or 'scaled' N(0, 1/k)"
    )
    parser.add_argument("--out", help="append the JSON lines here too")
    args = parser.parse_args(argv)
    data = pathlib.Path(args.data)
    if not (data / PAIRS).exists() or not (data / RATINGS).exists():
        print(f"benchmarks.loo: {data} lacks {PAIRS} or {RATINGS} (MovieLens files are never shipped)", file=sys.stderr)
        return 1
    from benchmarks.run import cpu_info

    train_users, train_items, held, candidates, m, n = protocol(data, args.seed)
    print(f"{m} users x {n} items, {train_users.size} training pairs, {held.size} held-out users", flush=True)
    for factors in args.factors:
        for solver in args.solvers:
            u, v, seconds, losses = fit(
                train_users,
                train_items,
                (m, n),
                factors,
                solver,
                args.sweeps,
                args.regularization,
                args.alpha,
                args.subspace_block,
                args.seed,
                args.init,
            )
            hr, ndcg = hit_rate_and_ndcg(u, v, held, candidates)
            line = {
                "k": factors,
                "solver": solver,
                "subspace_block": args.subspace_block if solver == "subspace" else None,
                "sweeps": args.sweeps,
                "init": args.init,
                "regularization": args.regularization,
                "alpha": args.alpha,
                "fit_s": seconds,
                "hr@10": hr,
                "ndcg@10": ndcg,
                "loss": [float(np.ravel(x)[0]) for x in losses],
                **cpu_info(),
            }
            print(json.dumps(line), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
