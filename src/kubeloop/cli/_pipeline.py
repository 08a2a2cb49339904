"""``kubeloop pipeline``: run the training pipeline locally or on KFP, schedule it, compile it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeloop.console import Progress
from kubeloop.names import model_name_arg
from kubeloop.training.engine import AUTO, WORKERS_HELP, short_openmp_spin, workers_arg

if TYPE_CHECKING:
    from kubeloop.pipelines.launch.request import RunRequest

__all__ = ["register"]


def _run_options(parser: argparse.ArgumentParser, *, batch: bool = False) -> None:
    parser.add_argument(
        "--data", required=True, help="CSV/Parquet path or URL (s3:// on a cluster)"
    )
    parser.add_argument(
        "--target", required=not batch, help="the column to predict (training runs)"
    )
    parser.add_argument(
        "--model", default="model", type=model_name_arg,
        help="model name / registry key (default model)",
    )  # fmt: skip
    parser.add_argument(
        "--task", choices=("auto", "classification", "regression"), default="auto",
        help="learning task (default: inferred from the target)",
    )  # fmt: skip
    parser.add_argument(
        "--normalize-labels", action="store_true",
        help="merge target labels that differ only in case or surrounding spaces",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=workers_arg, default=AUTO, metavar="auto|N", help=WORKERS_HELP
    )
    parser.add_argument(
        "--gate-margin", type=float, default=0.0,
        help="how much better (validation score) the challenger must be (default 0)",
    )  # fmt: skip
    parser.add_argument("--num-boost-round", type=int, default=2000, help="max XGBoost rounds")
    parser.add_argument(
        "--candidates", default="xgboost,linear,random_forest",
        help="comma-separated candidates to train (default all three)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="split and training seed")
    parser.add_argument(
        "--tune-budget", type=float, default=0.0, metavar="SECONDS",
        help="XGBoost hyperparameter search seconds in the train step (default 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--registry", default=None,
        help="registry root (default $KUBELOOP_REGISTRY, else local $KUBELOOP_HOME/registry, "
        "cluster s3://kubeloop/registry)",
    )  # fmt: skip
    parser.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI")
    parser.add_argument("--experiment", default="kubeloop", help="KFP experiment (cluster)")
    parser.add_argument("--inference-service", default="", help="InferenceService to patch")
    parser.add_argument("--namespace", default="", help="namespace of the InferenceService")
    parser.add_argument(
        "--rollout", choices=("direct", "canary", "shadow"), default="direct",
        help="how a challenger that passes the gate goes live: at once (direct, the default), "
        "or as the registry's candidate beside the champion, answering --canary-percent of "
        "requests (canary) or scoring a copy of each (shadow), until the monitor promotes or "
        "rolls it back",
    )  # fmt: skip
    ray = parser.add_argument_group(
        "RayJob (cluster runs whose train step starts its own Ray cluster)"
    )
    for name, example, default in (
        ("head-cpu", "4", "1"),
        ("head-memory", "16Gi", "2Gi"),
        ("worker-cpu", "8", "1"),
        ("worker-memory", "32Gi", "2Gi"),
    ):
        ray.add_argument(
            f"--ray-{name}", default=None, metavar="QUANTITY",
            help=f"the RayJob's {name.replace('-', ' ')} (Kubernetes quantity, e.g. {example}; "
            f"default {default})",
        )  # fmt: skip
    ray.add_argument(
        "--ray-deadline", type=int, default=None, metavar="SECONDS", dest="ray_deadline_s",
        help="seconds the RayJob may run before Kubernetes ends it (default 3600)",
    )  # fmt: skip
    parser.add_argument(
        "--canary-percent", type=int, default=None,
        help="--rollout canary: the candidate's share of requests, 1-99 (default 10); "
        "--rollout direct with --inference-service: Knative canary traffic 0-100",
    )  # fmt: skip


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pipeline`` sub-command group (run, schedule, compile)."""
    parser = subparsers.add_parser(
        "pipeline",
        help="run the KFP training pipeline (locally or on a cluster), schedule or compile it",
        description="validate → features → train (Ray) → evaluate → gate → register → deploy",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    run = actions.add_parser("run", help="run once: --local (kfp.local) or --host URL (KFP API)")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="run here through kfp.local")
    where.add_argument("--host", help="KFP API endpoint, e.g. http://localhost:8888")
    run.add_argument(
        "--runner", choices=("subprocess", "docker"), default="subprocess",
        help="--local: run the steps as subprocesses (default) or in the component image "
        "through kfp.local.DockerRunner (Docker, or podman's socket via DOCKER_HOST)",
    )  # fmt: skip
    run.add_argument(
        "--image", default=None,
        help="--runner docker: the component image (default $KUBELOOP_IMAGE, else "
        "kubeloop/kubeloop-components:dev from `make images`)",
    )  # fmt: skip
    _run_options(run)
    run.set_defaults(func=_run)

    schedule = actions.add_parser("schedule", help="create a recurring run on a KFP cluster")
    schedule.add_argument("--host", required=True, help="KFP API endpoint")
    schedule.add_argument("--cron", default="0 2 * * *", help="cron schedule (default 02:00 daily)")
    schedule.add_argument("--name", default=None, help="recurring run name")
    schedule.add_argument(
        "--batch", action="store_true",
        help="schedule the batch-scoring pipeline (kubeloop predict with the champion) instead "
        "of training: needs --data and --out",
    )  # fmt: skip
    schedule.add_argument(
        "--out", default=None,
        help="--batch: output table URL; {time} becomes the run's scheduled time",
    )  # fmt: skip
    schedule.add_argument(
        "--keep", default="", help="--batch: input columns copied to the output (comma-separated)"
    )
    schedule.add_argument("--chunk-rows", type=int, default=100_000, help="--batch: rows per chunk")
    _run_options(schedule, batch=True)
    schedule.set_defaults(func=_schedule)

    compile_ = actions.add_parser("compile", help="write the pipeline and component YAML")
    compile_.add_argument("--out", type=Path, default=Path("pipelines/training_pipeline.yaml"))
    compile_.add_argument("--components-dir", type=Path, default=Path("components"))
    compile_.set_defaults(func=_compile)


