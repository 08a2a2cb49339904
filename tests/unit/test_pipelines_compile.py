"""The checked-in pipeline and component YAML are reproducible and load back with the KFP SDK."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kfp import components

from kubeloop.pipelines.components.pipeline import compile_components, compile_pipeline
from kubeloop.pipelines.components.training import build_components
from kubeloop.pipelines.image import DEFAULT_IMAGE

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pipelines" / "training_pipeline.yaml"
COMPONENT_NAMES = [name for name, _ in build_components(DEFAULT_IMAGE).items()]
STEPS = ["ingest-validate", "prepare-features", "train", "evaluate", "gate"]
REGENERATE = "regenerate with `kubeloop pipeline compile` and commit the result"


def test_pipeline_package_is_reproducible(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "first.yaml")
    again = compile_pipeline(tmp_path / "second.yaml")
    assert fresh.read_bytes() == again.read_bytes(), "compilation is not deterministic"
    assert PACKAGE.read_bytes() == fresh.read_bytes(), f"{PACKAGE} is stale; {REGENERATE}"


@pytest.mark.parametrize("name", COMPONENT_NAMES)
def test_component_specs_are_reproducible(tmp_path: Path, name: str) -> None:
    compile_components(tmp_path)
    checked_in = ROOT / "components" / f"{name}.yaml"
    assert checked_in.read_bytes() == (tmp_path / f"{name}.yaml").read_bytes(), (
        f"{checked_in} is stale; {REGENERATE}"
    )


def test_package_loads_back_with_the_sdk() -> None:
    pipeline = components.load_component_from_file(str(PACKAGE))
    assert pipeline.name == "kubeloop-training"
    inputs = pipeline.component_spec.inputs
    assert {
        "data",
        "target",
        "task",
        "workers",
        "gate_margin",
        "model_name",
        "registry_root",
        "normalize_labels",
    } <= set(inputs)
    assert not inputs["data"].optional and not inputs["target"].optional
    assert inputs["gate_margin"].default == 0.0
    assert inputs["normalize_labels"].default is False
    assert (
        pipeline.component_spec.outputs is not None and "Output" in pipeline.component_spec.outputs
    )

    spec = yaml.safe_load(PACKAGE.read_text())
    dag = spec["root"]["dag"]["tasks"]
    assert set(STEPS) <= set(dag)
    # deploy runs only inside the gate's condition; register after every gate (MLflow)
    conditions = [t for t in dag.values() if "triggerPolicy" in t]
    assert len(conditions) == 1
    assert "promote" in conditions[0]["triggerPolicy"]["condition"]
    inner = spec["components"][conditions[0]["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"deploy"}
    assert dag["register"]["dependentTasks"] == ["evaluate", "gate"]
    # caching off everywhere: the registry and the data behind a URI change between runs
    for task in [*dag.values(), *inner.values()]:
        if "cachingOptions" in task:
            assert not task["cachingOptions"].get("enableCache", False)


def test_every_step_uses_the_project_image_without_pip_installs() -> None:
    spec = yaml.safe_load(PACKAGE.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == len(COMPONENT_NAMES)
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == DEFAULT_IMAGE
        assert "pip install" not in " ".join(container["command"])


def test_component_specs_load_back() -> None:
    for name in COMPONENT_NAMES:
        loaded = components.load_component_from_file(str(ROOT / "components" / f"{name}.yaml"))
        assert loaded.name == name.replace("_", "-")


def test_image_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBELOOP_IMAGE", "registry.local/kubeloop:dev")
    from kubeloop.pipelines.image import component_image

    assert component_image() == "registry.local/kubeloop:dev"
    path = compile_pipeline(tmp_path / "p.yaml", image=component_image())
    images = {
        e["container"]["image"]
        for e in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].values()
    }
    assert images == {"registry.local/kubeloop:dev"}


def test_batch_scoring_package_and_component_are_reproducible(tmp_path: Path) -> None:
    from kubeloop.pipelines.components.batch import (
        BATCH_COMPONENT_PATH,
        BATCH_PACKAGE_PATH,
        compile_batch,
    )

    first = compile_batch(tmp_path / "a.yaml", tmp_path / "a-component.yaml")
    again = compile_batch(tmp_path / "b.yaml", tmp_path / "b-component.yaml")
    for fresh, second, checked_in in zip(
        first, again, (BATCH_PACKAGE_PATH, BATCH_COMPONENT_PATH), strict=True
    ):
        assert fresh.read_bytes() == second.read_bytes(), "compilation is not deterministic"
        assert (ROOT / checked_in).read_bytes() == fresh.read_bytes(), (
            f"{checked_in} is stale; {REGENERATE}"
        )
    pipeline = components.load_component_from_file(str(ROOT / BATCH_PACKAGE_PATH))
    assert pipeline.name == "kubeloop-batch-scoring"
    inputs = pipeline.component_spec.inputs
    assert not inputs["data"].optional and not inputs["out"].optional
    assert inputs["registry_root"].default == "s3://kubeloop/registry"
    spec = yaml.safe_load((ROOT / BATCH_PACKAGE_PATH).read_text())
    (executor,) = spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == DEFAULT_IMAGE
    assert "pip install" not in " ".join(executor["container"]["command"])
