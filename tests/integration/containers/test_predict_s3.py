"""``kubeloop predict`` with the model, the input and the output on a real S3 server.

The CLI runs as a user would run it on a cluster: a fresh process, endpoint and credentials
from the standard AWS variables, the champion fetched from an ``s3://`` registry.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle import load_bundle
from kubeloop.data.synth import generate_churn
from kubeloop.features import FastTransform
from kubeloop.registry import Registry
from tests.integration.serving.conftest import KUBELOOP, build_bundle

from .conftest import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_predict_reads_and_writes_s3_with_the_registry_champion(
    s3_env: S3Server, tmp_path: Path
) -> None:
    bucket = s3_env.new_bucket()
    registry = Registry(f"s3://{bucket}/registry")
    version = registry.register(build_bundle(tmp_path / "bundle"))
    registry.promote("churn", version)
    frame = generate_churn(3_000, seed=11)
    frame["tenure_months"] = frame["tenure_months"].astype(object)
    frame.loc[[5, 17], "tenure_months"] = "soon"  # two rows the server would refuse
    fs = s3_env.fs()
    with fs.open(f"{bucket}/in/rows.csv", "wb") as handle:
        frame.to_csv(handle, index=False)

    done = subprocess.run(
        [str(KUBELOOP), "predict", "--registry", f"s3://{bucket}/registry", "--model", "churn",
         "--data", f"s3://{bucket}/in/rows.csv", "--out", f"s3://{bucket}/out/scored.parquet",
         "--keep", "customer_id", "--no-progress"],
        capture_output=True, text=True, timeout=240, env={**os.environ, **s3_env.env()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    with fs.open(f"{bucket}/out/scored.parquet", "rb") as handle:
        scored = pd.read_parquet(handle)
    assert len(scored) == len(frame)
    assert scored["customer_id"].tolist() == frame["customer_id"].tolist()
    assert scored.loc[[5, 17], "probability"].isna().all()
    rejects = [p for p in fs.find(f"{bucket}/out") if "reject" in p]
    assert len(rejects) == 1, fs.find(f"{bucket}/out")

    champion = load_bundle(registry.fetch("churn", dest=tmp_path / "champion"))
    good = frame.drop(index=[5, 17])
    for name in champion.schema.numeric_features:  # blank text is missing, as in predict
        good[name] = pd.to_numeric(good[name], errors="coerce")
    matrix = FastTransform(champion.preprocessor).transform(
        good[list(champion.schema.feature_names)]
    )
    np.testing.assert_allclose(
        scored.drop(index=[5, 17])["probability"].to_numpy(),
        champion.model.predict(matrix),
        rtol=1e-6,
    )
