"""Drift benchmark: kubeloop PSI vs Evidently ``DataDriftPreset`` on the same data, one run.

100,000 reference rows and 100,000 current rows x 30 features (20 numeric, 10 categorical);
8 features drift, 22 do not (one of them moves a little, well below the threshold). Both tools
judge every column with PSI and the threshold 0.2 (drift when PSI >= 0.2).

kubeloop is timed twice: the per-check cost (bin the current rows into the reference profile's
bins and score every feature -- what the monitor does each run; the profile is built once, at
training time) and the same including building the reference profile from the raw reference
rows. Evidently runs in its own virtualenv (its pins clash with the project's), in a
subprocess on the same parquet file, timing only its ``Report.run`` inside that process.

Binning differs by design and is reported, not hidden: kubeloop uses the reference profile's
10 quantile bins (plus a missing bin); Evidently's PSI uses Sturges equal-width bins over the
combined range for numerics with more than 20 distinct values, and the union of categories for
the rest. PSI values therefore differ; the verdicts agree whenever a column is clearly on one
side of the threshold.

Usage: ``make bench-drift`` (creates ``bench/.venv-evidently`` once), or
``python bench/drift.py --evidently-python PATH/TO/python``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kubeloop.bundle.profile import numeric_profile
from kubeloop.monitoring import DriftConfig, compare_profile, count_frame

THRESHOLD = 0.2
BINS = 10
_EVIDENTLY = r"""
import json, sys, time
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
ref_path, cur_path, numeric, categorical, threshold = sys.argv[1:6]
numeric, categorical, threshold = numeric.split(","), categorical.split(","), float(threshold)
reference, current = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
def run(ref, cur):
    report = Report([DataDriftPreset(method="psi", threshold=threshold)])
    return report.run(Dataset.from_pandas(cur, data_definition=definition),
                      Dataset.from_pandas(ref, data_definition=definition))
run(reference.head(2000), current.head(2000))  # warm-up: imports, registries
start = time.perf_counter()
snapshot = run(reference, current)
seconds = time.perf_counter() - start
psi = {m["config"]["column"]: float(m["value"]) for m in snapshot.dict()["metrics"]
       if m["config"].get("type", "").endswith("ValueDrift")}
print(json.dumps({"seconds": seconds, "psi": psi}))
"""


def make_data(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Reference and current frames; returns the names of the columns built to drift."""
    rng = np.random.default_rng(seed)
    reference: dict[str, np.ndarray] = {}
    current: dict[str, np.ndarray] = {}
    drifted: list[str] = []
    for i in range(20):
        name = f"num_{i:02d}"
        family = i % 4

        def draw(shift: float, scale: float, family: int = family) -> np.ndarray:
            if family == 0:
                return rng.normal(10 + shift, 2 * scale, rows)
            if family == 1:
                return rng.lognormal(1 + shift / 4, 0.5 * scale, rows)
            if family == 2:
                return rng.uniform(shift, 100 + shift, rows) * scale
            return rng.gamma(2.0, 3.0 * scale, rows) + shift

        reference[name] = draw(0.0, 1.0)
        if i < 5:  # clear drift: a shift of about one standard deviation, or a wider spread
            current[name] = draw(2.0 if family != 2 else 30.0, 1.0 if i % 2 else 1.6)
            drifted.append(name)
        elif i == 5:  # a small move that stays well under the threshold
            current[name] = draw(0.2, 1.0)
        else:
            current[name] = draw(0.0, 1.0)
    levels = np.array([f"level_{k}" for k in range(6)], dtype=object)
    base = np.array([0.3, 0.25, 0.2, 0.12, 0.08, 0.05])
    for i in range(10):
        name = f"cat_{i}"
        reference[name] = rng.choice(levels, rows, p=base)
        if i < 3:  # reversed frequencies, or a new category taking a fifth of the rows
            if i == 2:
                values = rng.choice(levels, rows, p=base).astype(object)
                values[rng.random(rows) < 0.2] = "level_new"
                current[name] = values
            else:
                current[name] = rng.choice(levels, rows, p=base[::-1])
            drifted.append(name)
        else:
            current[name] = rng.choice(levels, rows, p=base)
    return pd.DataFrame(reference), pd.DataFrame(current), drifted


