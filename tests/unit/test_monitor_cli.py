"""`kubeloop monitor` hands the deploy target to the retraining runs it starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from kubeloop.cli import main
from kubeloop.console import ProgressFn
from kubeloop.errors import ConfigError
from kubeloop.monitoring import monitor as monitor_module
from kubeloop.monitoring.decision import Decision, MonitorState
from kubeloop.monitoring.monitor import MonitorConfig, MonitorResult
from kubeloop.pipelines.launch.request import RunRequest
from kubeloop.pipelines.launch.runs import RunOutcome, pipeline_arguments

CLUSTER = [
    "monitor", "--once", "--model=churn", "--registry=s3://kubeloop/registry",
    "--metrics-url=http://churn-predictor.kubeloop/metrics",
    "--kfp-host=http://ml-pipeline.kubeflow:8888",
    "--data=s3://kubeloop/data/churn.csv", "--target=churned",
]  # fmt: skip


def _config_of(argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MonitorConfig:
    seen: list[MonitorConfig] = []

    def fake_run_once(config: MonitorConfig, **_: Any) -> MonitorResult:
        seen.append(config)
        return MonitorResult(None, None, None, None, None)

    monkeypatch.setattr(monitor_module, "run_once", fake_run_once)
    assert main([*argv, f"--state-file={tmp_path / 'state.json'}"]) == 0
    (config,) = seen
    return config


def test_cli_threads_the_deploy_target(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _config_of(
        [
            *CLUSTER,
            "--inference-service=churn",
            "--namespace=kubeloop",
            "--canary-percent=10",
            "--mlflow-uri=http://kubeloop-mlflow.kubeloop:5000",
            "--tune-budget=90",
        ],
        monkeypatch,
        tmp_path,
    )
    assert config.inference_service == "churn" and config.namespace == "kubeloop"
    assert config.tune_budget == 90.0
    assert config.canary_percent == 10
    assert config.mlflow_uri == "http://kubeloop-mlflow.kubeloop:5000"
    assert config.kfp_host == "http://ml-pipeline.kubeflow:8888"


def test_cli_defaults_deploy_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _config_of(CLUSTER, monkeypatch, tmp_path)
    assert config.tune_budget == 0.0
    assert config.inference_service is None and config.namespace is None
    assert config.canary_percent is None and config.mlflow_uri is None


def test_namespace_needs_an_inference_service(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--inference-service"):
        MonitorConfig(
            model="churn",
            state_file=tmp_path / "state.json",
            registry="r",
            metrics_url="http://x/metrics",
            namespace="kubeloop",
        )


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[RunRequest] = []

    def __call__(self, request: RunRequest, /, *, progress: ProgressFn | None = None) -> RunOutcome:
        self.calls.append(request)
        return RunOutcome(run_id="run-1", where="cluster", state="SUBMITTED", promoted=None)


def _start(config: MonitorConfig) -> RunRequest:
    recorder = _Recorder()
    state, outcome, error = monitor_module._start(
        config,
        Decision(retrain=True, reasons=("drift",)),
        MonitorState(),
        None,
        recorder,
        lambda _: None,
        1_000_000.0,
    )
    assert error is None and outcome.run_id == "run-1"
    assert state.active_run is not None and state.active_run["run_id"] == "run-1"
    (call,) = recorder.calls
    return call


def test_retraining_run_redeploys_the_served_model(tmp_path: Path) -> None:
    call = _start(
        MonitorConfig(
            model="churn",
            state_file=tmp_path / "state.json",
            registry="s3://kubeloop/registry",
            metrics_url="http://x/metrics",
            retrain_data="s3://kubeloop/data/churn.csv",
            target="churned",
            kfp_host="http://ml-pipeline.kubeflow:8888",
            inference_service="churn",
            namespace="kubeloop",
            canary_percent=10,
            mlflow_uri="http://mlflow:5000",
            tune_budget=90.0,
        )
    )
    assert call.host == "http://ml-pipeline.kubeflow:8888"
    assert call.data == "s3://kubeloop/data/churn.csv" and call.target == "churned"
    assert call.run_name == "churn-retrain-19700112-134640"
    arguments = pipeline_arguments(call)
    assert arguments["tune_budget"] == 90.0
    assert arguments["registry_root"] == "s3://kubeloop/registry"
    assert arguments["inference_service"] == "churn" and arguments["namespace"] == "kubeloop"
    assert arguments["canary_percent"] == 10 and arguments["mlflow_uri"] == "http://mlflow:5000"


def test_unset_deploy_options_are_not_passed(tmp_path: Path) -> None:
    call = _start(
        MonitorConfig(
            model="churn",
            state_file=tmp_path / "state.json",
            registry="s3://kubeloop/registry",
            metrics_url="http://x/metrics",
            retrain_data="s3://kubeloop/data/churn.csv",
            target="churned",
            kfp_host="http://ml-pipeline.kubeflow:8888",
        )
    )
    arguments = pipeline_arguments(call)
    assert not {"inference_service", "namespace", "canary_percent", "tune_budget"} & set(arguments)
    assert arguments["mlflow_uri"] == ""  # the steps' $MLFLOW_TRACKING_URI


def test_bad_run_settings_are_refused_with_the_config(tmp_path: Path) -> None:
    """A monitor that retrains refuses a bad run setting when it is configured, not at the
    first retraining (which would fail on every later drift too)."""
    settings: dict[str, Any] = {
        "model": "churn", "state_file": tmp_path / "state.json", "registry": "r",
        "metrics_url": "http://x/metrics", "target": "churned", "canary_percent": 150,
    }  # fmt: skip
    MonitorConfig(**settings)  # no retraining data: no run to check
    message = (
        "The 'canary_percent' parameter of RunRequest must be an int in the range [0, 100]. "
        "Got 150 instead."
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        MonitorConfig(**settings, retrain_data="s3://kubeloop/data/churn.csv")


def test_start_training_run_puts_the_deploy_target_in_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the monitor passes ends up as the cluster run's pipeline parameters."""
    from kubeloop.pipelines.launch import runs

    submitted: list[dict[str, Any]] = []

    def fake_submit(host: str, arguments: dict[str, Any], **_: Any) -> str:
        submitted.append(arguments)
        return "run-1"

    monkeypatch.setattr(runs, "submit_run", fake_submit)
    request = RunRequest(
        data="s3://kubeloop/data/churn.csv",
        target="churned",
        model_name="churn",
        host="http://ml-pipeline.kubeflow:8888",
        registry_root="s3://kubeloop/registry",
        inference_service="churn",
        namespace="kubeloop",
    )
    outcome = runs.start_training_run(request)
    assert outcome.where == "cluster" and outcome.run_id == "run-1"
    (arguments,) = submitted
    assert arguments["inference_service"] == "churn" and arguments["namespace"] == "kubeloop"
    assert arguments["registry_root"] == "s3://kubeloop/registry"
