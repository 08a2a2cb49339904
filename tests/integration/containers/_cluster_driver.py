"""A Ray driver of its own for the multi-node tests (the test process never joins the test
cluster): trains XGBoost with :func:`train_xgboost_distributed` on a label-sorted synthetic set
and prints one JSON line with the model's rounds, its test AUC and the placement.

    python -m tests.integration.containers._cluster_driver ROWS ROUNDS WORKERS [STORAGE EVERY]
    python -m tests.integration.containers._cluster_driver tune ROWS TRIALS BUSY_NODE_IP

``WORKERS`` 0 trains in this process (the single-process reference); ``RAY_ADDRESS`` and the
token variables name the cluster otherwise. ``tune`` runs a search of ``TRIALS`` trials with
:func:`tune_xgboost` while an actor holds every CPU of the node ``BUSY_NODE_IP`` (``-``: none),
and prints the trials, the best one and whether its own model came back.
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


def tune(rows: int, trials: int, busy_ip: str) -> dict[str, object]:
    """A search on the cluster, with ``busy_ip``'s CPUs taken by a placeholder actor."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from kubeloop.training.engine import ensure_ray
    from kubeloop.training.tuning import PARAMS, tune_xgboost

    ensure_ray()
    busy = None
    if busy_ip != "-":
        node = next(n for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == busy_ip)

        @ray.remote
        class Placeholder:
            def ready(self) -> bool:
                return True

        busy = Placeholder.options(  # type: ignore[attr-defined]
            num_cpus=node["Resources"]["CPU"],
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote()
        ray.get(busy.ready.remote())
    train, validation, _ = sorted_parts(rows)
    default = {"grow_policy": "depthwise", "max_depth": 4, "max_leaves": 0,
               "learning_rate": 0.1, "min_child_weight": 1.0, "subsample": 1.0,
               "colsample_bytree": 1.0, "reg_alpha": 0.0, "reg_lambda": 1.0}  # fmt: skip
    assert set(default) == set(PARAMS)
    result = tune_xgboost(
        train, validation,
        base_params={"objective": "binary:logistic", "eval_metric": "auc"},
        default=default, budget_s=120, seed=3, num_boost_round=300, early_stopping_rounds=10,
        max_trials=trials, progress=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    if busy is not None:
        ray.kill(busy)
    assert result.booster is not None
    return {
        **{k: v for k, v in result.summary().items() if k in ("best_trial", "refit", "trials")},
        "model_rounds": result.booster.num_boosted_rounds(),
        "nodes": {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]},
    }


def main(argv: list[str]) -> int:
    if argv[0] == "tune":
        print(json.dumps(tune(int(argv[1]), int(argv[2]), argv[3])))
        return 0
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
