"""``kubeloop predict``: score a CSV/Parquet table (local or s3://) with a bundle, in chunks."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kubeloop.console import Progress

__all__ = ["ProgressBar", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``predict`` sub-command."""
    parser = subparsers.add_parser(
        "predict",
        help="batch-score a CSV/Parquet table (local or s3://) with a bundle or a champion",
        description=(
            "Score every row of a table with a model bundle, chunk by chunk (bounded memory), "
            "with the model server's validation: a row the server would refuse goes to a "
            "rejects file with the server's message and keeps an empty output row. Output: "
            "label and probability (classification) or prediction (regression), one row per "
            "input row, in order. Ends with the batch's drift against the bundle's reference."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, help="score with this bundle directory")
    source.add_argument("--registry", help="registry root (path or URL): score with a champion")
    parser.add_argument("--model", help="model name inside the registry (with --registry)")
    parser.add_argument("--data", required=True, help="input .csv/.parquet (path or URL)")
    parser.add_argument("--out", required=True, help="output .csv/.parquet (path or URL)")
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="COL",
        help="copy this input column into the output (repeatable), e.g. an id",
    )
    parser.add_argument(
        "--chunk-rows", type=int, default=100_000, help="rows per chunk (default 100000)"
    )
    parser.add_argument("--rejects", default=None, help="rejects file (default <out>.rejects.csv)")
    parser.add_argument("--drift-report", default=None, help="also write the drift report (JSON)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)


class ProgressBar:
    """A one-line progress bar on standard error (one line per tenth when not a terminal)."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._tty = sys.stderr.isatty()
        self._shown = -1

    def __call__(self, done: int, total: int | None) -> None:
        rate = done / max(time.monotonic() - self._start, 1e-9)
        if total:
            share = min(done / total, 1.0)
            filled = int(share * 30)
            line = (
                f"[{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} {done:,}/{total:,} rows "
                f"{rate:,.0f} rows/s"
            )
            step = int(share * 10)
        else:
            line, step = f"{done:,} rows {rate:,.0f} rows/s", done
        if self._tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif step != self._shown:
            print(line, file=sys.stderr, flush=True)
        self._shown = step

    def close(self) -> None:
        """End the bar's line."""
        if self._tty:
            print(file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    import json

    from kubeloop.batch import BatchOptions, score_table

    options = BatchOptions(
        data=args.data,
        out=args.out,
        model_dir=args.model_dir,
        registry=args.registry,
        model=args.model,
        keep=tuple(args.keep),
        chunk_rows=args.chunk_rows,
        rejects=args.rejects,
    )
    bar = None if args.no_progress else ProgressBar()
    try:
        result = score_table(options, progress=Progress(prefix="predict"), bar=bar)
    finally:
        if bar is not None:
            bar.close()
    rate = result.rows / max(result.seconds, 1e-9)
    print(
        f"scored {result.scored:,} of {result.rows:,} rows with version {result.version} "
        f"in {result.seconds:.1f}s ({rate:,.0f} rows/s) -> {result.out}"
    )
    if result.rejected:
        print(f"rejected {result.rejected:,} rows (reasons in {result.rejects})")
    else:
        print("rejected 0 rows")
    if result.drift is not None:
        drift = result.drift
        print(
            f"drift vs the bundle's reference: {len(drift.drifted_features)} of "
            f"{len(drift.judged)} features drifted (share {drift.drift_share:.2f})"
        )
        for item in sorted(drift.judged, key=lambda f: -f.psi)[:10]:
            mark = "  DRIFTED" if item.drifted else ""
            print(f"  {item.feature:30s} PSI {item.psi:.4f}{mark}")
        if drift.prediction is not None and drift.prediction.rows:
            print(f"  {'(prediction)':30s} PSI {drift.prediction.psi:.4f}")
        if args.drift_report:
            import fsspec

            with fsspec.open(args.drift_report, "w") as handle:
                handle.write(json.dumps(drift.to_dict(), indent=1) + "\n")
    return 0
