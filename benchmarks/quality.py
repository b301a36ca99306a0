"""Implicit-feedback quality: wals2's implicit mode against ``implicit``'s ALS on the same split, k, lambda, sweeps.

Both minimise sum_all c_ij (p_ij - x_i.y_j)^2 + lambda (|X|^2 + |Y|^2) with p = 1 on observed cells and
c = 1 + alpha r there (1 elsewhere): ``implicit`` receives the confidences 1 + alpha r as its matrix values (its
own ``alpha`` left at 1). Both are scored by the same code (``wals2.metrics``) on the seeded test part, with the
training items excluded from the top 10.

    python -m benchmarks.quality --train-file ../shared/data/ml-100k/u.data --factors 32 --regularization 10 \
        --alpha 0.1 --sweeps 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import wals2  # noqa: E402
from wals2 import metrics  # noqa: E402


def implicit_top_k(
    train: wals2.Ratings,
    users: np.ndarray,
    factors: int,
    regularization: float,
    alpha: float,
    sweeps: int,
    k: int,
    seed: int,
) -> np.ndarray:
    from implicit.cpu.als import AlternatingLeastSquares

    confidence = sp.csr_matrix(
        (1.0 + alpha * train.values.astype(np.float32), (train.users, train.items)), shape=train.shape
    )
    model = AlternatingLeastSquares(
        factors=factors,
        regularization=regularization,
        iterations=sweeps,
        use_cg=False,
        num_threads=2,
        random_state=seed,
        calculate_training_loss=False,
    )
    model.fit(confidence, show_progress=False)
    ids, _ = model.recommend(users, confidence[users], N=k, filter_already_liked_items=True)
    return np.asarray(ids, np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-file", help="ratings file (tab separated); default: the bundled latest-small")
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--regularization", type=float, default=10.0)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3, help="initialisations per system (the split uses seed 0)")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    ratings = wals2.read_ratings(args.train_file) if args.train_file else wals2.load_bundled()
    train, test = ratings.split(0.1, seed=0)
    users = np.unique(test.users)
    relevant = [test.items[test.users == u].astype(np.int64) for u in users]
    runs = {"wals2": [], "implicit": []}
    for seed in range(args.seeds):
        model = wals2.WALSModel(
            ratings.num_users,
            ratings.num_items,
            mode="implicit",
            latent_factors=args.factors,
            regularization=args.regularization,
            alpha=args.alpha,
            seed=seed,
            init="scaled",
        )
        model.compile(jit_compile=False)
        model.fit(train, epochs=args.sweeps, verbose=0)
        runs["wals2"].append(metrics.ranking_metrics(model.recommend(users, k=args.k)[0], relevant))
        theirs = implicit_top_k(train, users, args.factors, args.regularization, args.alpha, args.sweeps, args.k, seed)
        runs["implicit"].append(metrics.ranking_metrics(theirs, relevant))
    results = {
        "data": ratings.source,
        "factors": args.factors,
        "regularization": args.regularization,
        "alpha": args.alpha,
        "sweeps": args.sweeps,
        "seeds": args.seeds,
        **{
            system: {name: float(np.mean([r[name] for r in scores])) for name in scores[0] if name != "users"}
            for system, scores in runs.items()
        },
    }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
