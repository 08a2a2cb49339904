"""The train step's core: train every candidate and save them, where Ray is.

The candidates directory holds ``candidates.json`` (name, kind, validation score, params) and
one sub-directory per candidate holding its model file (:func:`train`, :func:`load_candidates`).

Locally (and when ``RAY_ADDRESS`` names a KubeRay RayCluster) training happens in this process
through Ray Train: with ``workers="auto"`` and no ``RAY_ADDRESS``, in Ray Train's local mode
(no Ray start at all; :mod:`kubeloop.training.engine`). Inside Kubernetes without
``RAY_ADDRESS`` a RayJob trains on an ephemeral RayCluster: its entrypoint reads this step's
inputs from object storage and writes the candidates to a staging URL, which this step copies
into its output artifact.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeloop.console import ProgressFn, quiet
from kubeloop.pipelines.steps.data import load_matrices, load_schema, read_json, write_json
from kubeloop.pipelines.steps.rayjob import (
    RayJobSpec,
    RayResources,
    build_rayjob,
    download_dir,
    ray_mode,
    storage_url,
    submit_rayjob,
    upload_dir,
    wait_rayjob,
)
from kubeloop.training import CANDIDATE_NAMES, TrainConfig
from kubeloop.training.engine import AUTO, Workers, parse_workers

if TYPE_CHECKING:
    from kubeloop.training import Candidate

__all__ = [
    "RAYJOB_AUTO_WORKERS",
    "load_candidates",
    "main",
    "rayjob_spec",
    "train",
    "train_anywhere",
]

# Worker pods of the RayJob's cluster when the step's workers are "auto" (or 0).
RAYJOB_AUTO_WORKERS = 2

_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Object-storage settings the Ray pods need to read the inputs and write the candidates.
_PASSED_ENV = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "FSSPEC_S3_ENDPOINT_URL")


def _namespace() -> str:
    configured = os.environ.get("KUBELOOP_NAMESPACE")
    if configured:
        return configured
    if _NAMESPACE_FILE.is_file():
        return _NAMESPACE_FILE.read_text(encoding="utf-8").strip()
    return "default"


def _names(candidates: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in candidates.split(",") if name.strip())


def rayjob_spec(
    uris: tuple[str, str, str],
    *,
    workers: Workers | str,
    num_boost_round: int,
    seed: int,
    candidates: str = ",".join(CANDIDATE_NAMES),
    tune_budget: float = 0.0,
    resources: RayResources | None = None,
) -> RayJobSpec:
    """The RayJob for one train step (inputs: splits, features and output artifact URIs).

    ``workers="auto"`` (or ``0``) makes a RayCluster of :data:`RAYJOB_AUTO_WORKERS` worker pods
    and lets the entrypoint size Ray Train to it; ``resources`` sizes the pods and the deadline.
    """
    workers = parse_workers(workers)
    pods = RAYJOB_AUTO_WORKERS if workers in (AUTO, 0) else int(workers)
    from kubeloop.pipelines.image import component_image

    splits_uri, features_uri, out_uri = (storage_url(uri) for uri in uris)
    entrypoint = [
        "python", "-m", "kubeloop.pipelines.steps.train",
        "--splits", splits_uri, "--features", features_uri, "--out", f"{out_uri}.rayjob",
        "--workers", str(workers), "--num-boost-round", str(num_boost_round),
        "--seed", str(seed), "--candidates", ",".join(_names(candidates)),
        *(["--tune-budget", f"{tune_budget:g}"] if tune_budget > 0 else []),
    ]  # fmt: skip
    return RayJobSpec(
        name=f"kubeloop-train-{secrets.token_hex(4)}",
        namespace=_namespace(),
        image=component_image(),
        entrypoint=entrypoint,
        workers=pods,
        resources=resources or RayResources(),
        env={k: os.environ[k] for k in _PASSED_ENV if os.environ.get(k)},
        credentials_secret=os.environ.get("KUBELOOP_S3_CREDENTIALS_SECRET") or None,
        service_account=os.environ.get("KUBELOOP_RAY_SERVICE_ACCOUNT") or None,
    )


def train_anywhere(
    splits_dir: Path,
    features_dir: Path,
    *,
    out: Path,
    uris: tuple[str, str, str],
    workers: Workers | str,
    num_boost_round: int,
    seed: int,
    candidates: str = ",".join(CANDIDATE_NAMES),
    tune_budget: float = 0.0,
    resources: RayResources | None = None,
    progress: ProgressFn = quiet,
) -> str:
    """Train every candidate into ``out``; returns one summary line.

    Args:
        splits_dir, features_dir: Local inputs (KFP artifact paths).
        out: The candidates directory to fill.
        uris: Storage URIs of (splits, features, out) — used only by the RayJob path.
        workers, num_boost_round, seed: Training settings (``workers``: ``"auto"``, ``0`` or
            a Ray Train worker count, as a string too).
        candidates: Comma-separated candidate names (``xgboost,linear,random_forest``).
        tune_budget: Seconds of hyperparameter search for XGBoost (0: none); on a RayJob the
            trials run on its RayCluster.
        resources: The RayJob's pod sizes and deadline (used only by the RayJob path).
        progress: Called with one line per step.
    """
    workers = parse_workers(workers)
    # Where the step runs decides where Ray is; the engine line (printed when XGBoost trains)
    # says how XGBoost trains there. workers=0 always trains in this step's process.
    if ray_mode() == "rayjob" and workers != 0:
        progress("ray: a RayJob (Kubernetes, no RAY_ADDRESS)")
        spec = rayjob_spec(
            uris,
            workers=workers,
            num_boost_round=num_boost_round,
            seed=seed,
            candidates=candidates,
            tune_budget=tune_budget,
            resources=resources,
        )
        name = submit_rayjob(build_rayjob(spec))
        # The RayJob's own deadline ends it; the wait outlasts it to report how it ended.
        wait_rayjob(
            name, spec.namespace, timeout=spec.resources.deadline_s + 300, progress=progress
        )
        download_dir(f"{storage_url(uris[2])}.rayjob", Path(out))
        return f"trained on RayJob {spec.namespace}/{name}"
    config = TrainConfig(
        workers=workers,
        seed=seed,
        num_boost_round=num_boost_round,
        candidates=_names(candidates),
        tune_budget=tune_budget,
    )
    records = train(splits_dir, features_dir, out=Path(out), config=config, progress=progress)
    return ", ".join(f"{r['name']}={r['validation_score']:.4f}" for r in records)


def train(
    splits_dir: Path,
    features_dir: Path,
    *,
    out: Path,
    config: TrainConfig,
    progress: ProgressFn = quiet,
) -> list[dict[str, Any]]:
    """Train every candidate (XGBoost through Ray Train, baselines) and save them.

    Returns:
        One record per candidate: name, kind, validation score, params.
    """
    from kubeloop.training.workflow import class_count, train_all

    schema = load_schema(splits_dir)
    matrices = {name: load_matrices(features_dir, name) for name in ("train", "validation")}
    candidates = train_all(schema, matrices, config=config, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for candidate in candidates:
        candidate.model.save(_mkdir(out / candidate.name))
        records.append(
            {
                "name": candidate.name,
                "kind": candidate.model.kind,
                "validation_score": float(candidate.validation_score),
                "params": candidate.params,
                "selection": candidate.selection,
                "tuning": candidate.tuning,
                "trained_on": candidate.trained_on,
            }
        )
    write_json(
        out / "candidates.json",
        {"task": schema.task, "n_classes": class_count(schema), "candidates": records},
    )
    return records


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_candidates(candidates_dir: Path) -> list[Candidate]:
    """The candidates saved by :func:`train`, in training order."""
    from kubeloop.bundle.models import load_model
    from kubeloop.training import Candidate

    directory = Path(candidates_dir)
    index = read_json(directory / "candidates.json")
    return [
        Candidate(
            name=record["name"],
            model=load_model(
                directory / record["name"],
                kind=record["kind"],
                task=index["task"],
                n_classes=int(index["n_classes"]),
            ),
            validation_score=float(record["validation_score"]),
            params=dict(record["params"]),
            selection=dict(record.get("selection") or {}),
            tuning=record.get("tuning"),
            trained_on=dict(record.get("trained_on") or {}),
        )
        for record in index["candidates"]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """The RayJob's entrypoint: download the inputs, train every candidate on the cluster, upload.

    Run as ``python -m kubeloop.pipelines.steps.train`` on the RayJob's head (:func:`rayjob_spec`).
    """
    from kubeloop.console import Progress
    from kubeloop.training.engine import workers_arg

    parser = argparse.ArgumentParser(prog="python -m kubeloop.pipelines.steps.train")
    parser.add_argument("--splits", required=True)
    parser.add_argument("--features", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=workers_arg, default=AUTO)
    parser.add_argument("--num-boost-round", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", default="xgboost,linear,random_forest")
    parser.add_argument("--tune-budget", type=float, default=0.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kubeloop-rayjob-"))
    try:
        config = TrainConfig(
            workers=args.workers,
            seed=args.seed,
            num_boost_round=args.num_boost_round,
            ray_address="auto",
            candidates=tuple(args.candidates.split(",")),
            tune_budget=args.tune_budget,
        )
        # Only what training reads, streamed to disk: the schema, the train and validation
        # matrices (not the raw splits, not the test part).
        features = [f"{m}_{part}.npy" for part in ("train", "validation") for m in ("x", "y")]
        train(
            download_dir(args.splits, work / "splits", only=["schema.json"]),
            download_dir(args.features, work / "features", only=features),
            out=work / "candidates",
            config=config,
            progress=Progress(prefix="rayjob"),
        )
        upload_dir(work / "candidates", args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
