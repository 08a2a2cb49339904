"""What calendar features of a date column are worth: test ROC AUC with and without the date.

Each table is trained twice per seed with ``kubeloop train`` as a fresh process: as it is (the
date becomes calendar features) and with the date column removed (what kubeloop could use of it
before: a date as text was dropped as an id, or one-hot encoded as unrelated categories when
dates repeat). Printed per table: the test ROC AUC of each run, the mean over seeds and the gain.

- ``generated``: ``kubeloop.data.synth.generate_seasonal`` (``--rows``, default 10,000) -- a
  generated table whose label follows the seasons and the day of the week by construction.
- ``seattle`` (with ``--seattle CSV``): the public Seattle daily weather table 2012-2015
  (``seattle-weather.csv`` of the PyPI package ``vega_datasets`` 0.9.0: ``pip download
  vega_datasets==0.9.0 --no-deps`` and unzip ``vega_datasets/_data/seattle-weather.csv``; 1,461
  days, dates as ``YYYY/MM/DD`` text). Target ``wet``: precipitation above 0; features the date
  and the wind speed only (temperatures would carry the season too, precipitation and the
  weather label are the answer).

Usage::

    .venv/bin/python bench/calendar_gain.py [--rows 10000] [--seeds 3] [--seattle PATH]

Nothing generated is kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

KUBELOOP = Path(sys.executable).with_name("kubeloop")


def _auc(data: Path, target: str, out: Path, seed: int) -> float:
    done = subprocess.run(
        [str(KUBELOOP), "train", "--data", str(data), "--target", target, "--out", str(out),
         "--seed", str(seed)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"training {data.name} failed:\n{done.stderr[-3000:]}")
    return float(json.loads((out / "metrics.json").read_text())["roc_auc"])


def _compare(name: str, frame: pd.DataFrame, target: str, seeds: int, directory: Path) -> None:
    with_date, without_date = directory / f"{name}.csv", directory / f"{name}-no-date.csv"
    frame.to_csv(with_date, index=False)
    frame.drop(columns=["date"]).to_csv(without_date, index=False)
    scores: dict[str, list[float]] = {"with date": [], "without date": []}
    for seed in range(seeds):
        for label, data in (("with date", with_date), ("without date", without_date)):
            scores[label].append(_auc(data, target, directory / f"{name}-{label}-{seed}", seed))
        print(
            f"  {name} seed {seed}: test ROC AUC with the date {scores['with date'][-1]:.4f}, "
            f"without {scores['without date'][-1]:.4f}",
            flush=True,
        )
    mean_with = statistics.mean(scores["with date"])
    mean_without = statistics.mean(scores["without date"])
    print(
        f"{name} ({len(frame):,} rows, {seeds} seeds): mean test ROC AUC with calendar features "
        f"{mean_with:.4f}, without the date {mean_without:.4f}; "
        f"gain {mean_with - mean_without:+.4f}"
    )


def main() -> int:
    from kubeloop.data.synth import SEASONAL_TARGET, generate_seasonal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seattle", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        generated = generate_seasonal(args.rows, seed=0)
        _compare("generated", generated, SEASONAL_TARGET, args.seeds, directory)
        if args.seattle is not None:
            weather = pd.read_csv(args.seattle)
            frame = pd.DataFrame(
                {
                    "date": weather["date"],
                    "wind": weather["wind"],
                    "wet": (weather["precipitation"] > 0).map({True: "yes", False: "no"}),
                }
            )
            _compare("seattle", frame, "wet", args.seeds, directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
