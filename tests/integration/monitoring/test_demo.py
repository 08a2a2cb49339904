"""``kubeloop demo`` end to end: the loop closes and the report says so."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from kubeloop.cli import main

pytestmark = pytest.mark.integration


def test_demo_closes_the_loop(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the demo's temp dir goes
    report = tmp_path / "report.json"
    page = tmp_path / "loop.html"
    code = main(
        [
            "demo",
            "--rows",
            "2500",
            "--traffic-rows",
            "1200",
            "--num-boost-round",
            "60",
            "--report",
            str(report),
            "--report-html",
            str(page),
        ]
    )
    out = capfd.readouterr().out
    assert code == 0, out
    result = json.loads(report.read_text())
    assert result["closed"] is True
    assert result["drift_detected"] and result["retrain_started"] and result["promoted"]
    assert result["version_after"] != result["version_before"]
    assert result["served_version_before"] == result["version_before"]
    assert result["served_version_after"] == result["version_after"]
    assert result["healthy_drift_share"] < 0.3 <= result["drift_share"]
    assert result["psi"]["payment_method"] >= 0.2 > result["healthy_psi"]["payment_method"]
    assert result["decision"]["reasons"] == ["drift", "performance"]
    assert result["challenger_score"] > result["champion_score"]
    assert result["live_metric_after"] > result["live_metric_before"]  # better on the new regime
    assert result["retrain_runs"] == 1  # the monitor ran again after the swap: no second run
    assert result["workdir"] is None and list(scratch.iterdir()) == []  # all cleaned up
    assert "loop CLOSED" in out and "6/6" in out
    # The HTML report of the alarm: the old champion drifted, the gate promoted the new one.
    assert f"HTML report: {page}" in out and result["report_html"] == str(page)
    html = page.read_text(encoding="utf-8")
    assert result["version_before"] in html and f"PROMOTED {result['version_after']}" in html
    assert "<script" not in html and 'id="drifted-features"' in html


def test_canary_demo_rolls_back_the_bad_candidate_and_promotes_the_good_one(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    report, page = tmp_path / "canary.json", tmp_path / "canary.html"
    arguments = ["demo", "--canary", "--rows", "3000", "--traffic-rows", "1200"]
    code = main([*arguments, "--report", str(report), "--report-html", str(page)])
    out = capfd.readouterr().out
    assert code == 0, out
    result = json.loads(report.read_text())
    assert result["closed"] and result["canary_rolled_back"] and result["canary_promoted"]
    first, bad, good = result["champion_first"], result["bad_candidate"], result["good_candidate"]
    assert len({first, bad, good}) == 3
    assert result["champion_final"] == result["served_final"] == good
    assert result["rollback_requests"] > 0 and result["promote_requests"] > 0
    assert "ROLLED BACK" in out and "PROMOTED" in out and "staged rollout PASSED" in out
    html = page.read_text(encoding="utf-8")
    assert "Staged rollouts" in html and bad in html and good in html
    assert "ROLLED BACK" in html and "PROMOTED" in html
