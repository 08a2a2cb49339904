"""A date column and a capped categorical end to end: ``kubeloop train`` on a CSV of ISO dates
(one not a date) and a store column of many rare values, then the served model over V1, V2 and
gRPC, its drift counters, its explanations and ``kubeloop predict`` on CSV and Parquet
(time-zone-aware timestamps)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle import load_bundle
from kubeloop.bundle.dates import format_seconds
from kubeloop.bundle.schema import OTHER_CATEGORY
from kubeloop.data.synth import generate_seasonal
from kubeloop.features import FastTransform
from tests.integration.serving.conftest import KUBELOOP, Server, start_server

pytestmark = pytest.mark.integration

NAME = "seasonal"
ROWS: list[dict[str, Any]] = [
    {"date": "2024-07-06", "store": "store-0000", "price": 10.0},  # summer Saturday
    {"date": "2024-01-10T08:30:00+01:00", "store": "store-0001", "price": 10.0},  # winter
    {"date": None, "store": "never-seen-store", "price": None},  # imputed; __other__
    {"date": "2023-12-31T23:00:00Z", "store": "store-0002", "price": 9.5},
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dates")
    frame = generate_seasonal(2_000, seed=3)
    frame.loc[7, "date"] = "soon"  # not a date: read as missing, with a note
    data = directory / "seasonal.csv"
    frame.to_csv(data, index=False)
    out = directory / "bundle"
    done = subprocess.run(
        [str(KUBELOOP), "train", "--data", str(data), "--target", "busy", "--out", str(out),
         "--name", NAME],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Column 'date' holds dates (ISO 8601) but 1 values are not dates (e.g. 'soon')" in (
        done.stderr
    )
    assert f"became '{OTHER_CATEGORY}'" in done.stderr
    return out


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("dates-server")
    running = start_server(["--model-dir", str(bundle)], name=NAME, log=directory / "log")
    yield running
    running.stop()


def _v1(server: Server, verb: str, rows: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{NAME}:{verb}", json={"instances": rows}, timeout=30)


def _probabilities(server: Server, rows: list[dict[str, Any]]) -> list[float]:
    reply = _v1(server, "predict", rows)
    assert reply.status_code == 200, reply.text
    return [p["probability"] for p in reply.json()["predictions"]]


def test_the_bundle_holds_a_datetime_feature_and_an_other_category(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    features = {f.name: f for f in loaded.schema.features}
    assert features["date"].kind == "datetime"
    assert features["store"].has_other and len(features["store"].categories) <= 101
    date_step = loaded.preprocessor.datetime[0]
    assert date_step.part_names == ("year", "month", "day", "weekday", "dayofyear", "value")
    assert loaded.reference_profile["features"]["date"]["kind"] == "datetime"
    assert loaded.reference_profile["features"]["store"]["categories"][OTHER_CATEGORY] > 0
    assert loaded.metrics["roc_auc"] > 0.8  # the calendar carries the label


def test_v1_v2_and_grpc_agree_and_follow_the_seasons(server: Server, bundle: Path) -> None:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    from tests.integration.serving._grpc_raw import call

    v1 = _probabilities(server, ROWS)
    assert v1[0] > 0.5 > v1[1]  # a summer Saturday is busy, a winter Wednesday is not
    one_by_one = [_probabilities(server, [row])[0] for row in ROWS]  # the single-row path
    assert one_by_one == pytest.approx(v1, abs=1e-6)
    loaded = load_bundle(bundle)
    columns = {name: [row[name] for row in ROWS] for name in ("date", "store")}
    prices = np.array([np.nan if r["price"] is None else r["price"] for r in ROWS])
    matrix = FastTransform(loaded.preprocessor).transform_columns({**columns, "price": prices})
    local = loaded.model.predict(matrix.matrix)
    assert v1 == pytest.approx(local.tolist(), abs=1e-6)

    body = {
        "inputs": [
            {"name": "date", "shape": [len(ROWS)], "datatype": "BYTES",
             "data": [r["date"] for r in ROWS]},
            {"name": "store", "shape": [len(ROWS)], "datatype": "BYTES",
             "data": [r["store"] for r in ROWS]},
            {"name": "price", "shape": [len(ROWS)], "datatype": "FP64",
             "data": [r["price"] for r in ROWS]},
        ]
    }  # fmt: skip
    reply = httpx.post(f"{server.url}/v2/models/{NAME}/infer", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o["data"] for o in reply.json()["outputs"]}
    assert outputs["probability"] == pytest.approx(v1, abs=1e-6)

    row = ROWS[1]
    request = pb.ModelInferRequest(model_name=NAME)
    date = request.inputs.add(name="date", datatype="BYTES", shape=[1])
    date.contents.bytes_contents.append(row["date"].encode())
    store = request.inputs.add(name="store", datatype="BYTES", shape=[1])
    store.contents.bytes_contents.append(row["store"].encode())
    price = request.inputs.add(name="price", datatype="FP64", shape=[1])
    price.contents.fp64_contents.append(row["price"])
    code, details, message = call(server.grpc_url, "ModelInfer", request)
    assert code.name == "OK", details
    names = [o.name for o in message.outputs]
    probability = message.outputs[names.index("probability")]
    values = probability.contents.fp64_contents or np.frombuffer(
        message.raw_output_contents[names.index("probability")], dtype=np.float64
    )
    assert float(values[0]) == pytest.approx(v1[1], abs=1e-6)


def test_a_bad_date_is_refused_naming_the_feature(server: Server) -> None:
    for value in ("next tuesday", True):
        reply = _v1(server, "predict", [{**ROWS[0], "date": value}])
        assert reply.status_code == 400
        assert "'date'" in reply.json()["error"] and "ISO-8601" in reply.json()["error"]
    metadata = httpx.get(f"{server.url}/v2/models/{NAME}", timeout=10).json()
    kinds = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    assert kinds == {"date": "BYTES", "store": "BYTES", "price": "FP64"}


def _bins(server: Server, feature: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        sample.labels["bin"]: sample.value
        for family in text_string_to_metric_families(server.metrics())
        for sample in family.samples
        if sample.name == "kubeloop_feature_bin_total" and sample.labels["feature"] == feature
    }


def test_drift_counts_dates_by_time_bins_and_rare_stores_as_other(
    server: Server, bundle: Path
) -> None:
    profile = load_bundle(bundle).reference_profile["features"]
    before_date, before_store = _bins(server, "date"), _bins(server, "store")
    rows = [{"date": "2030-01-01", "store": "brand-new", "price": 1.0}] * 5
    assert _v1(server, "predict", rows).status_code == 200
    assert _v1(server, "predict", rows[:1]).status_code == 200  # the single-row path too
    after_date, after_store = _bins(server, "date"), _bins(server, "store")
    last = str(len(profile["date"]["edges"]))  # after every training date: the last time bin
    assert after_date[last] - before_date.get(last, 0.0) == 6
    assert after_store[OTHER_CATEGORY] - before_store.get(OTHER_CATEGORY, 0.0) == 6
    assert after_store["__unknown__"] == before_store.get("__unknown__", 0.0)


def test_explanations_sum_calendar_parts_back_to_the_date(server: Server) -> None:
    reply = _v1(server, "explain", ROWS)
    assert reply.status_code == 200, reply.text
    for item in reply.json()["explanations"]:
        assert list(item["contributions"]) == ["date", "store", "price"]
        total = sum(item["contributions"].values()) + item["bias"]
        assert abs(total - item["margin"]) <= 1e-5
    summer = reply.json()["explanations"][0]["contributions"]
    assert summer["date"] > 0  # the season pushes a summer Saturday towards busy


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_batch_scoring_equals_the_server(
    server: Server, bundle: Path, tmp_path: Path, fmt: str
) -> None:
    frame = generate_seasonal(300, seed=21)
    frame.loc[4, "store"] = "never-seen-store"
    if fmt == "csv":
        frame.loc[5, "date"] = "not a date"  # refused with the server's message
        frame.to_csv(data := tmp_path / "in.csv", index=False)
        sent = frame["date"].tolist()
    else:  # time-zone-aware timestamps: their local clock is the date, as in ISO text
        stamps = pd.to_datetime(frame["date"].replace("", None)) + pd.Timedelta(hours=9)
        frame["date"] = stamps.dt.tz_localize("Asia/Tokyo")
        frame.to_parquet(data := tmp_path / "in.parquet", index=False)
        sent = [None if pd.isna(t) else t.isoformat() for t in frame["date"]]
    out = tmp_path / f"out.{fmt}"
    done = subprocess.run(
        [str(KUBELOOP), "predict", "--model-dir", str(bundle), "--data", str(data),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "drift vs the bundle's reference" in done.stdout
    result = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    rows = [
        {"date": d or None, "store": s, "price": p}
        for d, s, p in zip(sent, frame["store"], frame["price"], strict=True)
    ]
    good = [i for i in range(len(rows)) if not (fmt == "csv" and i == 5)]
    expected = _probabilities(server, [rows[i] for i in good])
    np.testing.assert_allclose(result["probability"].to_numpy()[good], expected, atol=1e-6)
    if fmt == "csv":
        assert "rejected 1 rows" in done.stdout
        assert pd.isna(result["probability"].iloc[5])


def test_the_report_shows_dates_time_bins_and_the_other_category(
    server: Server, bundle: Path
) -> None:
    from kubeloop.report import build_report, live_counts

    loaded = load_bundle(bundle)
    assert _v1(server, "predict", ROWS).status_code == 200
    counts, source = live_counts(loaded, metrics_url=f"{server.url}/metrics")
    assert counts is not None and counts["date"] and counts["store"][OTHER_CATEGORY] > 0
    page = build_report(loaded, counts=counts, source=source)
    assert "1 date/time" in page  # the model card's feature count
    date = loaded.schema.features[0]
    assert date.minimum is not None and date.maximum is not None
    shown = f"{format_seconds(date.minimum)} … {format_seconds(date.maximum)}"
    assert shown.startswith("2019-01-0") and shown in page  # the training range, as dates
    first_edge = loaded.reference_profile["features"]["date"]["edges"][0]
    assert f"≤ {format_seconds(first_edge)}" in page  # time bins named by their dates
    assert "(other)" in page and OTHER_CATEGORY not in page
