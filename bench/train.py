"""Benchmark: XGBoost through Ray Train (2 workers) vs single-process ``xgboost.train``.

Both sides train the same parameters for the same number of rounds (no early stopping) on the
same generated binary-classification data. The Ray side is timed as a user experiences it from
a cold process: ``import ray``, starting Ray in-process, putting the data in the object store,
starting the Ray Train workers, training and returning the model. The single-process side is
timed from building its ``QuantileDMatrix`` to the trained booster, with ``nthread=2``.

Usage::

    .venv/bin/python bench/train.py [--rows 1000000] [--rounds 200] [--features 30]

Prints both times, the ratio ray/single (target <= 1.3) and both test ROC AUCs (target: within
0.005 of each other).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import xgboost
from sklearn.metrics import roc_auc_score

# kubeloop.training imports Ray lazily, so importing it here keeps the Ray side cold.
from kubeloop.training import ensure_ray, train_xgboost_distributed

WORKERS = 2
RATIO_TARGET = 1.3
AUC_TOLERANCE = 0.005


def make_data(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels from a noisy mix of linear, interaction and non-linear terms."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features)).astype(np.float32)
    weights = rng.normal(0.0, 0.4, size=features)
    logit = (
        X @ weights
        + 0.8 * X[:, 1] * X[:, 2]
        - 0.7 * np.abs(X[:, 3])
        + 0.5 * np.sin(2.0 * X[:, 4])
        + (X[:, 5] > 0.5) * X[:, 6]
    )
    y = (logit + rng.logistic(size=rows) > 0.0).astype(np.float32)
    return X, y


def params(seed: int) -> dict[str, object]:
    """The XGBoost parameters both sides use."""
    return {
        "objective": "binary:logistic",
        "eval_metric": ["auc"],
        "tree_method": "hist",
        "max_depth": 6,
        "learning_rate": 0.1,
        "seed": seed,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both sides once and print the comparison; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # One draw, then split: train and test come from the same labelling function.
    X_all, y_all = make_data(args.rows + max(args.rows // 5, 1000), args.features, args.seed)
    X, y, X_test, y_test = (
        X_all[: args.rows],
        y_all[: args.rows],
        X_all[args.rows :],
        y_all[args.rows :],
    )
    print(
        f"data: {args.rows:,} rows x {args.features} features, {args.rounds} rounds, "
        f"{WORKERS} Ray workers vs nthread={WORKERS}",
        flush=True,
    )

    start = time.perf_counter()
    ensure_ray(num_cpus=WORKERS)
    ray_booster = train_xgboost_distributed(
        (X, y),
        (X_test[:0], y_test[:0]),
        params=params(args.seed),
        num_boost_round=args.rounds,
        early_stopping_rounds=None,
        workers=WORKERS,
    )
    ray_seconds = time.perf_counter() - start
    print(f"ray:    {ray_seconds:8.1f} s (incl. Ray start)", flush=True)

    start = time.perf_counter()
    dtrain = xgboost.QuantileDMatrix(X, label=y, nthread=WORKERS)
    single_booster = xgboost.train(
        {**params(args.seed), "nthread": WORKERS}, dtrain, num_boost_round=args.rounds
    )
    single_seconds = time.perf_counter() - start
    print(f"single: {single_seconds:8.1f} s", flush=True)

    ray_auc = float(roc_auc_score(y_test, ray_booster.inplace_predict(X_test)))
    single_auc = float(roc_auc_score(y_test, single_booster.inplace_predict(X_test)))
    ratio = ray_seconds / single_seconds
    print(f"ratio ray/single: {ratio:.3f} (target <= {RATIO_TARGET})")
    print(
        f"test AUC ray: {ray_auc:.5f}  single: {single_auc:.5f}  "
        f"diff: {abs(ray_auc - single_auc):.5f} (target <= {AUC_TOLERANCE})"
    )

    import ray

    ray.shutdown()
    ok = ratio <= RATIO_TARGET and abs(ray_auc - single_auc) <= AUC_TOLERANCE
    print("PASS" if ok else "MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
