"""The registry over a real local directory and over fsspec's in-memory filesystem."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle import load_bundle, write_bundle
from kubeloop.bundle.models import LinearModel
from kubeloop.bundle.profile import build_reference_profile
from kubeloop.data import build_dataset
from kubeloop.errors import ConfigError, RegistryError
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


# -- the candidate and the rollback: every change is one pointer write -----------------------


def _three(registry: Registry, tmp_path: Path) -> list[str]:
    """Versions v0, v1, v2 with v1 the champion and v0 its previous."""
    versions = [registry.register(_bundle(tmp_path, weight=w)) for w in (0.1, 0.5, 0.9)]
    registry.promote("churn", versions[0])
    registry.promote("churn", versions[1])
    return versions


def test_candidate_start_end_and_promote(registry: Registry, tmp_path: Path) -> None:
    v0, v1, v2 = _three(registry, tmp_path)
    champion = registry.champion_record("churn")
    assert champion is not None and registry.candidate("churn") is None

    record = registry.start_candidate("churn", v2, mode="canary", percent=20)
    entry = {"version": v2, "mode": "canary", "percent": 20, "started": ANY_TIME}
    assert record == {**champion, "candidate": entry}  # version/updated/previous kept
    assert registry.champion_record("churn") == record and registry.champion("churn") == v1
    assert registry.candidate("churn") == entry

    ramped = registry.start_candidate("churn", v2, mode="canary", percent=50.0)
    assert ramped["candidate"]["percent"] == 50 and isinstance(ramped["candidate"]["percent"], int)
    shadow = registry.start_candidate("churn", v2, mode="shadow", percent=0)
    assert registry.candidate("churn") == {**shadow["candidate"], "mode": "shadow", "percent": 0}

    assert registry.end_candidate("churn") == champion
    assert registry.candidate("churn") is None and registry.champion_record("churn") == champion

    registry.start_candidate("churn", v2, mode="canary", percent=12.5)
    promoted = registry.promote("churn", v2)  # the candidate itself: the candidate is dropped
    assert promoted == {"version": v2, "updated": ANY_TIME, "previous": v1}
    assert registry.candidate("churn") is None
    registry.start_candidate("churn", v0, mode="shadow", percent=0)
    again = registry.promote("churn", v2)  # the champion again: candidate dropped, previous kept
    assert again == {"version": v2, "updated": ANY_TIME, "previous": v1}


def test_candidate_refusals(registry: Registry, tmp_path: Path) -> None:
    first = registry.register(_bundle(tmp_path, weight=0.3))
    with pytest.raises(RegistryError, match=r"has no champion .* promote it directly"):
        registry.start_candidate("churn", first, mode="canary", percent=10)
    v0, v1, v2 = _three(registry, tmp_path)
    with pytest.raises(RegistryError, match="already the champion of 'churn'"):
        registry.start_candidate("churn", v1, mode="canary", percent=10)
    with pytest.raises(RegistryError, match="has no version 'v0-nope'"):
        registry.start_candidate("churn", "v0-nope", mode="canary", percent=10)
    for mode, percent, message in [
        ("blue", 10, "The 'mode' parameter of Registry.start_candidate must be one of 'canary'"),
        (
            "canary",
            0,
            "'percent' parameter of Registry.start_candidate must be a float in the "
            "range (0.0, 100.0]. Got 0 instead.",
        ),
        ("canary", 101, "(0.0, 100.0]. Got 101 instead."),
        ("canary", float("nan"), "Got nan instead."),
        ("shadow", 10, "must be 0 in shadow mode (a shadow candidate answers no requests)"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            registry.start_candidate("churn", v2, mode=mode, percent=percent)
    with pytest.raises(RegistryError, match=r"has no candidate .* nothing to end"):
        registry.end_candidate("churn")
    registry.start_candidate("churn", v2, mode="canary", percent=10)
    with pytest.raises(RegistryError, match=f"already has candidate '{v2}' in 'canary' mode; "):
        registry.start_candidate("churn", v0, mode="shadow", percent=0)
    assert registry.candidate("churn")["version"] == v2  # type: ignore[index]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("[]", "is not a JSON object"),
        ('{"version": "../x", "mode": "canary", "percent": 5}', "names version '../x'"),
        ('{"version": "v1-a", "mode": "blue", "percent": 5}', "has mode 'blue'"),
        ('{"version": "v1-a", "mode": "canary", "percent": "5"}', "has percent '5'"),
        ('{"version": "v1-a", "mode": "canary", "percent": 0}', "outside (0, 100]"),
        ('{"version": "v1-a", "mode": "shadow", "percent": 5}', "shadow percent 5"),
    ],
)
def test_malformed_candidate_names_the_problem_and_the_fix(
    tmp_path: Path, entry: str, problem: str
) -> None:
    registry = Registry(tmp_path / "registry")
    (tmp_path / "registry" / "churn").mkdir(parents=True)
    pointer = tmp_path / "registry" / "churn" / "champion"
    pointer.write_text(f'{{"version": "v0-a", "candidate": {entry}}}', encoding="utf-8")
    with pytest.raises(RegistryError, match=re.escape(problem)) as caught:
        registry.candidate("churn")
    assert ".end_candidate('churn') and start the rollout again" in str(caught.value)
    assert registry.champion("churn") == "v0-a"  # the champion still reads
    assert registry.end_candidate("churn") == {"version": "v0-a"}  # and the entry can be dropped


def test_rollback_to_previous_or_named_version(registry: Registry, tmp_path: Path) -> None:
    v0, v1, v2 = _three(registry, tmp_path)
    registry.start_candidate("churn", v2, mode="canary", percent=10)
    seen: list[tuple[object, object]] = []
    back = registry.rollback("churn", before_write=lambda old, new: seen.append((old, new)))
    assert back == {"version": v0, "updated": ANY_TIME, "previous": v1}  # candidate dropped
    assert seen[0][1] == back and seen[0][0]["candidate"]["version"] == v2  # type: ignore[index]
    assert registry.champion_record("churn") == back
    assert registry.rollback("churn")["version"] == v1  # previous: the one rolled back from
    assert registry.rollback("churn", to=v2) == {"version": v2, "updated": ANY_TIME, "previous": v1}


def test_rollback_refusals_name_the_fix(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"has no champion .* nothing to roll back"):
        registry.rollback("churn")
    first = registry.register(_bundle(tmp_path, weight=0.2))
    registry.promote("churn", first)
    with pytest.raises(
        RegistryError,
        match=re.escape(
            f"champion '{first}' of 'churn' records no previous champion; name the version to roll "
            "back to with --to VERSION"
        ),
    ):
        registry.rollback("churn")
    for to, message in [
        ("v0-nope", "has no such version; pass one of the known versions with --to VERSION"),
        ("../x", "not a version id"),
        (first, "is already the champion"),
    ]:
        with pytest.raises(RegistryError, match=re.escape(message)):
            registry.rollback("churn", to=to)
    assert registry.champion_record("churn") == {"version": first, "updated": ANY_TIME}


def test_pointer_writes_are_atomic_and_journal_round_trips(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    _v0, _v1, v2 = _three(registry, tmp_path)
    registry.start_candidate("churn", v2, mode="shadow", percent=0)
    registry.rollback("churn")
    assert registry.transition_record("churn") is None
    registry.write_transition("churn", {"kind": "rollback", "pid": 1})
    assert registry.transition_record("churn") == {"kind": "rollback", "pid": 1}
    registry.clear_transition("churn")
    registry.clear_transition("churn")  # nothing there: nothing to do
    model_dir = tmp_path / "registry" / "churn"
    assert sorted(p.name for p in model_dir.iterdir()) == ["champion", "versions"]
    (model_dir / "transition").write_text("[1]", encoding="utf-8")
    with pytest.raises(RegistryError, match=r"is not a JSON object .* then delete the journal"):
        registry.transition_record("churn")


class _AnyTime:
    """Equal to any ISO 8601 UTC time stamp the registry writes."""

    def __eq__(self, other: object) -> bool:
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
        return isinstance(other, str) and re.fullmatch(stamp, other) is not None

    def __repr__(self) -> str:
        return "ANY_TIME"


ANY_TIME: Any = _AnyTime()
