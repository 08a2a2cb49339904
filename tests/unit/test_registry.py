"""The registry over a real local directory and over fsspec's in-memory filesystem."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle import load_bundle, write_bundle
from kubeloop.bundle.models import LinearModel
from kubeloop.bundle.profile import build_reference_profile
from kubeloop.data import build_dataset
from kubeloop.errors import RegistryError
from kubeloop.features import fit_preprocessor
from kubeloop.registry import Registry, default_registry_root, kubeloop_home, read_champion


def _bundle(directory: Path, *, weight: float = 0.5, name: str = "churn") -> Path:
    """A small, real bundle (a linear model) written with the bundle module."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(1, 72, 120).astype(float),
            "plan": rng.choice(["basic", "pro"], 120),
            "churned": rng.choice(["No", "Yes"], 120),
        }
    )
    dataset = build_dataset(frame, target="churned")
    _, spec = fit_preprocessor(dataset.X, dataset.schema)
    width = len(spec.output_columns)
    model = LinearModel(
        np.full((1, width), weight), np.zeros(1), task="classification", n_classes=2
    )
    profile = build_reference_profile(dataset.X, dataset.schema, np.full(120, 0.5))
    return write_bundle(
        directory / f"bundle-{weight}-{uuid.uuid4().hex[:6]}",
        name=name,
        schema=dataset.schema,
        preprocessor=spec,
        model=model,
        reference_profile=profile,
        metrics={"roc_auc": 0.5},
        data_hash=dataset.data_hash,
    )


@pytest.fixture(params=["local", "memory"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    if request.param == "local":
        yield Registry(tmp_path / "registry")
        return
    root = f"memory://kubeloop-test-{uuid.uuid4().hex}/registry"
    yield Registry(root)
    memory = fsspec.filesystem("memory")
    bucket = "/" + root.removeprefix("memory://").split("/")[0]
    if memory.exists(bucket):
        memory.rm(bucket, recursive=True)


def test_register_promote_and_read_back(registry: Registry, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    assert registry.champion("churn") is None
    assert registry.champion_path("churn") is None
    version = registry.register(bundle)
    assert registry.versions("churn") == [version]
    assert registry.models() == ["churn"]
    assert registry.champion("churn") is None  # registering does not promote

    record = registry.promote("churn", version)
    assert record["version"] == version and "previous" not in record
    assert registry.champion("churn") == version
    assert read_champion(registry.root, "churn") == version
    local = registry.champion_path("churn")
    assert local is not None
    assert load_bundle(local).version == version
    assert registry.version_uri("churn", version).endswith(f"/churn/versions/{version}")


def test_register_is_idempotent(registry: Registry, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    first = registry.register(bundle)
    assert registry.register(bundle) == first
    assert registry.versions("churn") == [first]


def test_promote_records_previous_and_switches(registry: Registry, tmp_path: Path) -> None:
    old = registry.register(_bundle(tmp_path, weight=0.1))
    registry.promote("churn", old)
    new_bundle = _bundle(tmp_path, weight=0.9)
    new = registry.register(new_bundle)
    if new == old:  # same second and same model-hash prefix cannot happen: weights differ
        pytest.fail("two different bundles got the same version id")
    record = registry.promote("churn", new)
    assert record == {"version": new, "updated": record["updated"], "previous": old}
    assert registry.champion_record("churn") == record
    assert sorted(registry.versions("churn")) == sorted([old, new])


def test_promote_unknown_version_leaves_champion(registry: Registry, tmp_path: Path) -> None:
    version = registry.register(_bundle(tmp_path))
    registry.promote("churn", version)
    with pytest.raises(RegistryError, match="has no version 'v0-nope'"):
        registry.promote("churn", "v0-nope")
    assert registry.champion("churn") == version


def test_register_refuses_a_tampered_bundle(registry: Registry, tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    (bundle / "metrics.json").write_text('{"roc_auc": 0.99}', encoding="utf-8")
    with pytest.raises(RegistryError, match="cannot register"):
        registry.register(bundle)
    assert registry.versions("churn") == []


def test_local_writes_leave_no_temp_files(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    version = registry.register(_bundle(tmp_path))
    registry.promote("churn", version)
    model_dir = tmp_path / "registry" / "churn"
    assert sorted(p.name for p in model_dir.iterdir()) == ["champion", "versions"]
    assert [p.name for p in (model_dir / "versions").iterdir()] == [version]
    assert json.loads((model_dir / "champion").read_text())["version"] == version


def test_damaged_local_version_is_refused(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    version = registry.register(_bundle(tmp_path))
    stored = tmp_path / "registry" / "churn" / "versions" / version
    (stored / "schema.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RegistryError, match="damaged"):
        registry.promote("churn", version)
    assert registry.champion("churn") is None


def test_bad_names_and_pointer(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    with pytest.raises(RegistryError, match=r"registry name .* is not allowed"):
        registry.versions("../etc")
    (tmp_path / "registry" / "churn").mkdir(parents=True)
    (tmp_path / "registry" / "churn" / "champion").write_text("not json", encoding="utf-8")
    with pytest.raises(RegistryError, match="not valid JSON"):
        registry.champion("churn")


def test_default_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBELOOP_REGISTRY", raising=False)
    monkeypatch.setenv("KUBELOOP_HOME", str(tmp_path / "home"))
    assert kubeloop_home() == tmp_path / "home"
    assert default_registry_root() == str(tmp_path / "home" / "registry")
    monkeypatch.setenv("KUBELOOP_REGISTRY", "s3://bucket/registry")
    assert default_registry_root() == "s3://bucket/registry"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"version": null}', "names version None, which is not a version id"),
        ('{"version": "../../x"}', "names version '../../x', which is not a version id"),
        ('{"version": 3}', "names version 3, which is not a version id"),
        ("[]", "not valid JSON with a 'version'"),
    ],
)
def test_bad_champion_pointer_names_the_problem_and_the_fix(
    tmp_path: Path, content: str, message: str
) -> None:
    registry = Registry(tmp_path / "registry")
    (tmp_path / "registry" / "churn").mkdir(parents=True)
    (tmp_path / "registry" / "churn" / "champion").write_text(content, encoding="utf-8")
    with pytest.raises(RegistryError, match=re.escape(message)) as caught:
        registry.champion("churn")
    assert "point it at one of the versions (none yet)" in str(caught.value)
    assert ".promote('churn', VERSION)" in str(caught.value)
