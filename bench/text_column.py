"""A text column with many distinct values must not blow up training (issue 25).

The 20,000-row generated churn table (``kubeloop.data.synth.generate_churn``) is written twice:
as it is, and with an added ``order_no`` column of 12,000 distinct values (8,000 rows repeat an
order number, one cell is blank). ``kubeloop train`` runs on each as a fresh process, in turns,
``--repeats`` times; each process reports its own training time (``main(["train", ...])``, without
the interpreter's start) and its peak RSS (``ru_maxrss``, the process and any children). Printed:
both times, their ratio (target <= 2.0), both peak RSS figures and their ratio (target <= 1.2:
flat), the model input width of each bundle and what training said about the column (it is
60 % distinct: the id rule drops it). In the same turns, for the record: a ``zip`` column of
3,000 distinct values with Zipf-like frequencies (15 % distinct: the category cap keeps the 100
most frequent and folds the rest into ``__other__``), and once an ``email`` column distinct in
every row but one blank cell.

Usage::

    .venv/bin/python bench/text_column.py [--rows 20000] [--distinct 12000] [--repeats 2]

Exit status 1 when a target is missed. Nothing generated is kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TIME_RATIO, RSS_RATIO = 2.0, 1.2

_CHILD = """
import json, resource, sys, time
from kubeloop.cli import main
started = time.perf_counter()
code = main(["train", "--data", sys.argv[1], "--target", "churned", "--out", sys.argv[2]])
seconds = time.perf_counter() - started
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"code": code, "seconds": seconds, "peak_mb": peak / 1024}))
"""


def _tables(directory: Path, rows: int, distinct: int) -> dict[str, Path]:
    from kubeloop.data.synth import generate_churn

    frame = generate_churn(rows, seed=0)
    rng = np.random.default_rng(1)
    numbers = np.concatenate([np.arange(distinct), rng.integers(0, distinct, rows - distinct)])
    orders = np.array([f"ORD-{n:07d}" for n in rng.permutation(numbers)], dtype=object)
    orders[rng.integers(rows)] = ""
    emails = np.array([f"customer{n}@example.com" for n in range(rows)], dtype=object)
    emails[rng.integers(rows)] = ""
    weights = 1.0 / np.arange(1, 3_001)
    zips = np.minimum(np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(rows)), 2_999)
    columns = {
        "without": {},
        "order_no": {"order_no": orders},
        "zip": {"zip": np.array([f"Z{z:05d}" for z in zips], dtype=object)},
        "email": {"email": emails},
    }
    paths = {}
    for name, extra in columns.items():
        paths[name] = directory / f"churn_{name}.csv"
        frame.assign(**extra).to_csv(paths[name], index=False)
    return paths


def _train(data: Path, out: Path) -> dict[str, float | str | int]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"training {data.name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    spec = json.loads((out / "preprocessor.json").read_text())
    result["width"] = len(spec["output_columns"])
    result["notes"] = " | ".join(
        line.split(" train ", 1)[-1]
        for line in done.stderr.splitlines()
        if any(f"Column '{c}'" in line for c in ("order_no", "zip", "email"))
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--distinct", type=int, default=12_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float | str | int]]] = {"without": [], "order_no": [], "zip": []}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        paths = _tables(directory, args.rows, args.distinct)
        for repeat in range(args.repeats):
            for name in runs:
                result = _train(paths[name], directory / f"{name}-{repeat}")
                runs[name].append(result)
                print(
                    f"  {name:9s} run {repeat + 1}: train {result['seconds']:6.2f} s, "
                    f"peak RSS {result['peak_mb']:7.1f} MB, model inputs {result['width']}",
                    flush=True,
                )
        email = _train(paths["email"], directory / "email")
    base = statistics.median(float(r["seconds"]) for r in runs["without"])
    text = statistics.median(float(r["seconds"]) for r in runs["order_no"])
    base_rss = max(float(r["peak_mb"]) for r in runs["without"])
    text_rss = max(float(r["peak_mb"]) for r in runs["order_no"])
    time_ratio, rss_ratio = text / base, text_rss / base_rss
    print(f"\n{args.rows:,} rows of generated churn; order_no: {args.distinct:,} distinct values")
    print(f"what training did with it: {runs['order_no'][0]['notes']}")
    print(f"train time (median): without {base:.2f} s, with order_no {text:.2f} s")
    print(f"  ratio {time_ratio:.2f} (target <= {TIME_RATIO})")
    print(f"peak RSS (max): without {base_rss:.0f} MB, with order_no {text_rss:.0f} MB")
    print(f"  ratio {rss_ratio:.2f} (target <= {RSS_RATIO})")
    print(
        f"model inputs: without {runs['without'][0]['width']}, "
        f"with order_no {runs['order_no'][0]['width']}"
    )
    zip_time = statistics.median(float(r["seconds"]) for r in runs["zip"])
    zip_rss = max(float(r["peak_mb"]) for r in runs["zip"])
    print(
        f"zip (3,000 distinct, Zipf-like): train {zip_time:.2f} s (ratio {zip_time / base:.2f}), "
        f"peak RSS {zip_rss:.0f} MB (ratio {zip_rss / base_rss:.2f}), model inputs "
        f"{runs['zip'][0]['width']}; {runs['zip'][0]['notes']}"
    )
    print(
        f"email (distinct in every row, one blank): train {float(email['seconds']):.2f} s, "
        f"peak RSS {float(email['peak_mb']):.0f} MB, model inputs {email['width']}; "
        f"{email['notes']}"
    )
    return 0 if time_ratio <= TIME_RATIO and rss_ratio <= RSS_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
