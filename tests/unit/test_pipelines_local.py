"""Pieces of the local runner and the gate that need no pipeline run."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeloop.errors import DataValidationError, TrainingError
from kubeloop.pipelines.launch.local import step_error
from kubeloop.pipelines.launch.request import RunRequest
from kubeloop.pipelines.launch.runs import RunOutcome, pipeline_arguments
from kubeloop.pipelines.steps.gate import GateDecision

STEP_OUTPUT = (
    "18:33:45.253 - INFO - Executing task \x1b[96m'ingest-validate'\x1b[0m\n"
    "    Traceback (most recent call last):\n"
    '      File "ephemeral_component.py", line 12, in ingest_validate\n'
    "    kubeloop.errors.DataValidationError: Target column 'nope' is not in the data; "
    "columns: a, b.\n\n"
    "18:33:50.055 - ERROR - Task \x1b[96m'ingest-validate'\x1b[0m finished with status "
    "\x1b[91mFAILURE\x1b[0m\n"
)


def test_step_error_rebuilds_the_kubeloop_error() -> None:
    error = step_error(STEP_OUTPUT)
    assert isinstance(error, DataValidationError)
    assert str(error) == (
        "Target column 'nope' is not in the data; columns: a, b. (pipeline step 'ingest-validate')"
    )


@pytest.mark.parametrize(
    "output",
    ["", "ValueError: not ours\n", "SomethingError: unknown class\n", "all fine\n"],
)
def test_step_error_ignores_other_failures(output: str) -> None:
    assert step_error(output) is None


def test_step_error_takes_the_last_error() -> None:
    text = "kubeloop.errors.ConfigError: early\nkubeloop.errors.TrainingError: Ray died\n"
    error = step_error(text)
    assert isinstance(error, TrainingError) and str(error) == "Ray died"


def test_gate_decision_round_trips_as_json() -> None:
    decision = GateDecision(
        promote=False, reason="worse", metric="roc_auc", margin=0.01,
        challenger_version="v2", challenger_score=0.7, champion_version="v1", champion_score=0.8,
    )  # fmt: skip
    assert GateDecision.from_json(decision.to_json()) == decision


HOST = "http://ml-pipeline.kubeflow:8888"


def test_pipeline_arguments_leave_out_unset_options() -> None:
    request = RunRequest(
        data="d.csv", target="y", model_name="m", workers=2, num_boost_round=10,
        registry_root="/r", inference_service="", canary_percent=None, candidates="xgboost",
        host=HOST,
    )  # fmt: skip
    arguments = pipeline_arguments(request)
    assert arguments == {
        "data": "d.csv", "target": "y", "task": "auto", "model_name": "m", "workers": "2",
        "num_boost_round": 10, "seed": 0, "gate_margin": 0.0, "registry_root": "/r",
        "mlflow_uri": "", "candidates": "xgboost",
    }  # fmt: skip


def test_pipeline_arguments_fill_in_where_the_run_goes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBELOOP_REGISTRY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("KUBELOOP_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    local = pipeline_arguments(RunRequest(data="d.csv", target="y"))
    assert local["data"] == str(tmp_path / "d.csv")  # the steps run from another directory
    assert local["registry_root"] == str(tmp_path / "registry")
    assert local["mlflow_uri"] == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert local["workers"] == "auto" and local["model_name"] == "model"
    cluster = pipeline_arguments(RunRequest(data="d.csv", target="y", host=HOST))
    assert cluster["data"] == "d.csv"
    assert cluster["registry_root"] == "s3://kubeloop/registry" and cluster["mlflow_uri"] == ""


def test_outcome_summary() -> None:
    outcome = RunOutcome(
        run_id="local-v2", where="local", state="SUCCEEDED", promoted=False,
        champion_version="v1", reason="challenger v2 does not beat champion v1",
    )  # fmt: skip
    assert outcome.summary() == (
        "NOT promoted: challenger v2 does not beat champion v1. Champion now: v1"
    )


def test_flatten_metrics_keeps_finite_numbers_only() -> None:
    from kubeloop.registry.tracking import flatten_metrics

    metrics = {
        "roc_auc": 0.8,
        "r2": None,
        "confusion_matrix": [[1, 2], [3, 4]],
        "model": "xgboost",
        "ok": True,
        "bad": float("nan"),
        "candidates": {"linear": {"roc_auc": 0.7, "f1": 0.5}},
    }
    assert flatten_metrics(metrics) == {
        "roc_auc": 0.8,
        "candidates.linear.roc_auc": 0.7,
        "candidates.linear.f1": 0.5,
    }


def test_default_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubeloop.registry.tracking import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("KUBELOOP_HOME", "/srv/loop")
    assert default_tracking_uri() == "sqlite:////srv/loop/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert default_tracking_uri() == "http://mlflow:5000"


def test_tune_budget_is_a_pipeline_parameter() -> None:
    from kubeloop.pipelines.components.pipeline import build_pipeline

    inputs = build_pipeline("img").pipeline_spec.root.input_definitions.parameters
    assert inputs["tune_budget"].default_value.number_value == 0.0
    arguments = pipeline_arguments(
        RunRequest(data="d.csv", target="y", tune_budget=60.0, host=HOST)
    )
    assert arguments["tune_budget"] == 60.0


def test_prepare_store_makes_a_whole_store_once(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from kubeloop.registry.tracking import prepare_store

    path = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{path}"
    prepare_store(uri)
    assert sorted(p.name for p in path.parent.iterdir()) == ["mlflow.db"]  # no draft left
    made = path.stat()
    prepare_store(uri)  # a store is there: left alone
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("e"))
    client.log_metric(run.info.run_id, "m", 1.0)
    client.create_registered_model("churn")  # the registry's tables are there too
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    prepare_store("http://127.0.0.1:1")  # a server: nothing to do (and nothing contacted)


def test_step_containers_mount_the_data_file_not_its_folder(tmp_path: Path) -> None:
    """A data file in /tmp must not hide the container's /tmp (the step writes its program
    there): only the file is mounted, read-only, at its own path."""
    from kubeloop.pipelines.launch.local import _container_settings

    data = tmp_path / "churn.csv"
    volumes = _container_settings({"data": str(data)}, tmp_path / "home" / "kfp-local")["volumes"]
    assert volumes == {
        str(tmp_path / "home"): {"bind": str(tmp_path / "home"), "mode": "rw"},
        str(data): {"bind": str(data), "mode": "ro"},
    }
    remote = _container_settings({"data": "s3://b/d.csv"}, tmp_path / "home" / "kfp-local")
    assert list(remote["volumes"]) == [str(tmp_path / "home")]


def test_container_output_is_shown_in_whole_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """podman's log stream cuts lines anywhere and kfp.local indents every print: printed chunk
    by chunk, the step's error line came out as "kubeloop.errors    .    DataValid...".
    Printed line by line, it is read back."""
    from kfp.local.logging_utils import indented_print

    from kubeloop.pipelines.launch.local import _print_lines

    chunks = [
        b"Traceback (most recent call last):\nkubeloop.errors",
        b".",
        b"DataValidationError",
        b": Target column 'nope' is not",
        b" in the data.\n",
        b"last line, no newline",
    ]
    pending = bytearray()
    with indented_print():
        for chunk in chunks:
            pending = _print_lines(pending + chunk)
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "    Traceback (most recent call last):",
        "    kubeloop.errors.DataValidationError: Target column 'nope' is not in the data.",
    ]
    error = step_error(out)
    assert isinstance(error, DataValidationError) and "'nope'" in str(error)
    assert pending == b"last line, no newline"
