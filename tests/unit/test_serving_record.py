"""``BundleModel.record``: one call per request on the fast path and the columnar path alike,
counting every row once in the metrics and logging the request once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import generate_latest

from kubeloop.bundle import load_bundle
from kubeloop.features import TransformResult
from kubeloop.serving import BundleModel, Served
from kubeloop.serving._context import RequestContext
from kubeloop.serving._payload_log import PayloadLogger
from kubeloop.serving.codec import Columns, Row
from tests.integration.serving.conftest import build_bundle


class RecordingModel(BundleModel):
    """The real model, noting the rows of each request it records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: list[int] = []

    def record(
        self,
        served: Served,
        context: RequestContext,
        inputs: Row | Columns,
        result: TransformResult,
        codes: int | np.ndarray | None,
        values: float | np.ndarray,
        raw: np.ndarray,
    ) -> str | None:
        self.recorded.append(int(raw.shape[0]))
        return super().record(served, context, inputs, result, codes, values, raw)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("record") / "churn", trees=5)


def _rows(path: Path, count: int) -> list[dict[str, Any]]:
    schema = load_bundle(path).schema
    return [
        {f.name: (float(i) if f.is_numeric else f.categories[0]) for f in schema.features}
        for i in range(count)
    ]


def _totals(model: str) -> tuple[float, float, float]:
    """Rows counted by label, by predicted value, and feature values counted into bins."""
    predictions = values = bins = 0.0
    for line in generate_latest().decode().splitlines():
        if f'model="{model}"' not in line:
            continue
        number = float(line.rsplit(" ", 1)[1])
        if line.startswith("kubeloop_predictions_total{"):
            predictions += number
        elif line.startswith("kubeloop_prediction_value_count{"):
            values += number
        elif line.startswith("kubeloop_feature_bin_total{"):
            bins += number
    return predictions, values, bins


@pytest.mark.parametrize("case", ["v1 one row", "v1 three rows", "v1 one row, number", "v2"])
def test_record_counts_each_row_once_on_both_paths(case: str, bundle: Path, tmp_path: Path) -> None:
    name = f"record-{case.replace(' ', '-').replace(',', '')}"
    log = PayloadLogger(tmp_path / "payload.jsonl")
    model = RecordingModel(name, lambda: bundle, payload_log=log)
    assert model.load()
    served = model.served
    assert served is not None
    features = served.bundle.schema.features
    rows = _rows(bundle, 3 if case == "v1 three rows" else 1)
    payload: Any = {"instances": rows}
    if case == "v1 one row, number":  # a category sent as a number: the columnar path
        categorical = next(f.name for f in features if not f.is_numeric)
        rows[0][categorical] = 7
    if case == "v2":
        rows = _rows(bundle, 2)
        payload = InferRequest(
            name,
            [
                InferInput(
                    f.name,
                    [2],
                    "FP64" if f.is_numeric else "BYTES",
                    [row[f.name] for row in rows],
                )
                for f in features
            ],
        )
    fast = model._one_row(served, RequestContext.of(payload, None), payload) is not None
    assert fast == (case == "v1 one row")
    before = _totals(name)

    model.predict(payload)

    assert model.recorded == [len(rows)]
    after = _totals(name)
    assert after[0] - before[0] == len(rows)
    assert after[1] - before[1] == len(rows)
    assert after[2] - before[2] == len(rows) * len(features)
    log.close()
    (line,) = (tmp_path / "payload.jsonl").read_text().splitlines()
    logged = json.loads(line)
    assert logged["rows"] == len(rows)
    assert all(len(values) == len(rows) for values in logged["inputs"].values())
    assert [len(values) for values in logged["outputs"].values()] == [len(rows)] * 2


def test_fast_path_and_columnar_path_record_alike(bundle: Path, tmp_path: Path) -> None:
    """One row through each path: the same payload log line (but for its time and id)."""
    lines = []
    for path in ("fast", "columnar"):
        log = PayloadLogger(tmp_path / f"{path}.jsonl")
        # XGBoost predicts on both paths: the forest, compiled in the background after a load,
        # agrees with it only to 1e-5, and would serve whichever request came after it.
        model = RecordingModel(
            f"record-alike-{path}", lambda: bundle, payload_log=log, hold_forest=True
        )
        assert model.load()
        served = model.served
        assert served is not None
        (row,) = _rows(bundle, 1)
        if path == "fast":
            model.predict({"instances": [row]}, {"x-request-id": "same"})
        else:  # the V2 request of the same row takes the columnar path
            tensors = [
                InferInput(f.name, [1], "FP64" if f.is_numeric else "BYTES", [row[f.name]])
                for f in served.bundle.schema.features
            ]
            model.predict(InferRequest(model.name, tensors, request_id="same"))
        log.close()
        logged = json.loads((tmp_path / f"{path}.jsonl").read_text())
        assert logged.pop("request_id") == "same"
        del logged["ts"], logged["model"]
        lines.append(logged)
        assert model.recorded == [1]
    assert lines[0] == lines[1]