def _request(args: argparse.Namespace, **where: Any) -> RunRequest:
    """The run the flags describe (``where``: ``host`` and, for ``run``, ``runner``/``image``)."""
    from kubeloop.pipelines.launch.request import RAY_RESOURCES, RunRequest

    return RunRequest(
        data=args.data,
        target=args.target,
        model_name=args.model,
        task=args.task,
        workers=args.workers,
        gate_margin=args.gate_margin,
        num_boost_round=args.num_boost_round,
        seed=args.seed,
        candidates=args.candidates,
        tune_budget=args.tune_budget,
        normalize_labels=args.normalize_labels,
        registry_root=args.registry,
        mlflow_uri=args.mlflow_uri,
        inference_service=args.inference_service,
        namespace=args.namespace,
        rollout=args.rollout,
        canary_percent=args.canary_percent,
        experiment=args.experiment,
        **{f"ray_{name}": getattr(args, f"ray_{name}") for name in RAY_RESOURCES},
        **where,
    )


def _run(args: argparse.Namespace) -> int:
    short_openmp_spin()  # before XGBoost or scikit-learn is imported
    request = _request(
        args, host=None if args.local else args.host, runner=args.runner, image=args.image
    )
    from kubeloop.pipelines.launch.runs import start_training_run

    outcome = start_training_run(request, progress=Progress(prefix="pipeline"))
    sys.stdout.flush()
    print(f"\n{outcome.summary()}")
    if outcome.where == "local":
        print(f"challenger: {outcome.challenger_version}  score {outcome.challenger_score}")
        print(f"previous champion: {outcome.previous_champion}  score {outcome.champion_score}")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from kubeloop.errors import ConfigError
    from kubeloop.pipelines.launch.cluster import schedule_runs
    from kubeloop.pipelines.launch.runs import cluster_registry, pipeline_arguments

    if args.batch:
        if not args.out:
            raise ConfigError("--batch needs --out URL (where each run writes its scores).")
        batch_arguments = {
            "data": args.data, "out": args.out, "model_name": args.model,
            "registry_root": args.registry or cluster_registry(), "keep": args.keep,
            "chunk_rows": args.chunk_rows,
        }  # fmt: skip
        recurring = schedule_runs(
            args.host, batch_arguments, cron=args.cron, name=args.name,
            experiment=args.experiment, batch=True,
        )  # fmt: skip
        print(f"recurring batch-scoring run {recurring} created on {args.host} ({args.cron})")
        return 0
    if not args.target:
        raise ConfigError("--target is required (the column to predict), unless --batch.")
    arguments = pipeline_arguments(_request(args, host=args.host))
    recurring = schedule_runs(
        args.host, arguments, cron=args.cron, name=args.name, experiment=args.experiment
    )
    print(f"recurring run {recurring} created on {args.host} ({args.cron})")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from kubeloop.pipelines.components.batch import compile_batch
    from kubeloop.pipelines.components.pipeline import compile_components, compile_pipeline

    print(f"pipeline: {compile_pipeline(args.out)}")
    for path in compile_components(args.components_dir):
        print(f"component: {path}")
    package, component = compile_batch(
        args.out.with_name("batch_scoring_pipeline.yaml"),
        args.components_dir / "batch_predict.yaml",
    )
    print(f"pipeline: {package}")
    print(f"component: {component}")
    return 0
