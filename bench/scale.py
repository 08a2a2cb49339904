"""Big tables: ``kubeloop train`` vs a plain one-process script, wall time and peak memory.

For each size (default 2M and 5M rows) the generated churn table
(:func:`kubeloop.data.synth.generate_churn`, 16 columns, unique ids; written in 1M-row chunks
to a temporary directory and deleted afterwards: nothing generated is kept) is trained on by

- ``kubeloop train`` (the whole command: load, features, XGBoost, the two baselines, the choice,
  the bundle), and
- ``bench/plain_scale.py``: pandas ``read_csv``, pandas categoricals, XGBoost
  ``QuantileDMatrix`` with native categorical support, the same split rows (kubeloop's), the
  same parameters and early stopping,

as fresh processes, one after the other, their order alternating (``--repeats`` rounds). Each
side's peak resident memory is the process's own maximum RSS (``wait4``). Printed per size:
wall time, peak RSS and peak bytes per row of each side, the ratios, the test ROC AUC of both
(kubeloop's chosen model and its XGBoost candidate) and kubeloop's own stage times. Then
``--big`` rows (default 20M) are trained on by ``kubeloop train`` alone (the plain script's
peak at that size is estimated from its bytes per row at the largest size measured).

Targets at the largest size compared (5M by default): kubeloop's wall time <= 1.0x the plain
script's, its peak RSS <= 1.2x, test AUC within 0.002; and the big run trains. A watchdog stops
any process whose RSS passes ``--max-rss-gb`` (default 14; the machine is shared).

Usage::

    .venv/bin/python bench/scale.py [--sizes 2000000,5000000] [--big 20000000] [--repeats 1]
    .venv/bin/python bench/scale.py --sizes 200000 --big 0      # a quick check
    .venv/bin/python bench/scale.py --sizes "" --big 20000000 --big-data CSV  # the big run alone

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TARGET = "churned"
CHUNK = 1_000_000
WALL_RATIO, MEMORY_RATIO, AUC_TOLERANCE = 1.0, 1.2, 0.002


@dataclass
class Run:
    """One process's wall time, peak RSS (bytes) and output."""

    wall: float
    peak: int
    stdout: str
    stderr: str
    killed: bool = False


@dataclass
class Side:
    runs: list[Run] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def peak(self) -> float:
        return statistics.median(r.peak for r in self.runs)


def generate(path: Path, rows: int) -> np.ndarray:
    """Write the churn table of ``rows`` rows (unique ids) to ``path``; return the class codes."""
    from kubeloop.data.synth import generate_churn

    labels = []
    with path.open("w") as out:
        for number, start in enumerate(range(0, rows, CHUNK)):
            count = min(CHUNK, rows - start)
            frame = generate_churn(count, seed=number)
            ids = np.arange(start + 1, start + count + 1).astype(str)
            frame["customer_id"] = np.char.add("C", np.char.zfill(ids, 9)).astype(object)
            frame.to_csv(out, index=False, header=number == 0)
            labels.append((frame[TARGET] == "Yes").to_numpy(np.int64))  # classes: No, Yes
    return np.concatenate(labels)


def write_rows(labels: np.ndarray, out: Path) -> None:
    """kubeloop's train/validation/test row numbers (``split_rows``) for the plain script."""
    from kubeloop.data import split_rows

    train, validation, test = split_rows(labels, stratify=True, seed=0)
    np.savez(out, train=train, validation=validation, test=test)


def measure(command: list[str], limit: int) -> Run:
    """Run ``command``; its wall time and peak RSS; stop it when its RSS passes ``limit``."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        killed = threading.Event()

        def watch() -> None:
            while process.poll() is None:
                try:
                    status = Path(f"/proc/{process.pid}/status").read_text()
                    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
                except (OSError, AttributeError):
                    rss = 0
                if rss > limit:
                    killed.set()
                    process.kill()
                time.sleep(0.2)

        threading.Thread(target=watch, daemon=True).start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        run = Run(wall, usage.ru_maxrss * 1024, out.read(), err.read(), killed.is_set())
    if process.returncode and not run.killed:
        raise SystemExit(f"{command[:4]} failed ({process.returncode}):\n{run.stderr[-3000:]}")
    return run


def kubeloop_command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "kubeloop", "train", "--data", str(data),
            "--target", TARGET, "--out", str(out)]  # fmt: skip


def stages(stderr: str) -> str:
    """kubeloop's own progress stamps: when each stage ended."""
    marks = {
        "loaded": r"classification: \d+ features",
        "features": r"features prepared",
        "xgboost": r"xgboost: validation score",
        "linear": r"linear: validation score",
        "forest": r"random_forest: validation score",
        "chosen": r"chosen: ",
        "bundle": r"bundle written",
    }
    found = []
    for name, pattern in marks.items():
        match = re.search(r"\[\s*([\d.]+)s\] train " + pattern, stderr)
        if match:
            found.append(f"{name} @{float(match.group(1)):.0f}s")
    return ", ".join(found)


def gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


