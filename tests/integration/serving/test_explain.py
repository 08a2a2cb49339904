"""Explanations through a real ``kubeloop serve`` (V1 ``:explain``, V2 ``explain``) and the CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from kubeloop.data.synth import generate_churn
from tests.integration.serving.conftest import KUBELOOP, Server, build_bundle, start_server

pytestmark = pytest.mark.integration


def _instances(bundle: Path, rows: int, seed: int = 5) -> list[dict[str, Any]]:
    from kubeloop.bundle import load_bundle

    schema = load_bundle(bundle).schema
    names = schema.feature_names
    frame = generate_churn(rows, seed=seed)[list(names)]
    for name in schema.numeric_features:  # blank text is missing, as in training
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    frame = frame.astype(object).where(frame.notna(), None)
    return [dict(zip(names, row, strict=True)) for row in frame.itertuples(index=False)]


def _post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30)


def test_v1_explain_answers_the_documented_shape(server: Server, small_bundle: Path) -> None:
    from kubeloop.bundle import load_bundle

    instances = _instances(small_bundle, 25)
    reply = _post(server, "/v1/models/churn:explain", {"instances": instances})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    bundle = load_bundle(small_bundle)
    assert set(body) == {"explanations", "model_version"}
    assert body["model_version"] == bundle.version
    predicted = _post(server, "/v1/models/churn:predict", {"instances": instances}).json()
    assert len(body["explanations"]) == len(instances)
    for item, prediction in zip(body["explanations"], predicted["predictions"], strict=True):
        assert set(item) == {"contributions", "bias", "margin", "probability"}
        assert list(item["contributions"]) == list(bundle.schema.feature_names)
        total = sum(item["contributions"].values()) + item["bias"]
        assert abs(total - item["margin"]) <= 1e-5
        assert abs(item["probability"] - prediction["probability"]) <= 1e-6


def test_single_row_explain_matches_the_batch_answer(server: Server, small_bundle: Path) -> None:
    instances = _instances(small_bundle, 3, seed=9)
    batch = _post(server, "/v1/models/churn:explain", {"instances": instances}).json()
    for i, instance in enumerate(instances):
        one = _post(server, "/v1/models/churn:explain", {"instances": [instance]}).json()
        (item,) = one["explanations"]
        want = batch["explanations"][i]
        assert item["contributions"] == pytest.approx(want["contributions"], abs=1e-9)
        assert item["margin"] == pytest.approx(want["margin"], abs=1e-9)


def test_explain_refuses_bad_input_like_predict(server: Server, small_bundle: Path) -> None:
    (instance,) = _instances(small_bundle, 1)
    name = next(k for k, v in instance.items() if isinstance(v, float))
    bad = {**instance, name: "lots"}
    for verb in ("predict", "explain"):
        reply = _post(server, f"/v1/models/churn:{verb}", {"instances": [bad]})
        assert reply.status_code == 400, reply.text
        assert name in reply.text
    missing = {k: v for k, v in instance.items() if k != name}
    reply = _post(server, "/v1/models/churn:explain", {"instances": [missing]})
    assert reply.status_code == 400 and name in reply.text
    assert _post(server, "/v1/models/churn:explain", {"rows": []}).status_code == 400


def _v2_body(instances: list[dict[str, Any]], bundle: Path, **extra: Any) -> dict[str, Any]:
    from kubeloop.bundle import load_bundle

    schema = load_bundle(bundle).schema
    inputs = [
        {
            "name": f.name,
            "shape": [len(instances)],
            "datatype": "FP64" if f.is_numeric else "BYTES",
            "data": [row[f.name] for row in instances],
        }
        for f in schema.features
    ]
    return {"inputs": inputs, **extra}


def test_v2_explain_parameter_adds_output_tensors(server: Server, small_bundle: Path) -> None:
    from kubeloop.bundle import load_bundle

    features = load_bundle(small_bundle).schema.feature_names
    instances = _instances(small_bundle, 12)
    plain = _post(server, "/v2/models/churn/infer", _v2_body(instances, small_bundle)).json()
    assert [o["name"] for o in plain["outputs"]] == ["label", "probability"]
    body = _v2_body(instances, small_bundle, parameters={"explain": True})
    reply = _post(server, "/v2/models/churn/infer", body)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert list(outputs) == ["label", "probability", "contributions", "bias", "margin"]
    assert outputs["contributions"]["shape"] == [12, len(features)]
    assert outputs["bias"]["shape"] == outputs["margin"]["shape"] == [12]
    flat = outputs["contributions"]["data"]
    v1 = _post(server, "/v1/models/churn:explain", {"instances": instances}).json()
    for i, item in enumerate(v1["explanations"]):
        row = flat[i * len(features) : (i + 1) * len(features)]
        assert row == pytest.approx(list(item["contributions"].values()), abs=1e-9)
        assert abs(sum(row) + outputs["bias"]["data"][i] - outputs["margin"]["data"][i]) <= 1e-5
    assert outputs["probability"]["data"] == plain["outputs"][1]["data"]
    # asking for the output by name is the same request
    named = _v2_body(instances, small_bundle, outputs=[{"name": "contributions"}])
    only = _post(server, "/v2/models/churn/infer", named).json()["outputs"]
    assert [o["name"] for o in only] == ["contributions"]
    assert only[0]["data"] == pytest.approx(flat, abs=1e-9)


@pytest.fixture(scope="module")
def multiclass_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("multiclass")
    bundle = build_bundle(directory / "bundle", task="multiclass", name="contract")
    running = start_server(
        ["--model-dir", str(bundle)], name="contract", log=directory / "server.log"
    )
    running.extra["bundle"] = bundle
    yield running
    running.stop()


def test_multiclass_explanations_are_per_class(multiclass_server: Server) -> None:
    from kubeloop.bundle import load_bundle

    bundle = Path(str(multiclass_server.extra["bundle"]))
    schema = load_bundle(bundle).schema
    instances = _instances(bundle, 8)
    reply = _post(multiclass_server, "/v1/models/contract:explain", {"instances": instances})
    assert reply.status_code == 200, reply.text
    predicted = _post(multiclass_server, "/v1/models/contract:predict", {"instances": instances})
    for item, prediction in zip(
        reply.json()["explanations"], predicted.json()["predictions"], strict=True
    ):
        assert set(item) == {"contributions", "bias", "margin", "probability"}
        assert list(item["contributions"]) == list(schema.classes)
        for cls in schema.classes:
            assert list(item["contributions"][cls]) == list(schema.feature_names)
            total = sum(item["contributions"][cls].values()) + item["bias"][cls]
            assert abs(total - item["margin"][cls]) <= 1e-5
        assert item["probability"] == pytest.approx(prediction["probability"], abs=1e-6)
    body = _v2_body(instances, bundle, parameters={"explain": True})
    outputs = {
        o["name"]: o
        for o in _post(multiclass_server, "/v2/models/contract/infer", body).json()["outputs"]
    }
    assert outputs["contributions"]["shape"] == [8, 3, len(schema.feature_names)]
    assert outputs["margin"]["shape"] == [8, 3]


def test_cli_explain_prints_the_server_answer(
    server: Server, small_bundle: Path, tmp_path: Path
) -> None:
    import pandas as pd

    instances = _instances(small_bundle, 6)
    rows = tmp_path / "rows.csv"
    frame = pd.DataFrame(instances)
    frame.insert(0, "customer", [f"c{i}" for i in range(len(frame))])
    bad = frame.copy().iloc[:1]
    numeric = next(k for k, v in instances[0].items() if isinstance(v, float))
    bad[numeric] = "lots"
    pd.concat([frame.iloc[:3], bad, frame.iloc[3:]]).to_csv(rows, index=False)
    done = subprocess.run(
        [str(KUBELOOP), "explain", "--model-dir", str(small_bundle), "--data", str(rows)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert f"row 3 refused: Feature {numeric!r} takes a number" in done.stderr
    served = _post(server, "/v1/models/churn:explain", {"instances": instances}).json()
    assert printed["model_version"] == served["model_version"]
    assert len(printed["explanations"]) == len(instances)
    for mine, theirs in zip(printed["explanations"], served["explanations"], strict=True):
        assert mine["contributions"] == pytest.approx(theirs["contributions"], abs=1e-6)
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-6)


def test_cli_explain_regression(tmp_path: Path) -> None:
    from kubeloop.data.synth import generate_regression

    bundle = build_bundle(tmp_path / "bundle", task="regression", name="reg")
    rows = tmp_path / "rows.parquet"
    generate_regression(10, seed=4).to_parquet(rows)
    done = subprocess.run(
        [str(KUBELOOP), "explain", "--model-dir", str(bundle), "--data", str(rows)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    for item in json.loads(done.stdout)["explanations"]:
        assert set(item) == {"contributions", "bias", "margin", "prediction"}
        assert abs(sum(item["contributions"].values()) + item["bias"] - item["margin"]) <= 1e-5
        assert item["prediction"] == pytest.approx(item["margin"], abs=1e-5)
