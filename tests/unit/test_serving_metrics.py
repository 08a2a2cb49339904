"""Serving metrics: drift bins agree with the profile, bulk histogram, payload log rotation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubeloop.bundle.profile import count_values, numeric_profile
from kubeloop.errors import ConfigError
from kubeloop.serving import metrics
from kubeloop.serving._observe import Observer
from kubeloop.serving._payload_log import PayloadLogger

PROFILE = {
    "features": {
        "x": numeric_profile(np.arange(100, dtype=np.float64), bins=5),
        "c": {"kind": "categorical", "categories": {"a": 5, "b": 3, "1": 2}, "missing": 0},
    }
}


def _bins(model: str, feature: str) -> dict[str, float]:
    text = generate_latest().decode()
    prefix = 'kubeloop_feature_bin_total{bin="'
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(prefix) and f'feature="{feature}",model="{model}"' in line:
            label = line[len(prefix) :].split('"', 1)[0]
            found[label] = float(line.rsplit(" ", 1)[1])
    return found


@pytest.mark.parametrize("one_at_a_time", [True, False], ids=["single-row path", "batch path"])
def test_drift_bins_match_the_profile_rule(one_at_a_time: bool) -> None:
    model = f"unit-{one_at_a_time}"
    observer = Observer(model, "v1", PROFILE, ("No", "Yes"))
    x = np.array([-5.0, 0.0, 19.0, 20.0, 20.5, 99.0, 1e9, np.nan])
    c = np.array(["a", "b", "zzz", None, 1.0, " a ", "__unknown__", "b"], dtype=object)
    if one_at_a_time:
        for i in range(len(x)):
            observer.inputs({"x": x[i : i + 1], "c": c[i : i + 1]}, 1)
    else:
        observer.inputs({"x": x, "c": c}, len(x))
    expected_x = count_values(PROFILE["features"]["x"], x)
    expected_c = count_values(PROFILE["features"]["c"], c)
    assert _bins(model, "x") == {k: float(v) for k, v in expected_x.items()}
    assert _bins(model, "c") == {k: float(v) for k, v in expected_c.items()}


def test_drift_counters_can_be_switched_off() -> None:
    observer = Observer("unit-off", "v1", PROFILE, (), drift_counters=False)
    observer.inputs({"x": np.array([1.0]), "c": np.array(["a"], dtype=object)}, 1)
    assert _bins("unit-off", "x") == {}


def test_block_counter_is_a_counter_summed_over_blocks() -> None:
    registry = CollectorRegistry()
    counter = metrics.BlockCounter("blk", "b", ["m", "bin"], registry=registry)
    first = counter.block([("a", "0"), ("a", "1")])
    second = counter.block([("a", "1")])  # e.g. the same bin of the next bundle version
    first.add_each([0, 1, 1])
    first.add_counts(np.array([2, 0]))
    second.add_each([0])
    (family,) = text_string_to_metric_families(generate_latest(registry).decode())
    assert (family.name, family.type) == ("blk", "counter")
    assert {s.name for s in family.samples} == {"blk_total"}
    assert {s.labels["bin"]: s.value for s in family.samples} == {"0": 3.0, "1": 3.0}
    with pytest.raises(ValueError, match="labels"):
        counter.block([("a",)])


def test_bulk_histogram_equals_prometheus_histogram() -> None:
    registry = CollectorRegistry()
    buckets = (0.1, 0.5, 1.0, 10.0)
    bulk = metrics.BulkHistogram("bulk", "b", ["m"], buckets, registry=registry)
    plain = Histogram("plain", "p", ["m"], buckets=buckets, registry=registry)
    values = np.array([0.05, 0.1, 0.3, 0.5, 0.7, 1.0, 3.0, 10.0, 50.0])
    bulk.observe_many(("a",), values[:5])
    for value in values[5:]:
        bulk.observe(("a",), float(value))
    for value in values:
        plain.labels("a").observe(float(value))
    text = generate_latest(registry).decode().splitlines()
    ours = sorted(line.replace("bulk", "X") for line in text if line.startswith("bulk_"))
    theirs = sorted(
        line.replace("plain", "X")
        for line in text
        if line.startswith("plain_") and "_created" not in line
    )
    assert ours == theirs


def test_payload_log_rotates_and_samples(tmp_path: Path) -> None:
    path = tmp_path / "payload.jsonl"
    logger = PayloadLogger(path, max_bytes=600, seed=1)
    for i in range(10):
        logger.log(
            model="m",
            version="v1",
            request_id=str(i),
            rows=1,
            inputs={"x": np.array([float(i), np.nan])},
            outputs={"label": np.array(["Yes"], dtype=object)},
        )
    logger.close()
    current = [json.loads(line) for line in path.read_text().splitlines()]
    rotated = [
        json.loads(line) for line in path.with_name("payload.jsonl.1").read_text().splitlines()
    ]
    assert path.stat().st_size <= 600
    assert current[-1]["request_id"] == "9" and current[-1]["inputs"]["x"] == [9.0, None]
    assert int(rotated[-1]["request_id"]) == int(current[0]["request_id"]) - 1
    sampler = PayloadLogger(tmp_path / "s.jsonl", sample_rate=0.25, seed=3)
    share = sum(sampler.sampled() for _ in range(4000)) / 4000
    assert 0.2 < share < 0.3
    with pytest.raises(ConfigError, match="sample-rate"):
        PayloadLogger(tmp_path / "bad.jsonl", sample_rate=1.5)
