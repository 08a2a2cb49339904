"""The monitoring KFP component: the checked-in spec is reproducible and loads back."""

from __future__ import annotations

from pathlib import Path

from kfp import components

from kubeloop.pipelines.components.monitor import compile_monitor_component

CHECKED_IN = Path(__file__).resolve().parents[2] / "components" / "monitor_drift.yaml"


def test_component_spec_is_reproducible(tmp_path: Path) -> None:
    fresh = compile_monitor_component(tmp_path / "monitor_drift.yaml")
    assert CHECKED_IN.read_bytes() == fresh.read_bytes(), (
        f"{CHECKED_IN} is stale; regenerate with `python -m kubeloop.pipelines.components.monitor`"
    )


def test_component_loads_back_with_its_interface() -> None:
    component = components.load_component_from_file(str(CHECKED_IN))
    spec = component.component_spec
    assert {"model", "state_file", "metrics_url", "prometheus_url", "dry_run"} <= set(spec.inputs)
    assert spec.inputs["dry_run"].default is True
    assert spec.outputs is not None
    assert {"report", "psi", "drift_share", "retrain"} <= set(spec.outputs)
