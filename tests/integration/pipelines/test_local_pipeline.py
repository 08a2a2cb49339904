"""The whole training pipeline through kfp.local (real subprocess steps, real Ray, MLflow sqlite).

One module-scoped first run (``workers=auto``, no Ray cluster: XGBoost trains in the train step's
process) promotes a champion; the next tests try to replace it with a worse challenger (on Ray
Train workers) and with bad data, and check that neither touches the registry or MLflow's alias.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kubeloop.cli import main
from kubeloop.pipelines.launch.request import RunRequest
from kubeloop.pipelines.launch.runs import RunOutcome, start_training_run
from kubeloop.registry import Registry
from kubeloop.registry.tracking import champion_model_version, default_tracking_uri

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FAST = {"num_boost_round": 60, "candidates": "xgboost,linear"}
PROBE = Path(__file__).resolve().parents[3] / "bench" / "stepprobe"
# What each step's process must not load: it uses none of it (register: no XGBoost, whose import
# alone loads scikit-learn and SciPy -- MLflow loads SciPy itself; ingest and features: no
# XGBoost; no step but train: Ray; none but register: MLflow).
NOT_LOADED = {
    "ingest_validate": {"xgboost", "ray", "mlflow", "numba", "matplotlib"},
    "prepare_features": {"xgboost", "ray", "mlflow", "numba", "matplotlib"},
    "train": {"mlflow", "numba", "matplotlib"},
    "evaluate": {"ray", "mlflow", "numba", "matplotlib"},
    # the first run's gate: no champion, so nothing to score and no model library to load
    "gate": {"pandas", "sklearn", "xgboost", "ray", "mlflow", "numba", "matplotlib"},
    "register": {"xgboost", "sklearn", "ray", "numba", "matplotlib"},
    "deploy": {"xgboost", "sklearn", "scipy", "ray", "mlflow", "numba", "matplotlib"},
}


def _mlflow_runs(model: str) -> list[object]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=default_tracking_uri())
    experiment = client.get_experiment_by_name("kubeloop")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], f"tags.`kubeloop.model` = '{model}'")
    return list(runs)


@pytest.fixture(scope="module")
def step_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the first run's step processes report what they loaded (bench/stepprobe)."""
    return tmp_path_factory.mktemp("probe") / "steps.jsonl"


@pytest.fixture(scope="module")
def first_run(loop_home: Path, churn_csv: Path, step_probe: Path) -> RunOutcome:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_ADDRESS", raising=False)  # no Ray cluster: auto trains in-process
        paths = [str(PROBE), *filter(None, [os.environ.get("PYTHONPATH")])]
        patch.setenv("PYTHONPATH", os.pathsep.join(paths))
        patch.setenv("KUBELOOP_STEP_PROBE", str(step_probe))
        request = RunRequest(data=str(churn_csv), target="churned", model_name="churn", **FAST)
        return start_training_run(request)


def test_each_step_loads_only_what_it_uses(
    first_run: RunOutcome, step_probe: Path, loop_home: Path
) -> None:
    records = [json.loads(line) for line in step_probe.read_text().splitlines()]
    loaded = {record["step"]: set(record["heavy"]) for record in records}
    assert set(loaded) == set(NOT_LOADED), records
    for step, libraries in loaded.items():
        assert not libraries & NOT_LOADED[step], f"{step} loaded {libraries & NOT_LOADED[step]}"
    assert {"xgboost", "ray"} <= loaded["train"]  # XGBoostTrainer, in Ray Train's local mode
    index = _run_dir(first_run, loop_home) / "train" / "candidates" / "candidates.json"
    xgb = next(c for c in json.loads(index.read_text())["candidates"] if c["name"] == "xgboost")
    assert xgb["params"]["engine"] == "in-process" and xgb["params"]["workers"] == 0


def test_first_run_promotes_and_is_tracked(first_run: RunOutcome, loop_home: Path) -> None:
    assert first_run.state == "SUCCEEDED" and first_run.promoted is True
    assert "no champion yet" in first_run.reason
    version = first_run.challenger_version
    assert version is not None and first_run.champion_version == version
    registry = Registry(loop_home / "registry")
    assert registry.versions("churn") == [version]
    assert registry.champion("churn") == version
    assert first_run.challenger_score is not None and first_run.challenger_score > 0.7

    # Other tests of this module may have added runs already (random order): the first run's
    # MLflow run is the one run tagged with its version.
    (run,) = [r for r in _mlflow_runs("churn") if r.data.tags["kubeloop.version"] == version]
    assert run.info.status == "FINISHED"
    assert run.data.tags["kubeloop.promoted"] == "true"
    assert run.data.tags["kubeloop.gate"] == "promote"
    assert run.data.tags["kubeloop.chosen"] in FAST["candidates"].split(",")
    assert run.data.params["gate_margin"] == "0.0" and run.data.params["seed"] == "0"
    assert run.data.metrics["roc_auc"] == pytest.approx(first_run.challenger_score)
    assert {"candidates.linear.roc_auc", "f1", "log_loss"} <= set(run.data.metrics)
    assert run.data.params["target"] == "churned"
    champion = champion_model_version("churn")
    assert champion["kubeloop"] == version and champion["run_id"] == run.info.run_id

    from mlflow.tracking import MlflowClient

    artifacts = MlflowClient(tracking_uri=default_tracking_uri()).list_artifacts(
        run.info.run_id, "bundle"
    )
    assert "bundle/manifest.json" in {a.path for a in artifacts}


