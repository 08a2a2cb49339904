"""The retrain decision: reasons, de-duplication, cooldown, daily cap, persisted state."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from kubeloop.errors import ConfigError
from kubeloop.monitoring.decision import (
    DAY_S,
    MonitorState,
    TriggerPolicy,
    decide,
    load_state,
    save_state,
)
from kubeloop.monitoring.retrain import refresh_active_run

POLICY = TriggerPolicy(drift_share=0.3, max_performance_drop=0.05, cooldown_s=600, daily_cap=2)
NOW = 1_000_000.0


def test_no_drift_no_retrain() -> None:
    decision = decide(drift_share=0.1, state=MonitorState(), policy=POLICY, now=NOW)
    assert not decision.retrain and decision.reasons == () and decision.blocked_by is None


def test_no_data_no_retrain() -> None:
    decision = decide(drift_share=None, state=MonitorState(), policy=POLICY, now=NOW)
    assert not decision.retrain and decision.details == ("no usable data",)


def test_drift_and_performance_are_both_reasons() -> None:
    decision = decide(
        drift_share=0.5,
        drifted_features=("tenure",),
        performance_drop=0.1,
        state=MonitorState(),
        policy=POLICY,
        now=NOW,
    )
    assert decision.retrain and decision.reasons == ("drift", "performance")
    assert decision.reason == "drift+performance"
    assert "tenure" in decision.details[0]


def test_active_run_blocks_a_second_run() -> None:
    state = MonitorState(active_run={"run_id": "r1", "where": "local", "pid": os.getpid()})
    decision = decide(drift_share=1.0, state=state, policy=POLICY, now=NOW)
    assert not decision.retrain and decision.blocked_by == "active_run"


def test_cooldown_then_daily_cap() -> None:
    state = MonitorState().with_run_started({"run_id": "r1"}, NOW)
    state = MonitorState(retrain_starts=state.retrain_starts)
    inside = decide(drift_share=1.0, state=state, policy=POLICY, now=NOW + 599)
    assert inside.blocked_by == "cooldown"
    after = decide(drift_share=1.0, state=state, policy=POLICY, now=NOW + 601)
    assert after.retrain
    capped = MonitorState(retrain_starts=(NOW, NOW + 700))
    assert (
        decide(drift_share=1.0, state=capped, policy=POLICY, now=NOW + 1400).blocked_by
        == "daily_cap"
    )
    next_day = decide(drift_share=1.0, state=capped, policy=POLICY, now=NOW + DAY_S + 1)
    assert next_day.retrain


def test_with_run_started_forgets_starts_older_than_a_day() -> None:
    state = MonitorState(retrain_starts=(NOW - DAY_S - 1, NOW - 10))
    assert state.with_run_started({"run_id": "x"}, NOW).retrain_starts == (NOW - 10, NOW)


def test_state_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    assert load_state(path) == MonitorState()
    state = MonitorState(retrain_starts=(1.0, 2.0), active_run={"run_id": "r"}, errors=3)
    save_state(path, state)
    assert load_state(path) == state
    assert json.loads(path.read_text())["format"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp left behind


def test_corrupt_state_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("[1, 2")
    with pytest.raises(ConfigError, match="delete it"):
        load_state(path)


def test_refresh_drops_runs_of_dead_monitors_and_finished_cluster_runs() -> None:
    live = {"run_id": "a", "where": "local", "pid": os.getpid()}
    assert refresh_active_run(live) == (live, None)
    dead, note = refresh_active_run({"run_id": "b", "where": "local", "pid": 2**22 + 12345})
    assert dead is None and note and "gone" in note
    cluster = {"run_id": "c", "where": "cluster", "host": "http://kfp"}
    assert refresh_active_run(cluster, run_state=lambda h, r: "RUNNING") == (cluster, None)
    done, note = refresh_active_run(cluster, run_state=lambda h, r: "SUCCEEDED")
    assert done is None and note and "SUCCEEDED" in note

    def down(host: str, run: str) -> str:
        raise ConnectionError("kfp down")

    kept, note = refresh_active_run(cluster, run_state=down)
    assert kept == cluster and note and "kfp down" in note


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"drift_share": 0.0}, "a float in the range (0.0, 1.0]. Got 0.0"),
        ({"max_performance_drop": 0.0}, "a float in the range (0.0, inf). Got 0.0"),
        ({"cooldown_s": -1.0}, "a float in the range [0.0, inf). Got -1.0"),
        ({"daily_cap": 0}, "an int in the range [1, inf). Got 0"),
    ],
)
def test_policy_rejects_bad_values(bad: dict, expected: str) -> None:
    (name,) = bad
    message = f"The '{name}' parameter of TriggerPolicy must be {expected} instead."
    with pytest.raises(ConfigError, match=re.escape(message)):
        TriggerPolicy(**bad)
