"""`kubeloop train` end to end: real Ray (2 workers) or Ray Train's local mode (the default with no
Ray cluster), real files, real bundles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle import load_bundle
from kubeloop.cli import main

CLASSIFICATION_KEYS = ("roc_auc", "pr_auc", "f1", "accuracy", "precision", "recall", "log_loss")
REGRESSION_KEYS = ("rmse", "mae", "r2")


def _train(data: Path, target: str, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--target", target, "--out", str(out), *extra])


def test_train_generated_churn_writes_bundle_and_table(
    ray_session: None, churn_frame: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "churn.parquet"
    churn_frame.to_parquet(data)
    out = tmp_path / "bundle"

    assert _train(data, "churned", out, "--workers", "2", "--seed", "3") == 0

    printed = capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(CLASSIFICATION_KEYS) <= metrics.keys()
    assert metrics["model"] in metrics["candidates"]
    assert set(metrics["candidates"]) == {"xgboost", "linear", "random_forest"}
    for candidate in metrics["candidates"].values():
        assert 0.5 < candidate["roc_auc"] <= 1.0
    assert metrics["roc_auc"] == metrics["candidates"][metrics["model"]]["roc_auc"]
    # The table lists every candidate and marks the chosen one.
    for name in ("xgboost", "linear", "random_forest"):
        assert name in printed.out
    assert f"{metrics['model']} *" in printed.out
    assert "features prepared" in printed.err  # progress went to stderr
    assert "engine: 2 Ray Train worker(s) x 1 CPU" in printed.err  # --workers 2 is obeyed
    bundle = load_bundle(out)
    assert bundle.schema.target == "churned"
    assert "customer_id" not in bundle.schema.feature_names  # id-like column dropped


def _bad_frames() -> dict[str, tuple[Any, str, str]]:
    """name -> (frame or raw bytes, target, message the error must contain)."""
    rng = np.random.default_rng(0)
    good = pd.DataFrame({"x": rng.normal(size=200), "y": rng.choice(["a", "b"], size=200)})
    return {
        "missing-target": (good, "label", "'label'"),
        "one-class": (good.assign(y="a"), "y", "one class"),
        "too-few-rows": (good.head(10), "y", "rows"),
        "all-null-column": (good.assign(empty=np.nan), "y", "'empty'"),
        "unreadable-file": (b"\x00\x01 this is not a parquet file", "y", "parquet"),
        "list-column": (good.assign(tags=[[1, 2]] * 200), "y", "Column 'tags' holds lists"),
        "struct-column": (
            good.assign(address=[{"city": "x", "zip": 1}] * 200),
            "y",
            "Column 'address' holds structs",
        ),
        "binary-column": (good.assign(blob=[b"\x00"] * 200), "y", "Column 'blob' holds binary"),
        "case-labels": (
            good.assign(y=rng.choice(["no", "NO", "Yes", "YES", "yes"], size=200)),
            "y",
            "'NO', 'no'; 'YES', 'Yes', 'yes'. They would be trained as separate classes",
        ),
    }


@pytest.mark.parametrize("case", sorted(_bad_frames()))
def test_bad_data_exits_nonzero_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, target, message = _bad_frames()[case]
    data = tmp_path / "data.parquet"
    if isinstance(content, bytes):
        data.write_bytes(content)
    else:
        content.to_parquet(data)
    out = tmp_path / "out"

    assert _train(data, target, out) == 2

    err = capsys.readouterr().err
    assert message.lower() in err.lower()
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet"]  # no temp leftovers


@pytest.mark.parametrize(
    ("case", "target", "message"),
    [
        ("missing-target", "nope", "'nope'"),
        ("list-column", "y", "error: Column 'tags' holds lists (e.g. array([1, 2]))"),
    ],
)
def test_console_script_exit_status(tmp_path: Path, case: str, target: str, message: str) -> None:
    """The installed entry point really exits 2 (not just returns it), one line, no traceback."""
    frame = pd.DataFrame({"x": range(100), "y": ["a", "b"] * 50})
    if case == "list-column":  # a Parquet list column (it used to end in a traceback, exit 1)
        data = tmp_path / "data.parquet"
        frame.assign(tags=[[1, 2]] * 100).to_parquet(data)
    else:
        data = tmp_path / "data.csv"
        frame.to_csv(data, index=False)
    command = [str(Path(sys.executable).with_name("kubeloop")), "train", "--data", str(data)]
    done = subprocess.run(
        [*command, "--target", target, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_normalize_labels_trains_one_class_per_spelling_group(
    ray_session: None, churn_frame: pd.DataFrame, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    frame = churn_frame.copy()
    frame["churned"] = [
        rng.choice(["yes", "Yes", "YES", " yes"]) if v == "Yes" else rng.choice(["No", "no "])
        for v in frame["churned"]
    ]
    data = tmp_path / "labels.csv"
    frame.to_csv(data, index=False)
    assert _train(data, "churned", tmp_path / "refused") == 2
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "bundle"
    assert _train(data, "churned", out, "--normalize-labels", "--name", "labels") == 0
    bundle = load_bundle(out)
    assert len(bundle.schema.classes) == 2
    assert {c.casefold() for c in bundle.schema.classes} == {"no", "yes"}


@pytest.mark.parametrize("name", ["../../tmp/x", ".hidden", "a/b"])
def test_bad_model_name_is_refused_before_training(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.csv"
    pd.DataFrame({"x": range(100), "y": ["a", "b"] * 50}).to_csv(data, index=False)
    with pytest.raises(SystemExit) as exited:
        _train(data, "y", tmp_path / "out", "--name", name)
    assert exited.value.code == 2
    assert "argument --name: model name" in capsys.readouterr().err
    bad_stem = tmp_path / "my data.csv"
    bad_stem.write_text(data.read_text())
    assert _train(bad_stem, "y", tmp_path / "out") == 2
    assert "the data file's stem 'my data', is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_existing_output_directory_is_refused(tmp_path: Path, churn_frame: pd.DataFrame) -> None:
    data = tmp_path / "churn.csv"
    churn_frame.to_csv(data, index=False)
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _train(data, "churned", out) == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_telco_churn_reaches_published_auc(
    telco_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "telco"
    assert _train(telco_csv, "Churn", out) == 0  # workers=auto: in this process, no Ray start
    err = capsys.readouterr().err
    assert "engine: in this process (Ray Train local mode" in err
    assert "workers=auto and no Ray cluster configured" in err
    assert json.loads((out / "manifest.json").read_text())["params"]["workers"] == "auto"
    metrics = json.loads((out / "metrics.json").read_text())
    print(
        "telco test metrics:",
        {k: metrics[k] for k in CLASSIFICATION_KEYS},
        "model",
        metrics["model"],
    )
    assert metrics["roc_auc"] >= 0.835
    schema = json.loads((out / "schema.json").read_text())
    assert "customerID" not in [f["name"] for f in schema["features"]]


def test_california_housing_rmse(housing_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "housing"
    assert _train(housing_csv, "median_house_value", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    print(
        "housing test rmse by candidate:", {k: v["rmse"] for k, v in metrics["candidates"].items()}
    )
    assert set(REGRESSION_KEYS) <= metrics.keys()
    assert metrics["candidates"]["xgboost"]["rmse"] <= 48_000
    assert metrics["candidates"]["linear"]["rmse"] <= 72_000
    assert metrics["rmse"] <= 48_000
