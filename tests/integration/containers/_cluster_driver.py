"""A Ray driver of its own for the multi-node tests (the test process never joins the test
cluster): trains XGBoost with :func:`train_xgboost_distributed` on a label-sorted synthetic set
and prints one JSON line with the model's rounds, its test AUC and the placement.

    python -m tests.integration.containers._cluster_driver ROWS ROUNDS WORKERS [STORAGE EVERY]

``WORKERS`` 0 trains in this process (the single-process reference); ``RAY_ADDRESS`` and the
token variables name the cluster otherwise.
"""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import xgboost
from sklearn.metrics import roc_auc_score

from kubeloop.training.distributed import train_xgboost_distributed


def sorted_parts(rows: int, *, features: int = 10, seed: int = 1) -> list[tuple[np.ndarray, ...]]:
    """Train, validation and test parts (60/20/20) of a noisy linear problem, each part's rows
    sorted by the label -- the worst case for contiguous shards."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] - 0.3 * X[:, 2] + rng.normal(size=rows) > 0).astype(np.float32)
    bounds = (0, rows * 6 // 10, rows * 8 // 10, rows)
    parts = []
    for start, stop in itertools.pairwise(bounds):
        order = start + np.argsort(y[start:stop], kind="stable")
        parts.append((X[order], y[order]))
    return parts


def main(argv: list[str]) -> int:
    rows, rounds, workers = int(argv[0]), int(argv[1]), int(argv[2])
    storage = argv[3] if len(argv) > 3 else None
    every = int(argv[4]) if len(argv) > 4 else None
    train, validation, test = sorted_parts(rows)
    params = {"objective": "binary:logistic", "eval_metric": "auc", "seed": 7, "max_depth": 6}
    placement: dict[str, object] = {}
    booster = train_xgboost_distributed(
        train, validation, params=params, num_boost_round=rounds,
        early_stopping_rounds=None if storage else 20, workers=workers,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        placement=placement, storage=storage, checkpoint_every=every,
    )  # fmt: skip
    auc = roc_auc_score(test[1], booster.predict(xgboost.DMatrix(test[0])))
    result = {"rounds": booster.num_boosted_rounds(), "auc": auc, "placement": placement}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
