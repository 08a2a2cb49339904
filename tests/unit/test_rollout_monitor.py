"""The monitor's side of a staged rollout, without a server: the counters it accumulates, the
per-row signals it computes, the retrain guard, the run request and the report's table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kubeloop.data.synth import generate_churn
from kubeloop.errors import ConfigError
from kubeloop.monitoring.decision import MonitorState, TriggerPolicy, decide
from kubeloop.monitoring.report import count_frame, row_log_likelihood
from kubeloop.monitoring.rollout import _accumulate, label_losses
from kubeloop.pipelines.launch.request import RunRequest
from kubeloop.pipelines.launch.runs import pipeline_arguments
from kubeloop.report._sections import history_section


def test_counters_accumulate_from_their_first_sight_and_across_a_restart() -> None:
    first = {"v1": {"error": (100.0, 2.0, 2.0)}, "v2": {"error": (10.0, 1.0, 1.0)}}
    record, restarted = _accumulate({}, first)
    assert not restarted and record["seen"] == {}  # the first sight is every series' baseline
    second = {"v1": {"error": (150.0, 3.0, 3.0)}, "v2": {"error": (30.0, 2.0, 2.0)}}
    record, restarted = _accumulate(record, second)
    assert not restarted
    assert record["seen"]["v1"]["error"] == [50.0, 1.0, 1.0]
    assert record["seen"]["v2"]["error"] == [20.0, 1.0, 1.0]
    after_restart = {"v1": {"error": (5.0, 0.0, 0.0)}, "v2": {"error": (4.0, 1.0, 1.0)}}
    record, restarted = _accumulate(record, after_restart)
    assert restarted  # a counter went down: everything since the restart is new
    assert record["seen"]["v1"]["error"] == [55.0, 1.0, 1.0]
    assert record["seen"]["v2"]["error"] == [24.0, 2.0, 2.0]
    fresh = {k: {s: list(t) for s, t in v.items()} for k, v in after_restart.items()}
    assert record["last"] == fresh
    later = {**after_restart, "v3": {"error": (7.0, 1.0, 1.0)}}  # began since the last look
    record, _ = _accumulate(record, later)
    assert record["seen"]["v3"]["error"] == [7.0, 1.0, 1.0]


class _Bundle:
    """The parts of a bundle label_losses reads."""

    def __init__(self, task: str, classes: tuple[str, ...], metrics: dict[str, float]) -> None:
        from kubeloop.bundle.schema import FeatureInfo, Schema

        self.schema = Schema(
            features=(FeatureInfo("x", "numeric"),), target="y", task=task, classes=classes
        )  # type: ignore[arg-type]
        self.metrics = metrics


def test_label_losses_are_log_loss_or_scaled_squared_error() -> None:
    binary = _Bundle("classification", ("No", "Yes"), {"roc_auc": 0.8})
    joined = pd.DataFrame({"prediction": [0.9, 0.9, 0.5, 0.2], "label": ["Yes", "No", "x", 1.0]})
    losses = label_losses(binary, joined)  # type: ignore[arg-type]
    assert losses[0] == pytest.approx(-math.log(0.9))
    assert losses[1] == pytest.approx(-math.log(0.1))
    assert np.isnan(losses[2]) and np.isnan(losses[3])  # not a known class
    regression = _Bundle("regression", (), {"rmse": 2.0})
    joined = pd.DataFrame({"prediction": [1.0, 3.0], "label": [3.0, "bad"]})
    losses = label_losses(regression, joined)  # type: ignore[arg-type]
    assert losses[0] == pytest.approx(1.0) and np.isnan(losses[1])  # 2**2 / 2**2


def test_row_log_likelihood_prefers_the_reference_the_rows_came_from() -> None:
    from kubeloop.bundle.profile import build_reference_profile
    from kubeloop.data import build_dataset

    def profile(frame: pd.DataFrame) -> dict:
        ds = build_dataset(frame, target="churned")
        return build_reference_profile(ds.X, ds.schema, np.full(len(frame), 0.5))

    old, new = generate_churn(3000, seed=0), generate_churn(3000, seed=1, covariate_shift=1.0)
    rows = generate_churn(500, seed=2, covariate_shift=1.0)
    fit = row_log_likelihood(profile(old), rows) - row_log_likelihood(profile(new), rows)
    assert fit.shape == (500,) and np.isfinite(fit).all()
    assert fit.mean() < -0.2  # the shifted rows are far likelier under the shifted reference
    # the same rows binned by count_frame agree on which bins they fall in
    counts = count_frame(profile(old), rows)
    assert sum(counts["tenure_months"].values()) == 500


def test_no_retraining_while_a_candidate_is_watched() -> None:
    state = MonitorState(rollout={"candidate": "v2", "champion": "v1", "started": 0.0})
    decision = decide(
        drift_share=0.9, state=state, policy=TriggerPolicy(cooldown_s=0.0), now=1000.0
    )
    assert not decision.retrain and decision.blocked_by == "rollout"
    assert any("v2" in line for line in decision.details)


def test_run_request_rollout_and_its_pipeline_arguments() -> None:
    canary = RunRequest(data="s3://b/d.csv", target="y", rollout="canary", host="http://kfp")
    assert canary.candidate_percent == 10
    arguments = pipeline_arguments(canary, registry_root="s3://b/r")
    assert arguments["rollout"] == "canary" and arguments["canary_percent"] == 10
    shadow = RunRequest(data="s3://b/d.csv", target="y", rollout="shadow", canary_percent=40)
    assert shadow.candidate_percent == 0
    direct = pipeline_arguments(RunRequest(data="s3://b/d.csv", target="y"), registry_root="r")
    assert "rollout" not in direct and "canary_percent" not in direct
    with pytest.raises(ConfigError, match="'rollout' parameter of RunRequest must be one of"):
        RunRequest(data="d.csv", target="y", rollout="blue-green")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'canary_percent' .* range \[1, 99\]. Got 100"):
        RunRequest(data="d.csv", target="y", rollout="canary", canary_percent=100)


def test_the_report_lists_the_rollout_decisions() -> None:
    verdict = {"requests": 412, "reasons": ["label_loss +0.31 [0.20, 0.42]: harm"]}
    history = [
        {"at": 1.7e9, "decision": {"retrain": False, "details": []}, "rollout": None},
        {"at": 1.7e9 + 60, "decision": {"retrain": False, "details": []},
         "rollout": {"mode": "canary", "percent": 30, "candidate": "v2", "champion": "v1",
                     "action": "rollback", "verdict": verdict}},
    ]  # fmt: skip
    html = history_section([], None, history, task="classification")
    assert "Staged rollouts" in html and "ROLLED BACK" in html and "412" in html
    assert "label_loss +0.31" in html
    assert "Staged rollouts" not in history_section([], None, history[:1], task="classification")
