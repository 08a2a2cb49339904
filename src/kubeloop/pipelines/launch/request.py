"""What one training-pipeline run needs, checked once where it is made.

A :class:`RunRequest` is built once by its caller (``kubeloop pipeline run``, the drift monitor,
the demo) and handed to :func:`kubeloop.pipelines.launch.runs.start_training_run`; the pipeline's
parameters come from it (:func:`~kubeloop.pipelines.launch.runs.pipeline_arguments`). A bad
value is refused when the request is made, before anything starts, in the one message form of
:mod:`kubeloop.errors`. This module imports nothing heavy: the monitor and the CLI build
requests without loading kfp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from kubeloop.errors import check_choice, check_range, parameter_error
from kubeloop.names import check_name
from kubeloop.training.engine import AUTO, Workers, parse_workers

__all__ = ["RAY_RESOURCES", "ROLLOUTS", "RUNNERS", "TASKS", "Rollout", "RunRequest", "Runner"]

TASKS = ("auto", "classification", "regression")
Rollout = Literal["direct", "canary", "shadow"]  # how a challenger that passed the gate goes live
ROLLOUTS: tuple[Rollout, ...] = get_args(Rollout)
Runner = Literal["subprocess", "docker"]  # how kfp.local runs the steps of a local run
RUNNERS: tuple[Runner, ...] = get_args(Runner)
_OWNER = "RunRequest"
# The RayJob's sizes and deadline: fields ``ray_<name>`` here, pipeline parameters alike.
RAY_RESOURCES = ("head_cpu", "head_memory", "worker_cpu", "worker_memory", "deadline_s")
DEFAULT_CANARY_PERCENT = 10


@dataclass(frozen=True, kw_only=True)
class RunRequest:
    """One run of the training pipeline: what it trains on, how, where it deploys, where it runs.

    Attributes:
        data: CSV/Parquet path or URL (``s3://`` on a cluster); a local run's relative path is
            made absolute (the steps may run from another directory).
        target: The column to predict.
        model_name: Registry key and bundle name (:data:`kubeloop.names.NAME_RULE`).
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        workers: How XGBoost trains (:mod:`kubeloop.training.engine`): ``"auto"``, ``0`` (in the
            train step's process) or a Ray Train worker count; ``"2"`` becomes ``2``.
        gate_margin: How much better (validation-score units) the challenger must be, >= 0.
        num_boost_round: Most XGBoost rounds (early stopping applies), >= 1.
        seed: Split and training seed, >= 0.
        candidates: Comma-separated candidates to train (``None``: the pipeline's default,
            all three).
        tune_budget: Seconds of XGBoost hyperparameter search in the train step, >= 0
            (0: none; the train step refuses a budget too short to search).
        normalize_labels: Merge target labels that differ only in case or surrounding spaces.
        registry_root: Local default ``$KUBELOOP_REGISTRY`` or ``<kubeloop home>/registry``;
            cluster default ``$KUBELOOP_REGISTRY`` or ``s3://kubeloop/registry``.
        mlflow_uri: Tracking store; local default sqlite under the kubeloop home, cluster
            default ``$MLFLOW_TRACKING_URI`` as seen by the steps.
        inference_service: InferenceService the deploy step patches when the gate promotes
            (``None``: no cluster deploy).
        namespace: Namespace of ``inference_service``.
        rollout: How a challenger that passed the gate goes live: ``"direct"`` (it becomes the
            champion at once), ``"canary"`` (the registry's *candidate*: the model server answers
            ``canary_percent`` % of requests with it) or ``"shadow"`` (the candidate scores a
            copy of every request off the response path); the monitor then promotes or rolls
            it back (docs/monitoring.md, "Staged rollout").
        canary_percent: With ``rollout="canary"``: the candidate's share of requests, 1-99
            (default 10). With ``rollout="direct"`` and an ``inference_service``: Knative's
            ``canaryTrafficPercent`` for the promoted model, 0-100 (``None`` or 0: all traffic).
        host: KFP API endpoint: the run is submitted there; ``None`` runs it in this process
            through ``kfp.local``.
        runner: Local runs: ``"subprocess"`` (each step a subprocess) or ``"docker"`` (each step
            in the component image through ``kfp.local.DockerRunner``).
        image: Local runs with the docker runner: the component image (default
            ``$KUBELOOP_IMAGE``, else the image ``make images`` builds).
        experiment: Cluster runs: the KFP experiment.
        run_name: The run's name (cluster: the KFP run name; ``None``: KFP's default).
        ray_head_cpu, ray_head_memory, ray_worker_cpu, ray_worker_memory, ray_deadline_s: The
            sizes of the RayJob the train step creates on a cluster and its deadline in seconds
            (Kubernetes quantities: ``"4"``, ``"500m"``, ``"16Gi"``; ``None``: the pipeline's
            defaults, 1 CPU / 2Gi and 3600 s; see
            :class:`~kubeloop.pipelines.steps.rayjob.RayResources`).

    Raises:
        ConfigError: A value outside its range or choices ("The 'num_boost_round' parameter of
            RunRequest must be an int in the range [1, inf). Got 0 instead."), a model name
            that breaks the name rule, or ``runner``/``image`` set for a cluster run.
    """

    data: str
    target: str
    model_name: str = "model"
    task: str = "auto"
    workers: Workers = AUTO
    gate_margin: float = 0.0
    num_boost_round: int = 2000
    seed: int = 0
    candidates: str | None = None
    tune_budget: float = 0.0
    normalize_labels: bool = False
    registry_root: str | None = None
    mlflow_uri: str | None = None
    inference_service: str | None = None
    namespace: str | None = None
    rollout: Rollout = "direct"
    canary_percent: int | None = None
    host: str | None = None
    runner: Runner = "subprocess"
    image: str | None = None
    experiment: str = "kubeloop"
    run_name: str | None = None
    ray_head_cpu: str | None = None
    ray_head_memory: str | None = None
    ray_worker_cpu: str | None = None
    ray_worker_memory: str | None = None
    ray_deadline_s: int | None = None

    def __post_init__(self) -> None:
        check_name(self.model_name)
        self._check_ray_resources()
        check_choice("task", self.task, TASKS, owner=_OWNER)
        # "AUTO", "2" (a pipeline parameter, a flag) -> "auto", 2; anything else is refused.
        object.__setattr__(self, "workers", parse_workers(self.workers))
        check_range("gate_margin", self.gate_margin, low=0.0, owner=_OWNER)
        check_range("num_boost_round", self.num_boost_round, kind=int, low=1, owner=_OWNER)
        check_range("seed", self.seed, kind=int, low=0, owner=_OWNER)
        check_range("tune_budget", self.tune_budget, low=0.0, owner=_OWNER)
        if self.canary_percent is not None:
            check_range(
                "canary_percent", self.canary_percent, kind=int, low=0, high=100, owner=_OWNER
            )
        check_choice("rollout", self.rollout, ROLLOUTS, owner=_OWNER)
        if self.rollout == "canary" and self.canary_percent is not None:
            check_range(
                "canary_percent", self.canary_percent, kind=int, low=1, high=99, owner=_OWNER
            )
        check_choice("runner", self.runner, RUNNERS, owner=_OWNER)
        if self.host:
            self._refuse_local_options()

    def _check_ray_resources(self) -> None:
        """The RayJob's sizes, checked as the train step will read them."""
        given = {
            name: value
            for name in RAY_RESOURCES
            if (value := getattr(self, f"ray_{name}")) is not None
        }
        if given:
            from kubeloop.pipelines.steps.rayjob import RayResources

            RayResources(**given)

    def _refuse_local_options(self) -> None:
        """``runner`` and ``image`` say how ``kfp.local`` runs the steps: not for a cluster."""
        local_only = "{} for a cluster run (runner and image apply to local runs, host=None)"
        if self.runner != RUNNERS[0]:
            expected = local_only.format(repr(RUNNERS[0]))
            raise parameter_error("runner", self.runner, owner=_OWNER, expected=expected)
        if self.image:
            expected = local_only.format("None")
            raise parameter_error("image", self.image, owner=_OWNER, expected=expected)

    @property
    def candidate_percent(self) -> int:
        """The share of requests the candidate answers: ``canary_percent`` (default 10) in a
        canary rollout, 0 otherwise."""
        if self.rollout != "canary":
            return 0
        return DEFAULT_CANARY_PERCENT if self.canary_percent is None else self.canary_percent

    @property
    def where(self) -> Literal["local", "cluster"]:
        """``"cluster"`` when the run goes to a KFP server (``host``), else ``"local"``."""
        return "cluster" if self.host else "local"
