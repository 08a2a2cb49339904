"""XGBoost on a real two-node Ray cluster vs one process, side by side in one run.

The cluster is the test suite's (tests/ray_cluster.py): a Ray head on this machine (127.0.0.2)
and a node in a container of the component image (127.0.0.3, its own filesystem), one CPU each,
token authentication on. The job: ``--rows`` x ``--features`` (default 1M x 30), ``--rounds``
(default 1,000) rounds, no early stopping.

- one process: :func:`train_xgboost_distributed` with ``workers=0`` -- XGBoost in this process
  with ``--threads`` threads (default 2, the cluster's CPUs together);
- the cluster: ``workers=2`` through this process as the Ray driver: one Ray Train worker per
  node, each taking only its own shard of the shuffled rows.

Printed: wall time of each fit (from the call to the model back) and their ratio (target
<= 1.3), each side's fixed cost (call -> first round) and per-round cost, the test AUC of both
(within 0.005), and the peak object-store memory of each node while the cluster fit ran, over
the whole training set's bytes (target <= 0.6). The peak is bounded from above without
disturbing the fit: the bytes in use before it plus every byte created in or pulled into the
store during it (each raylet's ``cumulative_created_bytes``, read before and after). With
``--sample-every S`` the stores are also sampled every S seconds; each sample asks every raylet,
which asks each of its workers -- the training workers too, so sampling adds to the fit it
measures. The cluster is started first and torn down at the end.

Usage::

    KUBELOOP_IMAGE_TAG=dev .venv/bin/python bench/cluster_train.py [--rows 1000000] \\
        [--features 30] [--rounds 1000] [--threads 2]

Exit status 1 when a target is missed. Needs the component image (``make images``).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.ray_cluster import RayCluster, container_engine, node_store_stats  # noqa: E402

TIME_RATIO, MEMORY_SHARE, AUC_TOLERANCE = 1.3, 0.6, 0.005
PARAMS = {"objective": "binary:logistic", "eval_metric": "auc", "max_depth": 6, "seed": 0}


def _data(rows: int, features: int) -> tuple[np.ndarray, ...]:
    """A noisy nonlinear problem; the last 20,000 rows are the test set."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows + 20_000, features)).astype(np.float32)
    logit = X[:, 0] + 0.5 * X[:, 1] * X[:, 2] - 0.7 * np.abs(X[:, 3]) + 0.3 * X[:, 4:10].sum(1)
    y = (logit + rng.logistic(size=len(X)) > 0).astype(np.float32)
    return X[:rows], y[:rows], X[rows:], y[rows:]


