"""The gate's core on real splits and real bundles (linear models, so no Ray is needed)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from kubeloop.bundle import write_bundle
from kubeloop.bundle.models import LinearModel
from kubeloop.bundle.profile import build_reference_profile
from kubeloop.data.synth import generate_churn
from kubeloop.errors import RegistryError
from kubeloop.pipelines.steps.data import (
    ingest,
    load_matrices,
    load_part,
    load_preprocessor,
    load_schema,
    prepare_features,
)
from kubeloop.pipelines.steps.gate import gate, register
from kubeloop.registry import Registry


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gate")
    data = root / "churn.csv"
    generate_churn(600, seed=5).to_csv(data, index=False)
    ingest(str(data), target="churned", task="auto", out=root / "splits")
    prepare_features(root / "splits", out=root / "features")
    return root / "splits", root / "features"


def _fitted_coef(features: Path) -> np.ndarray:
    """Least squares on the training matrix: a real (if crude) linear scorer."""
    x, y = load_matrices(features, "train")
    coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y * 2.0 - 1.0, rcond=None)
    return np.asarray(coef[:-1])


def _bundle(
    prepared: tuple[Path, Path],
    tmp_path: Path,
    coef: np.ndarray,
    name: str = "m",
    metrics: dict[str, float] | None = None,
) -> Path:
    splits, features = prepared
    schema = load_schema(splits)
    spec = load_preprocessor(features)
    x, _ = load_matrices(features, "train")
    model = LinearModel(coef.reshape(1, -1), np.zeros(1), task="classification", n_classes=2)
    profile = build_reference_profile(load_part(splits, "train").X, schema, model.predict(x))
    return write_bundle(
        tmp_path / f"b-{uuid.uuid4().hex[:8]}",
        name=name,
        schema=schema,
        preprocessor=spec,
        model=model,
        reference_profile=profile,
        metrics=metrics or {},
        data_hash="0" * 64,
    )


def test_first_model_is_promoted_without_scoring(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    """No champion: nothing to compare, so the score is the one the bundle records."""
    splits, features = prepared
    root = str(tmp_path / "r")
    challenger = _bundle(prepared, tmp_path, _fitted_coef(features), metrics={"roc_auc": 0.75})
    decision = gate(splits, challenger, registry_root=root, model_name="m", margin=0)
    assert decision.promote and decision.champion_version is None
    assert "no champion yet" in decision.reason
    assert decision.metric == "roc_auc" and decision.challenger_score == 0.75
    assert (
        decision.challenger_version
        == json.loads((challenger / "manifest.json").read_text())["version"]
    )
    unscored = _bundle(prepared, tmp_path, _fitted_coef(features))  # records no test metrics
    assert (
        gate(splits, unscored, registry_root=root, model_name="m", margin=0).challenger_score
        is None
    )


def test_better_challenger_beats_the_champion(prepared: tuple[Path, Path], tmp_path: Path) -> None:
    splits, features = prepared
    root = str(tmp_path / "r")
    weak = _bundle(
        prepared, tmp_path, np.random.default_rng(0).normal(size=_fitted_coef(features).shape)
    )
    champion = register(weak, registry_root=root, model_name="m")
    strong = _bundle(prepared, tmp_path, _fitted_coef(features))
    decision = gate(splits, strong, registry_root=root, model_name="m", margin=0.01)
    assert decision.promote, decision.reason
    assert decision.champion_version == champion
    assert decision.challenger_score > decision.champion_score + 0.01  # type: ignore[operator]
    assert "beats champion" in decision.reason and "held-out rows" in decision.reason


def test_worse_or_equal_challenger_keeps_the_champion(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    splits, features = prepared
    root = str(tmp_path / "r")
    strong = _bundle(prepared, tmp_path, _fitted_coef(features))
    champion = register(strong, registry_root=root, model_name="m")
    worse = _bundle(prepared, tmp_path, -_fitted_coef(features))
    decision = gate(splits, worse, registry_root=root, model_name="m", margin=0.0)
    assert not decision.promote and "does not beat" in decision.reason
    # the same model again scores exactly the same: not better, so not promoted
    same = gate(splits, strong, registry_root=root, model_name="m", margin=0.0)
    assert not same.promote and same.challenger_score == same.champion_score
    assert Registry(root).champion("m") == champion


def test_margin_is_required(prepared: tuple[Path, Path], tmp_path: Path) -> None:
    splits, features = prepared
    root = str(tmp_path / "r")
    coef = _fitted_coef(features)
    register(_bundle(prepared, tmp_path, coef * 0.5 + 0.01), registry_root=root, model_name="m")
    decision = gate(splits, _bundle(prepared, tmp_path, coef), registry_root=root, model_name="m",
                    margin=0.5)  # fmt: skip
    assert not decision.promote and "+ margin 0.5" in decision.reason


def test_register_refuses_a_bundle_named_otherwise(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    _, features = prepared
    bundle = _bundle(prepared, tmp_path, _fitted_coef(features), name="other")
    with pytest.raises(RegistryError, match="named 'other', not 'm'"):
        register(bundle, registry_root=str(tmp_path / "r"), model_name="m")
    assert Registry(tmp_path / "r").versions("other") == []
