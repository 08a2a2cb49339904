"""Benchmark: ``kubeloop train --tune-budget`` against the untuned default, side by side.

For every dataset the real CLI (``python -m kubeloop train --tune-budget B``) runs in a fresh
process, timed from process start to exit (Ray start-up, data, every candidate, the search, the
bundle). A tuned run trains every untuned candidate exactly as a default run does (same split,
seed and code; training is deterministic), so the *default* figure is the test metric of the
candidate a default run would choose (best validation score among the untuned candidates), and
the *tuned* figure is the chosen model's. ``--fresh-default`` also runs a separate default
process per dataset and prints its figure and wall time (slower; the figures match).

Datasets: the shared California housing and Telco churn CSVs (``../shared/datasets``) and the
two generated tables the test suite trains on (``kubeloop.data.synth``; both are small enough for
the
cross-validated path).

Usage::

    .venv/bin/python bench/tune.py [--budget 120] [--small-budget 30] [--seed 0]

Targets: California test RMSE at least 2% below the default (goal <= 44,000) within 150 s of
wall clock; Telco test ROC AUC >= 0.855; no dataset worse than its default on the test split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kubeloop.data.synth import generate_churn, generate_regression

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
RMSE_GAIN = 0.02
RMSE_GOAL = 44_000.0
WALL_LIMIT_S = 150.0
AUC_GOAL = 0.855


@dataclass(frozen=True)
class Side:
    """One ``kubeloop train`` run."""

    metrics: dict
    wall_s: float


def train(data: Path, target: str, out: Path, *, seed: int, budget: float) -> Side:
    """Run the CLI once and read the bundle's metrics; its output is kept beside the bundle."""
    command = [sys.executable, "-m", "kubeloop", "train", "--data", str(data), "--target", target]
    command += ["--out", str(out), "--seed", str(seed), "--tune-budget", f"{budget:g}"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    (out.parent / f"{out.name}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Side(json.loads((out / "metrics.json").read_text(encoding="utf-8")), wall)


def _untuned_choice(metrics: dict, name: str) -> float:
    """Test ``name`` of the untuned candidate with the best validation score."""
    scores = {k: v for k, v in metrics["validation_scores"].items() if k != "xgboost_tuned"}
    return float(metrics["candidates"][max(scores, key=scores.__getitem__)][name])


def _metric(metrics: dict) -> tuple[str, float, bool]:
    """(name, value, higher is better) of the headline test metric."""
    if "rmse" in metrics:
        return "rmse", float(metrics["rmse"]), False
    return "roc_auc", float(metrics["roc_auc"]), True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="tune budget, shared data")
    parser.add_argument("--small-budget", type=float, default=30.0, help="... generated data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh-default", action="store_true", help="run default separately")
    parser.add_argument("--generated", action="store_true", help="add the generated tables")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubeloop-bench-tune-"))
    datasets = [
        ("california", SHARED / "california_housing.csv", "median_house_value", args.budget),
        ("telco", SHARED / "telco_customer_churn.csv", "Churn", args.budget),
    ]
    if args.generated:
        churn, regression = work / "synth_churn.csv", work / "synth_regression.csv"
        generate_churn(1500, seed=args.seed).to_csv(churn, index=False)
        generate_regression(442, seed=args.seed).to_csv(regression, index=False)
        datasets += [
            ("synth churn 1500", churn, "churned", args.small_budget),
            ("synth regression 442", regression, "target", args.small_budget),
        ]
    failures = []
    header = (
        f"{'dataset':<22} {'metric':<8} {'default':>11} {'tuned':>11} {'change':>8} "
        f"{'wall default':>12} {'wall tuned':>10} {'budget':>6} {'used':>6} {'trials':>6} chosen"
    )
    print(f"work directory (bundles, CLI logs): {work}")
    print(header, flush=True)
    for label, path, target, budget in datasets:
        if not path.is_file():
            print(f"{label:<22} skipped: {path} not found", flush=True)
            continue
        slug = label.replace(" ", "-")
        tuned = train(path, target, work / f"{slug}-tuned", seed=args.seed, budget=budget)
        name, after, higher = _metric(tuned.metrics)
        before = _untuned_choice(tuned.metrics, name)
        base_wall = "-"
        if args.fresh_default:
            base = train(path, target, work / f"{slug}-default", seed=args.seed, budget=0)
            _, fresh, _ = _metric(base.metrics)
            base_wall = f"{base.wall_s:.1f}s"
            print(f"{label}: separate default run {name} {fresh:.4f}", flush=True)
        change = (after - before) / abs(before)
        tuning = tuned.metrics.get("tuning", {})
        print(
            f"{label:<22} {name:<8} {before:>11.4f} {after:>11.4f} {change:>+8.2%} "
            f"{base_wall:>12} {tuned.wall_s:>9.1f}s {budget:>5g}s "
            f"{tuning.get('used_s', 0):>5.1f}s {tuning.get('trial_count', 0):>6} "
            f"{tuned.metrics['model']} ({tuned.metrics['selection']['method']})",
            flush=True,
        )
        if (after < before) if higher else (after > before):
            failures.append(f"{label}: tuned {name} {after:.4f} worse than default {before:.4f}")
        if label == "california":
            if after > before * (1 - RMSE_GAIN):
                failures.append(f"california: RMSE gain {-change:.2%} < {RMSE_GAIN:.0%}")
            if after > RMSE_GOAL:
                failures.append(f"california: RMSE {after:,.0f} > goal {RMSE_GOAL:,.0f}")
            if tuned.wall_s > WALL_LIMIT_S:
                failures.append(f"california: wall {tuned.wall_s:.0f} s > {WALL_LIMIT_S:.0f} s")
        if label == "telco" and after < AUC_GOAL:
            failures.append(f"telco: ROC AUC {after:.4f} < {AUC_GOAL}")
    print("\n" + ("PASS" if not failures else "FAIL:\n  " + "\n  ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