def compare(rows: int, work: Path, repeats: int, limit: int) -> dict[str, float]:
    data, split = work / f"churn-{rows}.csv", work / f"rows-{rows}.npz"
    started = time.perf_counter()
    write_rows(generate(data, rows), split)
    size = data.stat().st_size
    print(f"\n{rows:,} rows ({size / 1e9:.2f} GB CSV, generated in "
          f"{time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    ours, plain = Side(), Side()
    plain_command = [sys.executable, str(HERE / "plain_scale.py"), str(data), TARGET, str(split)]
    auc_ours = auc_xgb = auc_plain = float("nan")
    for repeat in range(repeats):
        order = ("kubeloop", "plain") if repeat % 2 == 0 else ("plain", "kubeloop")
        for side in order:
            if side == "kubeloop":
                bundle = work / f"bundle-{rows}-{repeat}"
                run = measure(kubeloop_command(data, bundle), limit)
                ours.runs.append(run)
                if run.killed:
                    break
                metrics = json.loads((bundle / "metrics.json").read_text())
                auc_ours = metrics["roc_auc"]
                auc_xgb = metrics["candidates"]["xgboost"]["roc_auc"]
                chosen = metrics["model"]
                print(f"  kubeloop  {run.wall:7.1f} s  peak {gb(run.peak)}  "
                      f"({stages(run.stderr)})", flush=True)  # fmt: skip
            else:
                run = measure(plain_command, limit)
                plain.runs.append(run)
                if run.killed:
                    break
                auc_plain = json.loads(run.stdout)["test_roc_auc"]
                print(f"  plain     {run.wall:7.1f} s  peak {gb(run.peak)}", flush=True)
    if any(r.killed for r in ours.runs + plain.runs):
        print(f"  a process passed {gb(limit)} of RSS and was stopped")
        return {"rows": rows, "killed": 1.0}
    wall_ratio, memory_ratio = ours.wall / plain.wall, ours.peak / plain.peak
    print(f"  {'':10s} {'wall':>9s} {'peak RSS':>10s} {'bytes/row':>10s} {'test AUC':>9s}")
    print(
        f"  {'kubeloop':10s} {ours.wall:8.1f}s {gb(ours.peak):>10s} "
        f"{ours.peak / rows:10.0f} {auc_ours:9.4f}  (chosen: {chosen}; xgboost {auc_xgb:.4f})"
    )
    print(f"  {'plain':10s} {plain.wall:8.1f}s {gb(plain.peak):>10s} "
          f"{plain.peak / rows:10.0f} {auc_plain:9.4f}")  # fmt: skip
    print(f"  ratio kubeloop/plain: wall {wall_ratio:.2f}, peak memory {memory_ratio:.2f}; "
          f"AUC difference {auc_ours - auc_plain:+.4f}", flush=True)  # fmt: skip
    data.unlink()
    return {
        "rows": rows,
        "wall_ratio": wall_ratio,
        "memory_ratio": memory_ratio,
        "auc_gap": abs(auc_ours - auc_plain),
        "plain_bytes_per_row": plain.peak / rows,
    }


def big(
    rows: int, work: Path, limit: int, plain_bytes_per_row: float | None, given: Path | None
) -> bool:
    data = given or work / f"churn-{rows}.csv"
    started = time.perf_counter()
    if given is None:
        generate(data, rows)
    made = "given" if given else f"generated in {time.perf_counter() - started:.0f} s"
    print(f"\n{rows:,} rows ({data.stat().st_size / 1e9:.2f} GB CSV, {made}): "
          "kubeloop train alone", flush=True)  # fmt: skip
    bundle = work / f"bundle-{rows}"
    run = measure(kubeloop_command(data, bundle), limit)
    if given is None:
        data.unlink()
    if run.killed:
        print(f"  stopped: RSS passed {gb(limit)} ({stages(run.stderr)})")
        return False
    metrics = json.loads((bundle / "metrics.json").read_text())
    print(f"  kubeloop  {run.wall:7.1f} s  peak {gb(run.peak)} ({run.peak / rows:.0f} bytes/row), "
          f"test AUC {metrics['roc_auc']:.4f} ({metrics['model']})")  # fmt: skip
    print(f"  stages: {stages(run.stderr)}")
    if plain_bytes_per_row:
        print(f"  the plain script would need about {gb(plain_bytes_per_row * rows)} "
              "(its bytes per row at the largest size compared)")  # fmt: skip
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000000,5000000", help="rows, comma-separated")
    parser.add_argument("--big", type=int, default=20_000_000, help="kubeloop alone; 0: skip")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of both sides per size")
    parser.add_argument("--max-rss-gb", type=float, default=14.0)
    parser.add_argument("--work", type=Path, default=None, help="temporary directory's parent")
    parser.add_argument(
        "--big-data",
        type=Path,
        default=None,
        help="the --big table, already generated (a CSV this script wrote): not generated again",
    )
    args = parser.parse_args(argv)
    from kubeloop.training.engine import short_openmp_spin

    short_openmp_spin()  # as kubeloop's commands do, for both sides
    limit = int(args.max_rss_gb * 1e9)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    ok = True
    with tempfile.TemporaryDirectory(prefix="kubeloop-scale-", dir=args.work) as work:
        results = [compare(rows, Path(work), args.repeats, limit) for rows in sizes]
        last = results[-1] if results else None
        if last is not None:
            if last.get("killed"):
                ok = False
            else:
                hold = (last["wall_ratio"] <= WALL_RATIO, last["memory_ratio"] <= MEMORY_RATIO,
                        last["auc_gap"] <= AUC_TOLERANCE)  # fmt: skip
                print(f"\nat {last['rows']:,} rows: wall ratio {last['wall_ratio']:.2f} "
                      f"(target <= {WALL_RATIO}), memory ratio {last['memory_ratio']:.2f} "
                      f"(target <= {MEMORY_RATIO}), AUC gap {last['auc_gap']:.4f} "
                      f"(target <= {AUC_TOLERANCE})")  # fmt: skip
                ok = all(hold)
        if args.big:
            per_row = None if last is None else last.get("plain_bytes_per_row")
            ok = big(args.big, Path(work), limit, per_row, args.big_data) and ok
    print("PASS" if ok else "MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