def _evaluate_artifacts(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "evaluate" / "executor_output.json"
    if not path.is_file():  # a run that failed before its evaluate step
        return {}
    output = json.loads(path.read_text())
    return {name: value["artifacts"][0] for name, value in output["artifacts"].items()}


def _run_dir(run: RunOutcome, loop_home: Path) -> Path:
    """The kfp.local directory of ``run`` (other tests of this module add runs)."""
    (run_dir,) = [
        run_dir
        for run_dir in (loop_home / "kfp-local").glob("kubeloop-training-*")
        if _evaluate_artifacts(run_dir).get("bundle", {}).get("metadata", {}).get("version")
        == run.challenger_version
    ]
    return run_dir


def test_kfp_outputs_feed_the_ui(first_run: RunOutcome, loop_home: Path) -> None:
    run_dir = _run_dir(first_run, loop_home)
    artifacts = _evaluate_artifacts(run_dir)
    assert artifacts["metrics"]["metadata"]["roc_auc"] == pytest.approx(first_run.challenger_score)
    classification = artifacts["classification"]["metadata"]
    assert len(classification["confidenceMetrics"]) > 10  # the ROC curve
    matrix = classification["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["No", "Yes"]
    assert sum(map(sum, (row["row"] for row in matrix["rows"]))) == 300  # the test split
    assert "<img" in (run_dir / "evaluate" / "plots").read_text()
    assert "(chosen)" in (run_dir / "evaluate" / "report").read_text()
    assert artifacts["bundle"]["metadata"]["version"] == first_run.challenger_version


def test_worse_challenger_is_not_promoted(
    first_run: RunOutcome, churn_csv: Path, loop_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    champion = first_run.champion_version
    argv = ["pipeline", "run", "--local", "--data", str(churn_csv), "--target", "churned",
            "--model", "churn", "--workers", "1", "--num-boost-round", "1",
            "--candidates", "xgboost"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "NOT promoted" in out and "does not beat" in out, out[-2000:]
    assert f"Champion now: {champion}" in out

    registry = Registry(loop_home / "registry")
    assert registry.champion("churn") == champion
    assert registry.versions("churn") == [champion]  # the loser is not registered
    runs = _mlflow_runs("churn")
    assert len(runs) == 2  # ... but it is tracked
    loser = next(r for r in runs if r.data.tags["kubeloop.version"] != champion)
    assert "kubeloop.promoted" not in loser.data.tags
    assert loser.data.tags["kubeloop.gate"] == "keep"
    assert "does not beat" in loser.data.tags["kubeloop.gate_reason"]
    assert champion_model_version("churn")["kubeloop"] == champion


def test_missing_target_fails_at_validate_and_changes_nothing(
    first_run: RunOutcome, churn_csv: Path, loop_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry(loop_home / "registry")
    before = (registry.champion_record("churn"), registry.versions("churn"))
    runs_before = len(_mlflow_runs("churn"))
    argv = ["pipeline", "run", "--local", "--data", str(churn_csv), "--target", "no_such_column",
            "--model", "churn", "--workers", "1"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "no_such_column" in err
    assert "pipeline step 'ingest-validate'" in err
    assert (registry.champion_record("churn"), registry.versions("churn")) == before
    assert len(_mlflow_runs("churn")) == runs_before


def test_telco_churn(loop_home: Path, telco_csv: Path) -> None:
    outcome = start_training_run(
        RunRequest(
            data=str(telco_csv), target="Churn", model_name="telco", workers=1,
            num_boost_round=80, candidates="xgboost",
        )
    )  # fmt: skip
    assert outcome.promoted is True
    assert Registry(loop_home / "registry").champion("telco") == outcome.challenger_version
    assert outcome.challenger_score is not None and outcome.challenger_score > 0.8
    (run,) = _mlflow_runs("telco")
    assert run.data.metrics["roc_auc"] > 0.8