class _PeakSampler(threading.Thread):
    """Peak object-store bytes in use per node, sampled until stopped."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for ip, stats in node_store_stats().items():
                self.peaks[ip] = max(self.peaks.get(ip, 0), stats["used"])
            self.samples += 1
            self.halt.wait(self.every)


def _fit(X: np.ndarray, y: np.ndarray, rounds: int, workers: int) -> tuple[object, dict]:
    from kubeloop.training.distributed import train_xgboost_distributed

    timings: dict[str, float] = {}
    placement: dict[str, object] = {}
    started = time.time()
    booster = train_xgboost_distributed(
        (X, y), (X[:1], y[:1]), params=PARAMS, num_boost_round=rounds,
        early_stopping_rounds=None, workers=workers, timings=timings, placement=placement,
        progress=lambda line: print(f"  [{time.time() - started:5.1f} s] {line}", flush=True),
    )  # fmt: skip
    timings["returned"] = time.time()
    return booster, {**timings, "placement": placement}


def _auc(booster: object, X: np.ndarray, y: np.ndarray) -> float:
    import xgboost
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, booster.predict(xgboost.DMatrix(X))))  # type: ignore[attr-defined]


def _costs(t: dict, rounds: int) -> str:
    fixed = t["training_started"] - t["fit_called"]
    per_round = (t["training_ended"] - t["training_started"]) / rounds
    return f"fixed {fixed:.1f} s, {per_round * 1000:.1f} ms/round"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sample-every", type=float, default=0.0,
        help="also sample every node's object store this often, in seconds (0: no sampling; "
        "each sample asks every raylet, which asks each of its workers, slowing the fit)",
    )  # fmt: skip
    args = parser.parse_args()
    engine = container_engine()
    if isinstance(engine, str):
        raise SystemExit(f"no container engine: {engine}")
    cluster = RayCluster(engine, object_store_bytes=1024**3)
    # Ray reads its authentication settings once, when first used: set before anything does.
    os.environ.update(cluster.auth_env())
    X, y, X_test, y_test = _data(args.rows, args.features)
    whole = X.nbytes + y.nbytes
    print(f"data: {args.rows:,} x {args.features} float32 = {whole / 1e6:.0f} MB of training set")

    from kubeloop.training.engine import Engine

    print(f"one process, {args.threads} threads:")
    single_engine = Engine(0, args.threads, None, "bench: one process")
    booster, single = _fit(X, y, args.rounds, single_engine)  # type: ignore[arg-type]
    single_s = single["returned"] - single["fit_called"]
    single_auc = _auc(booster, X_test, y_test)

    try:
        started = time.monotonic()
        cluster.start()
        cluster.add_node("127.0.0.3")
        print(f"cluster up in {time.monotonic() - started:.0f} s: {cluster.alive_nodes()}")
        from kubeloop.training.engine import ensure_ray

        os.environ["RAY_ADDRESS"] = cluster.address  # as a driver of the cluster is told
        ensure_ray()
        sampler = _PeakSampler(args.sample_every)
        before = node_store_stats()
        if args.sample_every > 0:
            sampler.start()
        print("2 Ray Train workers on 2 nodes, 1 CPU each:")
        booster, spread = _fit(X, y, args.rounds, 2)
        sampler.halt.set()
        if sampler.is_alive():
            sampler.join()  # its last sample is in before the peaks are printed
        after = node_store_stats()
    finally:
        cluster.stop()
    cluster_s = spread["returned"] - spread["fit_called"]
    cluster_auc = _auc(booster, X_test, y_test)
    ratio = cluster_s / single_s
    print(
        f"\none process:  {single_s:7.1f} s ({_costs(single, args.rounds)}), AUC {single_auc:.4f}"
    )
    print(
        f"two nodes:    {cluster_s:7.1f} s ({_costs(spread, args.rounds)}), AUC {cluster_auc:.4f}"
    )
    print(f"time ratio two nodes / one process: {ratio:.2f} (target <= {TIME_RATIO})")
    bound = {
        ip: stats["used"] + after[ip]["created"] - stats["created"]
        for ip, stats in sorted(before.items())
        if ip in after
    }
    shares = {ip: peak / whole for ip, peak in bound.items()}
    for ip, share in shares.items():
        print(
            f"peak object store on {ip}: <= {bound[ip] / 1e6:.1f} MB = {share:.3f} x the "
            f"training set (target <= {MEMORY_SHARE}; in use before the fit + created during it)"
        )
    for ip, peak in sorted(sampler.peaks.items()):
        print(f"  sampled peak on {ip}: {peak / 1e6:.1f} MB ({sampler.samples} samples)")
    nodes = spread["placement"]["nodes"]  # type: ignore[index]
    print("workers: " + ", ".join(f"{n['rank']}@{n['node_ip']} {n['rows']:,} rows" for n in nodes))
    missed = [
        *(["time ratio"] if ratio > TIME_RATIO else []),
        *(["object store"] if any(s > MEMORY_SHARE for s in shares.values()) else []),
        *(["AUC"] if abs(cluster_auc - single_auc) > AUC_TOLERANCE else []),
        *(["placement"] if len({n["node_ip"] for n in nodes}) != 2 else []),
    ]
    print("targets missed: " + ", ".join(missed) if missed else "all targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
