"""Benchmark (d) of issue 12: how long ``kubeloop demo`` takes to close the loop.

Runs ``kubeloop demo --report FILE`` ``--runs`` times and reads the loop's own time from the
report (``seconds``: from the demo's start to the new model served, the figure behind
``loop CLOSED in Ns``). ``--baseline-src DIR`` runs another source tree's demo (e.g. an older
commit's ``src``, with this interpreter's packages) in turns with this one, so background load
hits both alike, and prints the ratio of the medians. Target: the median <= 30 s.

Usage::

    .venv/bin/python bench/demo.py [--runs 3] [--baseline-src DIR]

Exit status 1 when the target is missed or a demo did not close the loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_S = 30.0
_MAIN = "import sys; from kubeloop.cli import main; sys.exit(main())"


def closed_in(src: str | None, report: Path) -> float:
    """One demo of ``src`` (``None``: this checkout); the seconds it took to close the loop."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    command = [sys.executable, "-c", _MAIN, "demo", "--report", str(report)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    result = json.loads(report.read_text()) if report.exists() else {}
    if done.returncode or not result.get("closed"):
        raise SystemExit(f"the demo of {src or 'this checkout'} did not close the loop:\n"
                         f"{done.stdout[-2000:]}{done.stderr[-2000:]}")  # fmt: skip
    return float(result["seconds"])


def main(argv: list[str] | None = None) -> int:
    """Print every run, the medians (and the ratio to the baseline); 1 when the target fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="demos per side (default 3)")
    parser.add_argument("--baseline-src", help="another checkout's src directory to compare")
    args = parser.parse_args(argv)
    sides = {"kubeloop": None} | ({"baseline": args.baseline_src} if args.baseline_src else {})
    times: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-demo-") as work:
        for run in range(args.runs):
            for name, src in sides.items():
                report = Path(work) / f"{name}-{run}.json"
                times[name].append(closed_in(src, report))
            shown = "   ".join(f"{name} {values[-1]:5.1f} s" for name, values in times.items())
            print(f"  run {run + 1}: {shown}", flush=True)
    median = statistics.median(times["kubeloop"])
    print(f"median loop-close time: kubeloop {median:.1f} s (target <= {TARGET_S:.0f} s)")
    if args.baseline_src:
        base = statistics.median(times["baseline"])
        print(f"baseline ({args.baseline_src}) {base:.1f} s; ratio kubeloop/baseline "
              f"{median / base:.2f}")  # fmt: skip
    return 0 if median <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
