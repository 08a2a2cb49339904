"""``kubeloop predict`` through the real CLI, checked row by row against a real server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle import load_bundle
from kubeloop.data.synth import generate_churn, generate_regression
from tests.integration.serving.conftest import KUBELOOP, Server, build_bundle

pytestmark = pytest.mark.integration


def _predict(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBELOOP), "predict", *args], capture_output=True, text=True, timeout=300
    )


def _server_predictions(server: Server, frame: pd.DataFrame, schema: Any) -> Any:
    """The server's V1 answers for the rows of ``frame`` (blank text in a numeric column is
    missing, as in training and in ``kubeloop predict``)."""
    names = schema.feature_names
    frame = frame.copy()
    for name in schema.numeric_features:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    rows = frame[list(names)].astype(object).where(frame[list(names)].notna(), None)
    instances = [dict(zip(names, r, strict=True)) for r in rows.itertuples(index=False)]
    reply = httpx.post(
        f"{server.url}/v1/models/{server.name}:predict", json={"instances": instances}, timeout=60
    )
    assert reply.status_code == 200, reply.text
    return reply.json()["predictions"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_predict_equals_the_server_row_by_row(
    server: Server, small_bundle: Path, tmp_path: Path, fmt: str
) -> None:
    from kubeloop.bundle import load_bundle

    schema = load_bundle(small_bundle).schema
    frame = generate_churn(1_000, seed=11)  # has an id column, the target, missing values
    numeric = schema.numeric_features[0]
    data = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        frame.to_csv(data, index=False)
    else:
        frame.to_parquet(data, index=False, row_group_size=128)
    out = tmp_path / f"out.{fmt}"
    done = _predict(
        "--model-dir", str(small_bundle), "--data", str(data), "--out", str(out),
        "--keep", "customer_id", "--chunk-rows", "300",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ignored (not model inputs)" in done.stderr and "churned" in done.stderr
    assert "rejected 0 rows" in done.stdout
    assert "drift vs the bundle's reference" in done.stdout
    result = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert list(result.columns) == ["customer_id", "label", "probability"]
    assert len(result) == len(frame)
    assert result["customer_id"].astype(str).tolist() == frame["customer_id"].astype(str).tolist()
    served = _server_predictions(server, frame, schema)
    assert result["label"].astype(str).tolist() == [p["label"] for p in served]
    np.testing.assert_allclose(
        result["probability"].to_numpy(), [p["probability"] for p in served], atol=1e-6, rtol=0
    )
    assert numeric in schema.feature_names


def test_bad_rows_go_to_rejects_with_the_server_message(
    server: Server, small_bundle: Path, tmp_path: Path
) -> None:
    from kubeloop.bundle import load_bundle

    schema = load_bundle(small_bundle).schema
    numeric = schema.numeric_features[0]
    frame = generate_churn(200, seed=12)
    text = frame.astype(object)
    text.loc[7, numeric] = "lots"
    text.loc[150, numeric] = "inf"
    data = tmp_path / "in.csv"
    text.to_csv(data, index=False)
    out = tmp_path / "out.csv"
    done = _predict(
        "--model-dir", str(small_bundle), "--data", str(data), "--out", str(out),
        "--chunk-rows", "64", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "rejected 2 rows" in done.stdout
    result = pd.read_csv(out)
    assert len(result) == 200
    assert result.loc[[7, 150], "label"].isna().all()
    assert result.loc[[7, 150], "probability"].isna().all()
    assert result.drop(index=[7, 150])["probability"].notna().all()
    rejects = pd.read_csv(f"{out}.rejects.csv")
    assert rejects["row"].tolist() == [7, 150]
    assert rejects.loc[0, numeric] == "lots"
    # the same message the server answers with its 400
    (instance,) = (
        text.loc[[7], list(schema.feature_names)]
        .astype(object)
        .where(text.loc[[7], list(schema.feature_names)].notna(), None)
        .to_dict("records")
    )
    reply = httpx.post(
        f"{server.url}/v1/models/churn:predict", json={"instances": [instance]}, timeout=30
    )
    assert reply.status_code == 400
    assert rejects.loc[0, "reason"] in reply.text
    assert "infinite" in rejects.loc[1, "reason"]
    # the good rows equal the server's answers
    good = frame.drop(index=[7, 150])
    served = _server_predictions(server, good, schema)
    np.testing.assert_allclose(
        result.drop(index=[7, 150])["probability"].to_numpy(),
        [p["probability"] for p in served],
        atol=1e-6,
    )


def test_missing_feature_column_fails_clearly(small_bundle: Path, tmp_path: Path) -> None:
    frame = generate_churn(50, seed=1).drop(columns=["tenure_months"])
    data = tmp_path / "in.csv"
    frame.to_csv(data, index=False)
    done = _predict(
        "--model-dir", str(small_bundle), "--data", str(data), "--out", str(tmp_path / "o.csv")
    )
    assert done.returncode == 2
    assert "no column 'tenure_months'" in done.stderr
    done = _predict(
        "--model-dir", str(small_bundle), "--data", str(data).replace(".csv", ".txt"),
        "--out", str(tmp_path / "o.csv"),
    )  # fmt: skip
    assert done.returncode == 2 and "error:" in done.stderr


def test_registry_champion_regression_and_fsspec_url(tmp_path: Path) -> None:
    """--registry/--model scores with the champion; URLs go through fsspec (memory:// here)."""
    from kubeloop.batch import BatchOptions, score_table
    from kubeloop.registry import Registry

    bundle = build_bundle(tmp_path / "bundle", task="regression", name="reg")
    registry = Registry(tmp_path / "registry")
    version = registry.register(bundle)
    registry.promote("reg", version)
    frame = generate_regression(500, seed=3)
    data = tmp_path / "in.parquet"
    frame.to_parquet(data)
    out = tmp_path / "out.csv"
    done = _predict(
        "--registry", str(tmp_path / "registry"), "--model", "reg", "--data", str(data),
        "--out", str(out), "--keep", "target",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = pd.read_csv(out)
    assert list(result.columns) == ["target", "prediction"]
    from kubeloop.bundle import load_bundle

    loaded = load_bundle(registry.fetch("reg"))
    from kubeloop.features import FastTransform

    want = loaded.model.predict(FastTransform(loaded.preprocessor).transform(frame))
    np.testing.assert_allclose(result["prediction"].to_numpy(), want, rtol=1e-9)

    import fsspec

    with fsspec.open("memory://batch/in.parquet", "wb") as handle:
        frame.to_parquet(handle)
    outcome = score_table(
        BatchOptions(
            data="memory://batch/in.parquet", out="memory://batch/out.parquet", model_dir=bundle
        )
    )
    assert outcome.rows == 500 and outcome.rejected == 0
    with fsspec.open("memory://batch/out.parquet", "rb") as handle:
        remote = pd.read_parquet(handle)
    np.testing.assert_allclose(remote["prediction"].to_numpy(), want, rtol=1e-9)


def test_the_kfp_component_scores_as_the_cli(small_bundle: Path, tmp_path: Path) -> None:
    """The batch-scoring step, run by ``kfp.local`` in its own process: the CLI's output."""
    from kfp import local

    from kubeloop.pipelines.components.batch import build_batch_component

    data = tmp_path / "rows.csv"
    generate_churn(300, seed=7).to_csv(data, index=False)
    cli = tmp_path / "cli.parquet"
    done = _predict("--model-dir", str(small_bundle), "--data", str(data), "--out", str(cli))
    assert done.returncode == 0, done.stderr
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    out = tmp_path / "step.parquet"
    task = build_batch_component()(data=str(data), out=str(out), model_dir=str(small_bundle))
    assert task.outputs["Output"] == load_bundle(small_bundle).version
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(cli))
    report = json.loads(Path(task.outputs["report"].path).read_text())
    assert report["rows"] == 300 and report["rejected"] == 0
