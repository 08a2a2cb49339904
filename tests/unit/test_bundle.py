"""Unit tests of kubeloop.bundle: atomic write, verified load, refusal of tampering and pickles."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost

from kubeloop.bundle import BUNDLE_FORMAT, load_bundle, verify_bundle, write_bundle
from kubeloop.bundle.models import LinearModel, TabularModel, XGBoostModel
from kubeloop.bundle.profile import build_reference_profile
from kubeloop.bundle.schema import FeatureInfo, Schema, Task
from kubeloop.errors import BundleError
from kubeloop.features import FastTransform, fit_preprocessor
from kubeloop.training.evaluation import evaluate, write_plots

SCHEMA = Schema(
    features=(
        FeatureInfo("tenure", "numeric", minimum=0.0, maximum=72.0),
        FeatureInfo("contract", "categorical", categories=("Month", "Year")),
    ),
    target="churned",
    task="classification",
    classes=("No", "Yes"),
)


@pytest.fixture(scope="module")
def pieces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small real schema, preprocessor, XGBoost model, profile, metrics and plots."""
    rng = np.random.default_rng(0)
    n = 120
    X = pd.DataFrame(
        {
            "tenure": rng.uniform(0, 72, size=n),
            "contract": rng.choice(["Month", "Year"], size=n).astype(object),
        }
    )
    y = ((X["tenure"] < 20) | (X["contract"] == "Month")).to_numpy().astype(np.int64)
    _, spec = fit_preprocessor(X, SCHEMA)
    matrix = FastTransform(spec).transform(X)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
        xgboost.DMatrix(matrix, label=y),
        num_boost_round=5,
    )
    model = XGBoostModel(booster, task="classification", n_classes=2)
    prediction = model.predict(matrix)
    plots = write_plots(
        tmp_path_factory.mktemp("plots"),
        task="classification",
        y_true=y,
        prediction=prediction,
        importance=model.feature_importance(spec.output_columns),
        classes=SCHEMA.classes,
    )
    return {
        "schema": SCHEMA,
        "preprocessor": spec,
        "model": model,
        "reference_profile": build_reference_profile(X, SCHEMA, prediction, bins=4),
        "metrics": evaluate("classification", y, prediction, classes=SCHEMA.classes),
        "plots": plots,
        "params": {"max_depth": 2, "rounds": np.int64(5)},
        "data_hash": "ab" * 32,
        "matrix": matrix,
    }


def _write(destination: Path, pieces: dict[str, Any], **overrides: Any) -> Path:
    kwargs = {k: v for k, v in pieces.items() if k != "matrix"}
    kwargs.update(overrides)
    return write_bundle(destination, name="churn", **kwargs)


@pytest.fixture
def bundle_dir(tmp_path: Path, pieces: dict[str, Any]) -> Path:
    return _write(tmp_path / "bundle", pieces)


def test_round_trip(bundle_dir: Path, pieces: dict[str, Any]) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.schema == pieces["schema"]
    assert bundle.preprocessor == pieces["preprocessor"]
    assert bundle.model.kind == "xgboost"
    np.testing.assert_array_equal(
        bundle.model.predict(pieces["matrix"]), pieces["model"].predict(pieces["matrix"])
    )
    assert bundle.reference_profile == pieces["reference_profile"]
    assert bundle.metrics == pieces["metrics"]
    assert bundle.name == "churn"
    assert bundle.path == bundle_dir


