"""``kubeloop train``: one data file in, one model bundle out."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kubeloop.console import Progress, format_table
from kubeloop.names import NAME_RULE, is_valid_name, model_name_arg, shown
from kubeloop.training.engine import AUTO, WORKERS_HELP, short_openmp_spin, workers_arg
from kubeloop.training.storage import ensure_absent, is_url, upload_dir

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train XGBoost (Ray Train) and baselines on a CSV/Parquet file; write a model bundle",
        description=(
            "Validate the data, prepare features, train XGBoost through Ray Train (in this "
            "process, or over Ray Train workers when a Ray cluster is configured) plus linear "
            "and random-forest baselines, evaluate every candidate on a held-out split and write "
            "the best one as a model bundle. Bad data writes nothing and exits 2."
        ),
    )
    parser.add_argument("--data", required=True, help="CSV or Parquet file (path or fsspec URL)")
    parser.add_argument("--target", required=True, help="the column to predict")
    parser.add_argument(
        "--task",
        choices=("auto", "classification", "regression"),
        default="auto",
        help="learning task (default: inferred from the target)",
    )
    parser.add_argument(
        "--workers", type=workers_arg, default=AUTO, metavar="auto|N", help=WORKERS_HELP
    )
    parser.add_argument(
        "--out",
        default=None,
        help="bundle directory to create, a path or a storage URL (s3://bucket/key: written "
        "locally, then uploaded) (default: out/<data name>-<UTC time>)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for split and training")
    parser.add_argument(
        "--name",
        default=None,
        type=model_name_arg,
        help=f"model name: {NAME_RULE} (default: the data file's stem)",
    )
    parser.add_argument(
        "--normalize-labels",
        action="store_true",
        help="merge target labels that differ only in case or surrounding spaces (e.g. 'yes', "
        "'Yes', ' YES') into their most frequent spelling instead of refusing the data",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (default: RAY_ADDRESS; none: no Ray cluster); a head's Jobs "
        "API, http://head:8265, submits this training as a Ray job (--data and --out URLs) and "
        "streams its log",
    )
    parser.add_argument(
        "--tune-budget",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="search XGBoost's hyperparameters with Ray Tune for this many seconds of wall clock "
        "(0 = off, the default); the tuned model is chosen only if it beats the default on "
        "validation",
    )
    parser.add_argument(
        "--tune-trials",
        type=int,
        default=0,
        metavar="N",
        help="stop the search after N trials (default 0: as many as the budget allows)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    short_openmp_spin()  # before XGBoost or scikit-learn is imported
    # Heavy imports (Ray, XGBoost, scikit-learn) only when the command actually runs.
    from kubeloop.errors import ConfigError
    from kubeloop.training.jobs import is_jobs_address

    stem = Path(str(args.data).rstrip("/")).stem or "model"
    if args.name is None and not is_valid_name(stem):
        raise ConfigError(
            f"the default model name, the data file's stem {shown(stem)}, is not allowed "
            f"({NAME_RULE}); pass --name NAME."
        )
    address = args.ray_address or os.environ.get("RAY_ADDRESS")
    if is_jobs_address(address):
        return _submit(args, address)
    out = args.out or Path("out") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    if not is_url(out):
        return _train(args, Path(out), stem)
    ensure_absent(str(out))
    staging = Path(tempfile.mkdtemp(prefix="kubeloop-train-"))
    try:
        _train(args, staging / stem, stem, shown_as=str(out))
        print(f"uploading the bundle to {out} ...", file=sys.stderr, flush=True)
        upload_dir(staging / stem, str(out))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return 0


def _submit(args: argparse.Namespace, address: str) -> int:
    """The same training as a Ray job on the cluster behind ``address`` (its Jobs API)."""
    from kubeloop.training.jobs import submit_training_job

    forwarded = [
        "--data", str(args.data), "--target", args.target, "--task", args.task,
        "--workers", str(args.workers), "--out", str(args.out or ""), "--seed", str(args.seed),
        "--tune-budget", f"{args.tune_budget:g}", "--tune-trials", str(args.tune_trials),
        *(["--name", args.name] if args.name else []),
        *(["--normalize-labels"] if args.normalize_labels else []),
    ]  # fmt: skip
    return submit_training_job(
        address,
        forwarded,
        data=str(args.data),
        out=str(args.out or ""),
        write=lambda chunk: print(chunk, end="", flush=True),
        say=lambda line: print(f"train: {line}", file=sys.stderr, flush=True),
    )


def _train(args: argparse.Namespace, out: Path, stem: str, *, shown_as: str | None = None) -> int:
    """Train here (Ray in-process, or this process as a cluster's driver) into ``out``."""
    from kubeloop.training import TrainConfig
    from kubeloop.training.workflow import SUMMARY_METRICS, candidate_rows, run_training

    config = TrainConfig(
        workers=args.workers,
        seed=args.seed,
        ray_address=args.ray_address,
        tune_budget=args.tune_budget,
        tune_max_trials=args.tune_trials,
    )
    result = run_training(
        args.data,
        target=args.target,
        out=out,
        task=args.task,
        config=config,
        name=args.name or stem,
        normalize_labels=args.normalize_labels,
        progress=Progress(prefix="train"),
    )
    columns = ("candidate", "trained on", *SUMMARY_METRICS[result.bundle.schema.task])
    print(f"\nTest metrics ({result.bundle.schema.task}; * = chosen by validation score):")
    print(format_table(candidate_rows(result), columns))
    tuning = result.bundle.metrics.get("tuning")
    if tuning:
        print(
            f"\nTuning: {tuning['trial_count']} trials ({tuning['stopped_early']} stopped early) "
            f"in {tuning['used_s']:.1f} s of a {tuning['budget_s']:g} s budget; best validation "
            f"score {_score(tuning['best_validation_score'])} vs default "
            f"{_score(tuning['default_validation_score'])}; best parameters "
            f"{tuning['best_params']} ({tuning['best_rounds']} rounds)"
        )
    print(f"\nbundle: {shown_as or result.bundle.path}  version: {result.bundle.version}")
    return 0


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.5f}"
