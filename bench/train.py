"""Benchmarks of training, each side by side in one run (ratios, not absolute times).

(a) default -- ``kubeloop train`` on the shared Telco data vs ``bench/plain_train.py`` (the same
    work as one plain script: scikit-learn ``ColumnTransformer`` + XGBoost with early stopping +
    logistic regression), both as fresh processes, interleaved ``--repeats`` times: wall-time
    ratio (target <= 2.0, goal 1.3) and test ROC AUC (target: within 0.005). Then the price of
    Ray Train workers on the same matrices in one process: ``ray.init``, a first fit on the
    fresh Ray and a fit on the warm Ray (2 workers), beside the in-process fit ``workers=auto``
    makes.

(b) ``--big`` -- a job big enough to send to a cluster: 1M rows x 30 features, 1,000 rounds, no
    early stopping. Ray Train with 2 workers on an already running local Ray (as on KubeRay,
    where the cluster is up before the job: one fit first warms it) vs one process with the same
    parameters (``nthread=2``): ratio (target <= 1.3) and test AUC (within 0.005). Each side's
    fixed cost (``fit()`` -> first round: workers, data, matrices) and per-round cost are printed
    separately, and the cold figure (Ray's start and a first fit on the fresh Ray) beside them.

Usage::

    .venv/bin/python bench/train.py [--data CSV --target COL] [--repeats 3]
    .venv/bin/python bench/train.py --big [--rows 1000000] [--rounds 1000] [--features 30]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KUBELOOP = Path(sys.executable).with_name("kubeloop")
TELCO = Path("/work/shared/datasets/telco_customer_churn.csv")
WORKERS = 2
AUC_TOLERANCE = 0.005
TRAIN_RATIO, TRAIN_GOAL, BIG_RATIO = 2.0, 1.3, 1.3


def _timed(
    command: list[str], env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{command[:3]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done


def _stages(stderr: str) -> str:
    """kubeloop's own progress stamps: when XGBoost started, baselines started, bundle done."""
    stamps = {}
    for line in stderr.splitlines():
        match = re.match(r"\[\s*([\d.]+)s\] train (.*)", line)
        if match:
            stamps.setdefault(match.group(2).split(" on ")[0].split(":")[0], float(match.group(1)))
    keys = ("training xgboost", "training linear", "training random_forest", "chosen")
    shown = [f"{k.removeprefix('training ')} @{stamps[k]:.1f}s" for k in keys if k in stamps]
    done = next((v for k, v in stamps.items() if k.startswith("bundle written")), None)
    return ", ".join(shown + ([f"bundle @{done:.1f}s"] if done is not None else []))


def _write_split_rows(data: Path, target: str, out: Path) -> None:
    """kubeloop's train/validation/test row numbers of ``data``, for the plain script."""
    from kubeloop.data import load_dataset, split_rows

    dataset = load_dataset(data, target=target)
    stratify = dataset.schema.task == "classification"
    train, validation, test = split_rows(dataset.y, stratify=stratify)
    np.savez(out, train=train, validation=validation, test=test)


def bench_cli(data: Path, target: str, repeats: int) -> bool:
    """(a): ``kubeloop train`` vs the plain script, interleaved; True when the targets hold."""
    # The plain script gets the OpenMP spin count kubeloop's commands set (main() set it here).
    env = {**os.environ}
    spin = env.get("GOMP_SPINCOUNT", "-")
    print(
        f"(a) kubeloop train vs plain script on {data.name}, {repeats} interleaved runs each "
        f"(both GOMP_SPINCOUNT={spin})"
    )
    ours, plain, stages = [], [], []
    auc_ours = auc_plain = float("nan")
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-") as work:
        rows = Path(work) / "rows.npz"
        _write_split_rows(data, target, rows)
        for run in range(repeats):
            out = Path(work) / f"bundle-{run}"
            seconds, done = _timed(
                [str(KUBELOOP), "train", "--data", str(data), "--target", target, "--out", str(out)]
            )
            ours.append(seconds)
            stages.append(_stages(done.stderr))
            auc_ours = json.loads((out / "metrics.json").read_text())["roc_auc"]
            script = [sys.executable, str(HERE / "plain_train.py"), str(data), target, str(rows)]
            seconds, done = _timed(script, env)
            plain.append(seconds)
            auc_plain = json.loads(done.stdout)["test_roc_auc"]
            print(f"  run {run + 1}: kubeloop {ours[-1]:5.2f} s   plain {plain[-1]:5.2f} s")
    mine, base = statistics.median(ours), statistics.median(plain)
    ratio, gap = mine / base, abs(auc_ours - auc_plain)
    print(f"  kubeloop's own stamps (last run): {stages[-1]}")
    print(f"  median: kubeloop train {mine:.2f} s, plain script {base:.2f} s")
    print(f"  ratio kubeloop/plain: {ratio:.2f} (target <= {TRAIN_RATIO}, goal {TRAIN_GOAL})")
    print(
        f"  test ROC AUC kubeloop {auc_ours:.4f} vs plain {auc_plain:.4f}: diff {gap:.4f} "
        f"(target <= {AUC_TOLERANCE})"
    )
    return ratio <= TRAIN_RATIO and gap <= AUC_TOLERANCE