def test_manifest_content(bundle_dir: Path) -> None:
    manifest = verify_bundle(bundle_dir)
    assert manifest["format"] == BUNDLE_FORMAT
    assert manifest["task"] == "classification"
    assert manifest["model"] == {"kind": "xgboost", "file": "model.ubj", "n_classes": 2}
    assert manifest["params"] == {"max_depth": 2, "rounds": 5}
    assert manifest["data_hash"] == "ab" * 32
    assert manifest["created"].endswith("Z")
    assert set(manifest["libraries"]) >= {"python", "numpy", "xgboost", "scikit-learn", "pandas"}
    on_disk = sorted(p.name for p in bundle_dir.iterdir())
    assert on_disk == sorted([*manifest["files"], "manifest.json"])
    assert {"roc.svg", "pr.svg", "confusion.svg", "importance.svg", "model.ubj"} <= set(on_disk)
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((bundle_dir / name).read_bytes()).hexdigest() == digest
    model_hash = manifest["files"]["model.ubj"]
    stamp, short = manifest["version"][1:].split("-")
    assert manifest["version"].startswith("v") and len(stamp) == 14 and stamp.isdigit()
    assert short == model_hash[:6]
    assert stamp == manifest["created"][:19].replace("-", "").replace(":", "").replace("T", "")


def test_linear_model_round_trip(tmp_path: Path, pieces: dict[str, Any]) -> None:
    width = len(pieces["preprocessor"].output_columns)
    model = LinearModel(
        np.arange(width) / 10.0, np.array([0.3]), task="classification", n_classes=2
    )
    bundle = load_bundle(_write(tmp_path / "linear", pieces, model=model, plots=()))
    assert (tmp_path / "linear" / "model.json").is_file()
    np.testing.assert_allclose(
        bundle.model.predict(pieces["matrix"]), model.predict(pieces["matrix"])
    )


def test_existing_destination_is_refused_and_untouched(
    bundle_dir: Path, pieces: dict[str, Any]
) -> None:
    before = {p.name: p.read_bytes() for p in bundle_dir.iterdir()}
    with pytest.raises(BundleError, match="already exists"):
        _write(bundle_dir, pieces)
    assert {p.name: p.read_bytes() for p in bundle_dir.iterdir()} == before
    assert sorted(p.name for p in bundle_dir.parent.iterdir()) == ["bundle"]


class _FailingModel:
    kind = "xgboost"
    task: Task = "classification"
    n_classes = 2
    filename = "model.ubj"

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.zeros(len(X))

    def save(self, directory: Path) -> Path:
        (directory / self.filename).write_bytes(b"half a model")
        raise OSError("disk full")

    def feature_importance(self, names: Any) -> dict[str, float]:
        return {}


def test_failure_mid_write_leaves_nothing(tmp_path: Path, pieces: dict[str, Any]) -> None:
    model: TabularModel = _FailingModel()
    destination = tmp_path / "registry" / "versions" / "v1"
    with pytest.raises(BundleError, match="disk full"):
        _write(destination, pieces, model=model)
    assert list(tmp_path.iterdir()) == []  # no temp dir, no half bundle, no new parents


def test_unserializable_metrics_leave_nothing(tmp_path: Path, pieces: dict[str, Any]) -> None:
    with pytest.raises(BundleError, match=r"metrics\.json"):
        _write(tmp_path / "b", pieces, metrics={"roc_auc": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_bad_name_is_refused(tmp_path: Path, pieces: dict[str, Any]) -> None:
    with pytest.raises(BundleError, match="model name"):
        write_bundle(
            tmp_path / "b", name="../evil", **{k: v for k, v in pieces.items() if k != "matrix"}
        )
    assert list(tmp_path.iterdir()) == []


def test_tampered_file_is_refused(bundle_dir: Path) -> None:
    metrics = bundle_dir / "metrics.json"
    data = bytearray(metrics.read_bytes())
    data[10] = data[10] ^ 0x01
    metrics.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"metrics\.json does not match its sha256"):
        load_bundle(bundle_dir)


def test_missing_file_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "schema.json").unlink()
    with pytest.raises(BundleError, match=r"schema\.json listed in the manifest is missing"):
        load_bundle(bundle_dir)


