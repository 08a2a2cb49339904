"""The RayJob entrypoint end to end, in-process: object storage in, real Ray Train, storage out.

On a cluster ``python -m kubeloop.pipelines.steps.train`` runs on the RayJob's head; here it runs in
the test process against the session's Ray, with fsspec's in-memory filesystem standing in for
S3 (the same fsspec calls s3fs serves).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pytest

from kubeloop.bundle.models import load_model
from kubeloop.pipelines.steps.data import ingest, prepare_features
from kubeloop.pipelines.steps.rayjob import download_dir, upload_dir
from kubeloop.pipelines.steps.train import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_rayjob_entrypoint_trains_from_storage(
    ray_session: None, churn_csv: Path, tmp_path: Path
) -> None:
    bucket = f"memory://rayjob-{uuid.uuid4().hex[:8]}"
    ingest(str(churn_csv), target="churned", task="auto", out=tmp_path / "splits")
    prepare_features(tmp_path / "splits", out=tmp_path / "features")
    upload_dir(tmp_path / "splits", f"{bucket}/splits")
    upload_dir(tmp_path / "features", f"{bucket}/features")

    argv = ["--splits", f"{bucket}/splits", "--features", f"{bucket}/features",
            "--out", f"{bucket}/out.rayjob", "--workers", "1", "--num-boost-round", "20",
            "--candidates", "xgboost,linear"]  # fmt: skip
    assert main(argv) == 0

    out = download_dir(f"{bucket}/out.rayjob", tmp_path / "candidates")
    index = json.loads((out / "candidates.json").read_text())
    assert [c["name"] for c in index["candidates"]] == ["xgboost", "linear"]
    model = load_model(out / "xgboost", kind="xgboost", task="classification", n_classes=2)
    assert model.kind == "xgboost"
    fsspec.filesystem("memory").rm("/" + bucket.removeprefix("memory://"), recursive=True)