def build_profile(reference: pd.DataFrame) -> dict[str, object]:
    """The reference profile as training writes it (same binning rule, no model needed)."""
    features: dict[str, object] = {}
    for name in reference.columns:
        column = reference[name]
        if column.dtype.kind == "f":
            features[name] = numeric_profile(column.to_numpy(), bins=BINS)
        else:
            counts = column.value_counts()
            features[name] = {
                "kind": "categorical",
                "categories": {str(k): int(counts[k]) for k in sorted(counts.index)},
                "missing": int(column.isna().sum()),
            }
    return {"format": 1, "rows": len(reference), "bins": BINS, "features": features}


def _best(function: object, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--evidently-python",
        default=str(Path(__file__).parent / ".venv-evidently" / "bin" / "python"),
        help="python of a virtualenv with evidently installed (make bench-drift creates it)",
    )
    args = parser.parse_args()
    if not Path(args.evidently_python).exists():
        print(f"no Evidently virtualenv at {args.evidently_python}; run `make bench-drift`.")
        return 2
    reference, current, built_to_drift = make_data(args.rows)
    numeric = [c for c in reference.columns if c.startswith("num_")]
    categorical = [c for c in reference.columns if c.startswith("cat_")]
    config = DriftConfig(psi_threshold=THRESHOLD)

    profile = build_profile(reference)
    compare_profile(profile, count_frame(profile, current.head(1000)), config=config)  # warm-up
    check_s, report = _best(
        lambda: compare_profile(profile, count_frame(profile, current), config=config)
    )
    full_s, _ = _best(
        lambda: compare_profile(
            (p := build_profile(reference)), count_frame(p, current), config=config
        )
    )
    ours = report.psi_by_feature()  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory() as tmp:
        ref_path, cur_path = Path(tmp, "reference.parquet"), Path(tmp, "current.parquet")
        reference.to_parquet(ref_path)
        current.to_parquet(cur_path)
        completed = subprocess.run(
            [
                args.evidently_python,
                "-c",
                _EVIDENTLY,
                str(ref_path),
                str(cur_path),
                ",".join(numeric),
                ",".join(categorical),
                str(THRESHOLD),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if completed.returncode != 0:
        print(completed.stderr[-3000:])
        return 1
    theirs = json.loads(completed.stdout.strip().splitlines()[-1])

    print(
        f"rows: {args.rows:,} reference + {args.rows:,} current; features: "
        f"{len(numeric)} numeric + {len(categorical)} categorical; PSI threshold {THRESHOLD}"
    )
    print(f"{'feature':10} {'built':>7} {'kubeloop':>9} {'evidently':>10}  verdicts")
    disagree = []
    for name in reference.columns:
        a, b = ours[name], theirs["psi"][name]
        same = (a >= THRESHOLD) == (b >= THRESHOLD)
        disagree += [] if same else [name]
        built = "drift" if name in built_to_drift else "-"
        verdict = ("drift" if a >= THRESHOLD else "ok") + ("" if same else "  <- DIFFERENT")
        print(f"{name:10} {built:>7} {a:9.4f} {b:10.4f}  {verdict}")
    print(f"kubeloop drift check (bin current + PSI/KS/chi2): {check_s * 1000:8.1f} ms")
    print(f"kubeloop incl. building the reference profile:    {full_s * 1000:8.1f} ms")
    print(f"Evidently DataDriftPreset(method='psi'):          {theirs['seconds'] * 1000:8.1f} ms")
    print(
        f"speed-up: {theirs['seconds'] / check_s:.1f}x per check, "
        f"{theirs['seconds'] / full_s:.1f}x including the profile"
    )
    print(
        f"verdicts: {len(reference.columns) - len(disagree)}/{len(reference.columns)} columns "
        f"agree{'' if not disagree else ' (differ: ' + ', '.join(disagree) + ')'}; "
        f"kubeloop drifted: {len(report.drifted_features)}, "  # type: ignore[attr-defined]
        f"built to drift: {len(built_to_drift)}"
    )
    return 0 if not disagree else 1


if __name__ == "__main__":
    sys.exit(main())
