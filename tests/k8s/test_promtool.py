"""Alert rules: promtool checks and unit-tests the rules file and the rendered PrometheusRule."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.k8s import k8s_helpers as h
from tests.tools import tool

RULES = h.CHART / "files" / "alert-rules.yaml"
UNIT_TESTS = Path(__file__).resolve().parent / "promtool" / "alert-rules.test.yaml"
ALERTS = {
    "KubeloopHighErrorRate",
    "KubeloopHighLatencyP99",
    "KubeloopModelLoadFailed",
    "KubeloopDataDrift",
    "KubeloopFeatureDrift",
    "KubeloopMonitorNotRunning",
    "KubeloopMonitorCronJobStale",
    "KubeloopMonitorErrors",
    "KubeloopRetrainFailing",
    "KubeloopCandidateRolledBack",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _unit_tests_for(rules: Path, directory: Path) -> Path:
    """The unit tests, pointed at another rules file."""
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = [str(rules)]
    path = directory / "alert-rules.test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    return path


def _rendered_rules(tmp_path: Path, rendered: dict[str, list[h.Manifest]]) -> Path:
    (rule,) = h.by_kind(rendered["default"], "PrometheusRule")
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_rules_file_checks() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    names = {r["alert"] for g in h.load_yaml_file(RULES)["groups"] for r in g["rules"]}
    assert names == ALERTS
    tested = {
        case["alertname"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert tested == ALERTS


def test_rules_use_only_known_metrics() -> None:
    from tests.k8s.test_dashboard import METRICS, _base_metric, _metric_names

    known = METRICS | {"kube_cronjob_status_last_successful_time"}
    for group in h.load_yaml_file(RULES)["groups"]:
        for rule in group["rules"]:
            names = {_base_metric(n) for n in _metric_names(rule["expr"])}
            assert names and names <= known, (rule["alert"], names - known)


def test_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_prometheusrule_checks_and_passes_the_unit_tests(
    tmp_path: Path, rendered: dict[str, list[h.Manifest]]
) -> None:
    rules = _rendered_rules(tmp_path, rendered)
    check = _promtool("check", "rules", str(rules))
    assert check.returncode == 0, check.stdout + check.stderr
    result = _promtool("test", "rules", str(_unit_tests_for(rules, tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    text = RULES.read_text().replace("kubeloop_drift_share) > 0.3", "kubeloop_drift_share) > 0.6")
    assert text != RULES.read_text()
    rules = tmp_path / "changed.yaml"
    rules.write_text(text)
    result = _promtool("test", "rules", str(_unit_tests_for(rules, tmp_path)))
    assert result.returncode != 0
    assert "KubeloopDataDrift" in result.stdout + result.stderr


def test_check_rejects_bad_promql(tmp_path: Path) -> None:
    rules = tmp_path / "bad.yaml"
    rules.write_text(RULES.read_text().replace("> 0.3", "> > 0.3", 1))
    assert _promtool("check", "rules", str(rules)).returncode != 0
