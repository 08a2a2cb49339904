"""BundleModel in process (a real kserve.Model, no server): output shapes per task, swaps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from kubeloop.bundle import load_bundle
from kubeloop.errors import BundleError
from kubeloop.features import FastTransform
from kubeloop.serving import BundleModel

from .conftest import build_bundle

pytestmark = pytest.mark.integration


def _model(path: Path, name: str) -> BundleModel:
    model = BundleModel(name, lambda: path)
    assert model.load() and model.ready
    return model


def _v1_rows(path: Path, rows: int = 3) -> list[dict[str, Any]]:
    from kubeloop.data.synth import generate_churn, generate_regression

    schema = load_bundle(path).schema
    regression = schema.task == "regression"
    frame = generate_regression(rows, seed=99) if regression else generate_churn(rows, seed=99)
    result = []
    for _, record in frame.iterrows():
        row = {}
        for f in schema.features:
            value = record[f.name]
            row[f.name] = (None if value != value else float(value)) if f.is_numeric else str(value)
        result.append(row)
    return result


def test_multiclass_gives_per_class_probabilities(tmp_path: Path) -> None:
    path = build_bundle(tmp_path / "multi", task="multiclass", name="plan")
    model = _model(path, "plan")
    classes = list(load_bundle(path).schema.classes)
    assert len(classes) == 3
    v1 = model.predict({"instances": _v1_rows(path)})
    for prediction in v1["predictions"]:
        assert set(prediction["probability"]) == set(classes)
        assert sum(prediction["probability"].values()) == pytest.approx(1.0, abs=1e-5)
        best = max(prediction["probability"], key=prediction["probability"].get)
        assert prediction["label"] == best
    assert model.get_output_types()[1]["shape"] == [-1, 3]


def test_regression_gives_numbers(tmp_path: Path) -> None:
    path = build_bundle(tmp_path / "reg", task="regression", name="price")
    model = _model(path, "price")
    rows = _v1_rows(path)
    v1 = model.predict({"instances": rows})
    assert all(isinstance(p, float) for p in v1["predictions"])
    inputs = [InferInput(name, [len(rows)], "FP64", [r[name] for r in rows]) for name in rows[0]]
    answer = model.predict(InferRequest(model_name="price", infer_inputs=inputs))
    assert isinstance(answer, bytes)  # plain-JSON V2 answers are serialised by the model
    v2 = json.loads(answer)
    assert [o["name"] for o in v2["outputs"]] == ["prediction"]
    assert v2["outputs"][0]["data"] == pytest.approx(v1["predictions"])
    assert model.get_output_types() == [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]


def test_failed_swap_keeps_the_old_bundle(small_bundle: Path, tmp_path: Path) -> None:
    model = _model(small_bundle, "churn-swap")
    before = model.served
    broken = tmp_path / "broken"
    shutil.copytree(small_bundle, broken)
    (broken / "model.ubj").write_bytes(b"not a model")
    with pytest.raises(BundleError):
        model.swap(broken)
    assert model.served is before
    rows = _v1_rows(small_bundle, 1)
    assert model.predict({"instances": rows})["model_version"] == before.version
    assert np.isfinite(model.predict({"instances": rows})["predictions"][0]["probability"])


def test_serves_a_bundle_from_the_training_workflow(churn_bundle: Path) -> None:
    bundle = load_bundle(churn_bundle)
    model = _model(churn_bundle, "churn-trained")
    rows = _v1_rows(churn_bundle, 5)
    predictions = model.predict({"instances": rows})["predictions"]
    columns = {
        f.name: np.array([r[f.name] for r in rows], dtype=np.float64 if f.is_numeric else object)
        for f in bundle.schema.features
    }
    transform = FastTransform(bundle.preprocessor)
    expected = bundle.model.predict(transform.transform_columns(columns).matrix)
    assert [p["probability"] for p in predictions] == pytest.approx(expected.tolist())
    assert {p["label"] for p in predictions} <= set(bundle.schema.classes)
