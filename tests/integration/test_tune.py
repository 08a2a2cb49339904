"""`kubeloop train --tune-budget`: a real Ray Tune search on real Ray, through the real CLI."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from kubeloop.bundle import load_bundle
from kubeloop.cli import main
from kubeloop.data.synth import generate_churn, generate_regression
from kubeloop.training.engine import resolve_engine, shared_local_ray
from kubeloop.training.tuning import _PRIORS, PARAMS, tune_xgboost

# Ray is up already (ray_session); Ray Tune starts its trial actors inside the budget (each a new
# worker process importing XGBoost: several seconds on a loaded 2-core machine), and the
# generated tables' trials take well under a second each. The search keeps the larger of 6 s and
# 6 % of the budget for Ray Tune's ending (training/tuning.py): 25 s leaves it about 17 s.
BUDGET_S = 25.0


def _train(data: Path, target: str, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--target", target, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def tuned_churn(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle trained with a 25 s search on 3,000 generated rows (the holdout path)."""
    work = tmp_path_factory.mktemp("tuned-churn")
    data = work / "churn.csv"
    generate_churn(3000, seed=11).to_csv(data, index=False)
    out = work / "bundle"
    assert _train(data, "churned", out, "--tune-budget", f"{BUDGET_S:g}", "--seed", "2") == 0
    return out


def test_tune_budget_records_trials_and_never_loses_to_default(tuned_churn: Path) -> None:
    metrics = json.loads((tuned_churn / "metrics.json").read_text())
    tuning = metrics["tuning"]
    assert tuning["budget_s"] == BUDGET_S
    assert 0 < tuning["used_s"] <= BUDGET_S * 1.1
    assert tuning["trial_count"] == len(tuning["trials"]) >= 2
    # numbered by proposal, in order; a proposal the budget ended before it started is not listed
    numbers = [t["number"] for t in tuning["trials"]]
    assert numbers[0] == 0 and numbers == sorted(set(numbers))
    # one trial per CPU at a time, within the budget
    assert sum(t["seconds"] for t in tuning["trials"]) <= BUDGET_S * 1.1 * (os.cpu_count() or 1)
    # Trial 0 is the default configuration.
    first = tuning["trials"][0]["params"]
    assert first["grow_policy"] == "depthwise" and first["max_leaves"] == 0
    assert first["max_depth"] == 5 and first["learning_rate"] == 0.05
    assert set(tuning["best_params"]) == set(PARAMS)
    scores = [t["score"] for t in tuning["trials"] if t["score"] is not None]
    assert tuning["best_validation_score"] == max(scores)
    assert tuning["best_validation_score"] >= tuning["default_validation_score"]
    # The tuned model is a candidate; the chosen one is the best on validation, so it is never
    # worse than the untuned XGBoost there.
    assert {"xgboost", "xgboost_tuned"} <= set(metrics["candidates"])
    validation = metrics["validation_scores"]
    assert validation[metrics["model"]] == max(validation.values())
    assert validation[metrics["model"]] >= validation["xgboost"]
    assert tuning["chosen"] == (metrics["model"] == "xgboost_tuned")
    assert metrics["selection"] == {"method": "holdout", "rows": 600}
    manifest = load_bundle(tuned_churn).manifest
    assert manifest["params"]["tune_budget"] == BUDGET_S
    assert manifest["params"]["tune_trials"] == tuning["trial_count"]
    assert manifest["params"]["tune_best_params"] == tuning["best_params"]


def test_tuning_goes_to_mlflow(tuned_churn: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from kubeloop.registry.tracking import log_training_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_training_run(tuned_churn, params={"tune_budget": BUDGET_S}, tracking_uri=uri)

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    tuning = json.loads((tuned_churn / "metrics.json").read_text())["tuning"]
    assert run.data.metrics["tuning.trial_count"] == tuning["trial_count"]
    assert run.data.metrics["tuning.used_s"] == tuning["used_s"]
    assert run.data.params["tune.best.max_depth"] == str(tuning["best_params"]["max_depth"])
    local = Path(client.download_artifacts(run_id, "tuning/trials.json", str(tmp_path)))
    assert json.loads(local.read_text())["trials"] == tuning["trials"]


def test_small_data_is_cross_validated_and_tuned(
    ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "small.csv"
    generate_regression(442, seed=3).to_csv(data, index=False)
    out = tmp_path / "bundle"

    assert _train(data, "target", out, "--tune-budget", f"{BUDGET_S:g}") == 0

    metrics = json.loads((out / "metrics.json").read_text())
    # The test part (sklearn's train_test_split rounds it up) stays out of the CV.
    train_and_validation = 442 - math.ceil(442 * 0.2)
    assert metrics["selection"]["method"] == "cross_validation"
    assert metrics["selection"]["rows"] == train_and_validation
    assert len(metrics["selection"]["fold_scores"]) == 5
    assert set(metrics["candidates"]) == {"xgboost", "linear", "random_forest", "xgboost_tuned"}
    validation = metrics["validation_scores"]
    assert validation[metrics["model"]] == max(validation.values())
    assert metrics["tuning"]["trial_count"] >= 1
    printed = capsys.readouterr()
    assert "5-fold cross-validation" in printed.err
    assert "Tuning:" in printed.out


def test_same_seed_same_search_on_the_shared_local_ray(ray_session: None) -> None:
    import ray

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 6)).astype(np.float32)
    y = (X[:, 0] * 2 + np.sin(X[:, 1] * 3) + rng.normal(scale=0.3, size=1200)).astype(np.float32)
    base = {"objective": "reg:squarederror", "eval_metric": ["rmse"], "tree_method": "hist"}
    default = {"grow_policy": "depthwise", "max_depth": 5, "max_leaves": 0, "learning_rate": 0.05,
               "min_child_weight": 10.0, "subsample": 0.8, "colsample_bytree": 0.8,
               "reg_alpha": 0.0, "reg_lambda": 1.0}  # fmt: skip
    trials = 1 + len(_PRIORS) + 2  # the default, the priors, two searched

    def search(seed: int) -> tuple[list[dict], dict]:
        started = time.monotonic()
        result = tune_xgboost(
            (X[:900], y[:900]),
            (X[900:], y[900:]),
            base_params=base,
            default=default,
            budget_s=120.0,
            seed=seed,
            num_boost_round=300,
            early_stopping_rounds=20,
            max_trials=trials,
            concurrency=1,
        )
        assert time.monotonic() - started < 120.0 * 1.1
        return [t["params"] for t in result.trials], result.best_params

    # Consecutive tuned runs (the monitor's) share one local Ray: the trials run on it, and
    # XGBoost's own training stays in the process.
    with shared_local_ray("auto", tuning=True) as address:
        assert address is not None
        assert resolve_engine("auto").in_process
        first, again = search(1), search(1)
        assert ray.get_runtime_context().gcs_address == address
    assert len(first[0]) == trials
    assert first == again
    assert first[0][0] == default
