"""The payload log as the server writes it, delayed labels, and the retraining data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kubeloop.errors import DataValidationError
from kubeloop.monitoring.payload import read_labels, read_payload_log
from kubeloop.monitoring.retrain import build_retrain_data
from kubeloop.serving._payload_log import PayloadLogger


def _log(path: Path, *, max_bytes: int = 10_000_000) -> None:
    logger = PayloadLogger(path, max_bytes=max_bytes)
    logger.log(
        model="churn",
        version="v1",
        request_id="r1",
        rows=2,
        inputs={"tenure": np.array([3.0, np.nan]), "contract": ["One year", None]},
        outputs={"label": ["Yes", "No"], "probability": np.array([0.8, 0.1])},
    )
    logger.log(
        model="churn",
        version="v2",
        request_id="r2",
        rows=1,
        inputs={"tenure": np.array([7.0]), "contract": ["Two year"]},
        outputs={"label": ["No"], "probability": np.array([0.3])},
    )
    logger.log(
        model="other",
        version="v1",
        request_id="r3",
        rows=1,
        inputs={"x": np.array([1.0])},
        outputs={"prediction": np.array([4.5])},
    )
    logger.close()


def test_read_payload_log_flattens_requests_to_rows(tmp_path: Path) -> None:
    path = tmp_path / "payload.jsonl"
    _log(path)
    frame = read_payload_log(path, model="churn")
    assert frame[["request_id", "row", "version"]].values.tolist() == [
        ["r1", 0, "v1"],
        ["r1", 1, "v1"],
        ["r2", 0, "v2"],
    ]
    assert frame["prediction"].tolist() == [0.8, 0.1, 0.3]
    assert np.isnan(frame["tenure"].iloc[1]) and frame["contract"].iloc[1] is None
    assert len(read_payload_log(path, model="churn", version="v2")) == 1
    assert read_payload_log(path, model="other")["prediction"].tolist() == [4.5]
    assert read_payload_log(path, since=4_000_000_000.0).empty


def test_read_payload_log_includes_the_rotated_part(tmp_path: Path) -> None:
    path = tmp_path / "payload.jsonl"
    _log(path, max_bytes=300)  # every record rotates the previous one to payload.jsonl.1
    assert (tmp_path / "payload.jsonl.1").exists()
    assert read_payload_log(path)["request_id"].tolist() == ["r2", "r3"]


def test_read_labels_defaults_row_and_requires_columns(tmp_path: Path) -> None:
    good = tmp_path / "labels.csv"
    pd.DataFrame({"request_id": ["r1", "r2"], "label": ["Yes", "No"]}).to_csv(good, index=False)
    assert read_labels(good)["row"].tolist() == [0, 0]
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"request_id": "r1", "row": 1, "label": "No"}\n')
    assert read_labels(jsonl).values.tolist() == [["r1", 1, "No"]]
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": ["r1"], "label": ["Yes"]}).to_csv(bad, index=False)
    with pytest.raises(DataValidationError, match="request_id"):
        read_labels(bad)


def test_build_retrain_data_appends_labelled_rows(tmp_path: Path) -> None:
    reference = tmp_path / "reference.csv"
    pd.DataFrame(
        {"customer_id": ["a", "b"], "tenure": [1.0, 2.0], "churned": ["No", "Yes"]}
    ).to_csv(reference, index=False)
    assert build_retrain_data(
        str(reference), target="churned", recent=None, out=tmp_path / "x.csv"
    ) == (str(reference), 0)
    recent = pd.DataFrame(
        {
            "request_id": ["r"],
            "row": [0],
            "ts": [1.0],
            "version": ["v1"],
            "prediction": [0.4],
            "tenure": [9.0],
            "label": ["Yes"],
        }
    )
    path, added = build_retrain_data(
        str(reference), target="churned", recent=recent, out=tmp_path / "retrain.csv"
    )
    combined = pd.read_csv(path)
    assert added == 1 and combined.columns.tolist() == ["tenure", "churned"]
    assert combined.values.tolist() == [[1.0, "No"], [2.0, "Yes"], [9.0, "Yes"]]