def bench_warm_ray(data: Path, target: str) -> None:
    """What Ray Train workers cost on the same matrices, cold and warm, vs in-process."""
    import ray

    from kubeloop.data import load_dataset, split_dataset
    from kubeloop.training import TrainConfig, ensure_ray, train_xgboost_distributed, xgboost_params
    from kubeloop.training.workflow import PARTS, prepare_inputs

    dataset = load_dataset(data, target=target)
    splits = split_dataset(dataset)
    _, matrices = prepare_inputs(dataset.schema, {p: getattr(splits, p) for p in PARTS})
    train, validation = matrices["train"], matrices["validation"]
    params = xgboost_params("classification", 2, train[1], TrainConfig())

    def fit(workers: int | str) -> float:
        started = time.perf_counter()
        train_xgboost_distributed(
            train, validation, params=params, num_boost_round=2000, early_stopping_rounds=50,
            workers=workers,
        )  # fmt: skip
        return time.perf_counter() - started

    print(f"\n(a') XGBoost fit on the {data.name} matrices, in one process")
    in_process = fit("auto")
    started = time.perf_counter()
    ensure_ray(num_cpus=WORKERS)
    init = time.perf_counter() - started
    first, warm = fit(WORKERS), fit(WORKERS)
    ray.shutdown()
    print(f"  in-process (workers=auto, Ray Train local mode): {in_process:6.2f} s")
    print(f"  ray.init (local Ray):                            {init:6.2f} s")
    print(f"  2 Ray Train workers, first fit on the fresh Ray: {first:6.2f} s")
    print(f"  2 Ray Train workers, fit on the warm Ray:        {warm:6.2f} s")


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


def big_params(seed: int) -> dict[str, object]:
    """The XGBoost parameters both sides of (b) use."""
    return {
        "objective": "binary:logistic",
        "eval_metric": ["auc"],
        "tree_method": "hist",
        "max_depth": 6,
        "learning_rate": 0.1,
        "seed": seed,
    }


def bench_big(rows: int, features: int, rounds: int, seed: int) -> bool:
    """(b): Ray Train (2 workers, warm local Ray) vs one process; True when the targets hold."""
    import xgboost
    from sklearn.metrics import roc_auc_score

    from kubeloop.training import ensure_ray, train_xgboost_distributed

    X_all, y_all = make_data(rows + max(rows // 5, 1000), features, seed)
    X, y, X_test, y_test = X_all[:rows], y_all[:rows], X_all[rows:], y_all[rows:]
    print(
        f"(b) {rows:,} rows x {features} features, {rounds} rounds, no early stopping: "
        f"{WORKERS} Ray Train workers vs one process with nthread={WORKERS} "
        f"(GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '-')})"
    )

    def ray_fit() -> tuple[float, dict[str, float], xgboost.Booster]:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        booster = train_xgboost_distributed(
            (X, y), (X_test[:0], y_test[:0]), params=big_params(seed), num_boost_round=rounds,
            early_stopping_rounds=None, workers=WORKERS, timings=timings,
        )  # fmt: skip
        return time.perf_counter() - started, timings, booster

    started = time.perf_counter()
    ensure_ray(num_cpus=WORKERS)
    init = time.perf_counter() - started
    first, _, _ = ray_fit()  # the cluster is up and has run a job: what KubeRay gives a job
    warm, timings, ray_booster = ray_fit()
    ray_fixed = timings["training_started"] - timings["fit_called"]
    ray_round = (timings["training_ended"] - timings["training_started"]) / rounds

    started = time.perf_counter()
    dtrain = xgboost.QuantileDMatrix(X, label=y, nthread=WORKERS)
    trained_from = time.perf_counter()
    single_booster = xgboost.train(
        {**big_params(seed), "nthread": WORKERS}, dtrain, num_boost_round=rounds
    )
    single = time.perf_counter() - started
    single_fixed, single_round = (
        trained_from - started,
        (single - (trained_from - started)) / rounds,
    )

    import ray

    ray.shutdown()
    ray_auc = float(roc_auc_score(y_test, ray_booster.inplace_predict(X_test)))
    single_auc = float(roc_auc_score(y_test, single_booster.inplace_predict(X_test)))
    ratio, gap = warm / single, abs(ray_auc - single_auc)
    print(f"  {'':34s} {'total':>8s} {'fixed':>8s} {'per round':>10s}")
    print(
        f"  {'Ray Train, 2 workers, warm Ray':34s} {warm:7.1f}s {ray_fixed:7.2f}s "
        f"{1000 * ray_round:8.2f}ms"
    )
    print(
        f"  {'one process, nthread=2':34s} {single:7.1f}s {single_fixed:7.2f}s "
        f"{1000 * single_round:8.2f}ms"
    )
    print(
        f"  cold: ray.init {init:.1f} s + first fit on the fresh Ray {first:.1f} s = "
        f"{init + first:.1f} s ({(init + first) / single:.2f}x the single process)"
    )
    print(f"  per-round ratio ray/single: {ray_round / single_round:.3f}")
    print(f"  ratio ray (warm)/single: {ratio:.3f} (target <= {BIG_RATIO})")
    print(
        f"  test AUC ray {ray_auc:.5f} single {single_auc:.5f} diff {gap:.5f} "
        f"(target <= {AUC_TOLERANCE})"
    )
    return ratio <= BIG_RATIO and gap <= AUC_TOLERANCE


def main(argv: list[str] | None = None) -> int:
    """Run (a) (default) or (b) (``--big``) and print the comparison; 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=TELCO, help="(a): the CSV to train on")
    parser.add_argument("--target", default="Churn", help="(a): its target column")
    parser.add_argument("--repeats", type=int, default=3, help="(a): runs of each side")
    parser.add_argument("--no-warm", action="store_true", help="(a): skip the warm-Ray fits")
    parser.add_argument("--big", action="store_true", help="run (b) instead of (a)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from kubeloop.training.engine import short_openmp_spin

    short_openmp_spin()  # as kubeloop's commands do; before XGBoost loads, for both sides
    if args.big:
        ok = bench_big(args.rows, args.features, args.rounds, args.seed)
    else:
        ok = bench_cli(args.data, args.target, args.repeats)
        if not args.no_warm:
            bench_warm_ray(args.data, args.target)
    print("PASS" if ok else "MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