def test_missing_manifest_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json not found"):
        verify_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("model.pkl", b"not even a real pickle"),
        ("extra.joblib", b"x"),
        ("notes.bin", pickle.dumps({"a": 1}, protocol=4)),
    ],
)
def test_pickle_files_are_refused(bundle_dir: Path, name: str, content: bytes) -> None:
    (bundle_dir / name).write_bytes(content)
    with pytest.raises(BundleError, match=rf"{name} is a pickle"):
        load_bundle(bundle_dir)


def test_pickle_under_a_listed_name_is_refused(bundle_dir: Path) -> None:
    """A pickle swapped in for a listed file is named as a pickle, not only a hash mismatch."""
    (bundle_dir / "roc.svg").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(BundleError, match=r"roc\.svg is a pickle"):
        verify_bundle(bundle_dir)


def test_unlisted_file_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "README.txt").write_text("hello")
    with pytest.raises(BundleError, match=r"does not list: \['README.txt'\]"):
        load_bundle(bundle_dir)


def test_unknown_format_is_refused(bundle_dir: Path) -> None:
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bundle format 99"):
        load_bundle(bundle_dir)


def _rehash(bundle: Path, name: str) -> None:
    """Update the manifest's sha256 of ``name`` to what the file (or link) holds now."""
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def test_symlink_to_a_valid_model_outside_is_refused(
    tmp_path: Path, pieces: dict[str, Any]
) -> None:
    """The manifest is re-hashed for the outside model: only the link itself can refuse it."""
    bundle = _write(tmp_path / "bundle", pieces)
    other = _write(tmp_path / "other", pieces, params={"other": 1})
    (bundle / "model.ubj").unlink()
    (bundle / "model.ubj").symlink_to(other / "model.ubj")
    _rehash(bundle, "model.ubj")
    with pytest.raises(BundleError, match=r"model\.ubj is a symbolic link"):
        load_bundle(bundle)


def test_symlink_is_refused_before_its_target_is_read(bundle_dir: Path, tmp_path: Path) -> None:
    """A link to a FIFO: opening it would block until a writer comes, so a refusal that returns
    proves the target was never opened (the same holds for a link to /etc/passwd)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (bundle_dir / "model.ubj").unlink()
    (bundle_dir / "model.ubj").symlink_to(fifo)
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: _capture(outcome, bundle_dir), daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # unblock the reader, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("verify_bundle opened the link's target")
    assert len(outcome) == 1 and isinstance(outcome[0], BundleError)
    assert "model.ubj is a symbolic link" in str(outcome[0])


def _capture(outcome: list[BaseException], bundle: Path) -> None:
    try:
        verify_bundle(bundle)
    except BaseException as exc:
        outcome.append(exc)


def test_hard_link_to_outside_is_refused(tmp_path: Path, pieces: dict[str, Any]) -> None:
    bundle = _write(tmp_path / "bundle", pieces)
    other = _write(tmp_path / "other", pieces, params={"other": 1})
    (bundle / "model.ubj").unlink()
    os.link(other / "model.ubj", bundle / "model.ubj")
    _rehash(bundle, "model.ubj")
    with pytest.raises(BundleError, match=r"model\.ubj has 2 hard links"):
        load_bundle(bundle)


def test_subdirectory_and_linked_bundle_directory_are_refused(
    bundle_dir: Path, tmp_path: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(bundle_dir)
    with pytest.raises(BundleError, match=r"bundle directory .*link is a symbolic link"):
        verify_bundle(link)
    (bundle_dir / "nested").mkdir()
    with pytest.raises(BundleError, match=r"nested is a directory"):
        verify_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("key", "value"),
    [("name", "../../tmp/x"), ("name", None), ("version", "v1/../../x"), ("name", "ok\n")],
)
def test_bad_name_or_version_in_the_manifest_is_refused(
    bundle_dir: Path, key: str, value: Any
) -> None:
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[key] = value
    manifest_path.write_text(json.dumps(manifest))
    what = "model name" if key == "name" else "version"
    with pytest.raises(BundleError, match=rf"manifest\.json: {what} .* is not allowed"):
        load_bundle(bundle_dir)
