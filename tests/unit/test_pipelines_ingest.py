"""The pipeline's validate step (``stages.ingest``) takes the same label option as ``train``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubeloop.data.synth import generate_churn
from kubeloop.errors import DataValidationError
from kubeloop.pipelines.steps.data import ingest, load_schema


def test_case_variant_labels_are_refused_or_merged_on_request(tmp_path: Path) -> None:
    frame = generate_churn(400, seed=2)
    frame["churned"] = [
        ("YES" if i % 3 else "yes") if v == "Yes" else "No" for i, v in enumerate(frame["churned"])
    ]
    data = tmp_path / "labels.csv"
    frame.to_csv(data, index=False)
    with pytest.raises(DataValidationError, match=r"'YES', 'yes'.*--normalize-labels"):
        ingest(str(data), target="churned", task="auto", out=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

    summary = ingest(
        str(data), target="churned", task="auto", out=tmp_path / "splits", normalize_labels=True
    )
    assert load_schema(tmp_path / "splits").classes == ("No", "YES")
    notes = json.loads((tmp_path / "splits" / "meta.json").read_text())["notes"]
    assert any("were merged" in note for note in notes)
    assert "were merged" in summary
