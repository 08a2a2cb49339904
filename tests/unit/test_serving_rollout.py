"""Staged rollout in the model server: routing (canary split, stickiness), shadow pairs, the
per-version request statistics, and the registry's candidate entry."""

from __future__ import annotations

import json
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from kubeloop.bundle import load_bundle
from kubeloop.errors import RegistryError
from kubeloop.monitoring.payload import read_payload_log
from kubeloop.monitoring.sources import parse_rollout_moments
from kubeloop.registry import Registry
from kubeloop.serving import BundleModel
from kubeloop.serving._context import RequestContext
from kubeloop.serving._payload_log import PayloadLogger
from kubeloop.serving._rollout import Rollout, ShadowScorer, rollout_bucket
from kubeloop.serving.metrics import RolloutCollector
from tests.integration.serving.conftest import build_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rollout")
    return build_bundle(root / "a", seed=0, trees=5), build_bundle(root / "b", seed=1, trees=7)


def _row(path: Path) -> dict[str, Any]:
    schema = load_bundle(path).schema
    return {f.name: (3.0 if f.is_numeric else f.categories[0]) for f in schema.features}


def _context(key: str | None = None, header: str | None = None) -> RequestContext:
    headers = {"x-request-id": header} if header else {}
    return RequestContext("v1" if key is None else "v2", key, headers, None, None)


def test_the_bucket_is_blake2b_mod_10000() -> None:
    key = "request-42"
    expected = int.from_bytes(blake2b(key.encode()).digest(), "big") % 10_000
    assert rollout_bucket(key) == expected


def test_canary_routing_is_sticky_and_splits_by_percent(bundles: tuple[Path, Path]) -> None:
    model = BundleModel("route", lambda: bundles[0])
    model.load()
    candidate = model.prepare(bundles[1])
    rollout = Rollout.of(candidate, "canary", 20)
    keys = [f"k{i}" for i in range(4000)]
    taken = [rollout.takes(_context(key)) for key in keys]
    assert abs(sum(taken) / len(keys) - 0.20) < 0.03
    assert taken == [rollout.takes(_context(key)) for key in keys]  # sticky (V2 id)
    assert taken == [rollout.takes(_context(header=key)) for key in keys]  # same for the header
    assert all(t == (rollout_bucket(k) < 2000) for k, t in zip(keys, taken, strict=True))
    random_share = np.mean([rollout.takes(_context()) for _ in range(4000)])
    assert abs(random_share - 0.20) < 0.03
    assert not any(Rollout.of(candidate, "canary", 0).takes(_context(k)) for k in keys[:200])
    assert all(Rollout.of(candidate, "canary", 100).takes(_context(k)) for k in keys[:200])
    assert Rollout.of(candidate, "shadow", 30).percent == 0.0


def test_predict_routes_every_protocol_and_names_the_version(
    bundles: tuple[Path, Path],
) -> None:
    model = BundleModel("route-all", lambda: bundles[0])
    model.load()
    champion = model.served
    assert champion is not None
    candidate = model.prepare(bundles[1])
    model.start_rollout(candidate, mode="canary", percent=100)
    row = _row(bundles[0])
    assert model.predict({"instances": [row]})["model_version"] == candidate.version
    assert model.predict({"instances": [row, row]})["model_version"] == candidate.version
    explained = model.explain({"instances": [row]})
    assert explained["model_version"] == candidate.version
    model.start_rollout(candidate, mode="canary", percent=20)
    keys = [f"id-{i}" for i in range(300)]
    for key in keys:
        request = InferRequest(
            "route-all",
            [
                InferInput(k, [1], "FP64" if isinstance(v, float) else "BYTES", [v])
                for k, v in row.items()
            ],
            request_id=key,
        )
        answer = json.loads(model.predict(request))  # V2 JSON bytes
        expected = candidate.version if rollout_bucket(key) < 2000 else champion.version
        assert answer["model_version"] == expected
        assert answer["id"] == key
    for key in keys[:50]:
        answer = model.predict({"instances": [row]}, {"x-request-id": key})
        expected = candidate.version if rollout_bucket(key) < 2000 else champion.version
        assert answer["model_version"] == expected
    model.end_rollout()
    assert model.rollout is None
    assert model.predict({"instances": [row]})["model_version"] == champion.version


def test_promoting_the_candidate_reuses_the_loaded_bundle(bundles: tuple[Path, Path]) -> None:
    model = BundleModel("route-promote", lambda: bundles[0])
    model.load()
    candidate = model.prepare(bundles[1])
    model.start_rollout(candidate, mode="canary", percent=5)
    assert model.promote_candidate() is candidate
    assert model.served is candidate and model.rollout is None
    row = _row(bundles[0])
    assert model.predict({"instances": [row]})["model_version"] == candidate.version


def test_shadow_scores_pairs_beside_the_champion(
    bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    log = PayloadLogger(tmp_path / "payload.jsonl")
    model = BundleModel("route-shadow", lambda: bundles[0], payload_log=log)
    model.load()
    champion = model.served
    assert champion is not None
    candidate = model.prepare(bundles[1])
    model.start_rollout(candidate, mode="shadow", percent=50)
    row = _row(bundles[0])
    for _ in range(5):
        assert model.predict({"instances": [row]})["model_version"] == champion.version
    assert model.predict({"instances": [row, row, row]})["model_version"] == champion.version
    moments = parse_rollout_moments(generate_latest().decode(), model="route-shadow")
    assert moments[candidate.version]["shadow_flip"][0] == 8.0  # rows
    assert moments[candidate.version]["shadow_score_diff"][0] == 8.0
    assert moments[candidate.version]["error"][0] == 0.0  # it answered nothing
    assert moments[champion.version]["error"][0] == 6.0  # requests
    assert moments[champion.version]["score"][0] == 8.0
    # the difference is the candidate's score minus the champion's, row by row
    answers = read_payload_log(tmp_path / "payload.jsonl", shadow=True)
    shadow, served = answers[answers["shadow"]], answers[~answers["shadow"]]
    assert set(shadow["version"]) == {candidate.version}
    assert set(served["version"]) == {champion.version}
    diff = shadow["prediction"].to_numpy() - served["prediction"].to_numpy()
    _, total, _ = moments[candidate.version]["shadow_score_diff"]
    assert total == pytest.approx(diff.sum())
    assert len(read_payload_log(tmp_path / "payload.jsonl")) == 8  # shadow ignored by default
    model.stop()


def test_version_stats_count_requests_durations_and_moments() -> None:
    registry = CollectorRegistry()
    collector = RolloutCollector(registry)
    stats = collector.stats("m", "v1")
    assert collector.stats("m", "v1") is stats
    stats.request(0.002, False)
    stats.request(0.3, True)
    stats.scores(np.array([0.5, np.nan, 1.0]))
    text = generate_latest(registry).decode()
    assert 'kubeloop_requests_total{model="m",outcome="ok",version="v1"} 1.0' in text
    assert 'kubeloop_requests_total{model="m",outcome="error",version="v1"} 1.0' in text
    assert (
        'kubeloop_request_duration_seconds_bucket{le="0.0025",model="m",version="v1"} 1.0' in text
    )
    assert 'kubeloop_request_duration_seconds_count{model="m",version="v1"} 2.0' in text
    moments = parse_rollout_moments(text, model="m")["v1"]
    assert moments["score"] == (2.0, 1.5, 1.25)
    assert moments["error"] == (2.0, 1.0, 1.0)


def _pointer(root: Path, candidate: Any) -> Registry:
    (root / "churn").mkdir(parents=True, exist_ok=True)
    record = {"version": "v1", "updated": "now", "candidate": candidate}
    (root / "churn" / "champion").write_text(json.dumps(record))
    return Registry(root)


def test_registry_reads_and_checks_the_candidate_entry(tmp_path: Path) -> None:
    entry = {"version": "v2", "mode": "canary", "percent": 20, "started": "now"}
    assert _pointer(tmp_path / "a", entry).candidate("churn") == entry
    assert _pointer(tmp_path / "b", None).candidate("churn") is None
    assert Registry(tmp_path / "c").candidate("churn") is None
    for bad, words in [
        ({"version": "../x", "mode": "canary", "percent": 1}, "not a version id"),
        ({"version": "v2", "mode": "blue", "percent": 1}, "mode"),
        ({"version": "v2", "mode": "canary", "percent": 101}, "percent"),
        ({"version": "v2", "mode": "canary", "percent": "5"}, "percent"),
        ("v2", "not a JSON object"),
    ]:
        with pytest.raises(RegistryError, match=words):
            _pointer(tmp_path / "d", bad).candidate("churn")


def test_shadow_scoring_stops_at_its_share_of_the_second(bundles: tuple[Path, Path]) -> None:
    model = BundleModel("route-shadow-share", lambda: bundles[0])
    model.load()
    candidate = model.prepare(bundles[1])
    model.start_rollout(candidate, mode="shadow", percent=0)
    model._shadow = ShadowScorer(model.name, None, share=0.0)  # any time spent uses it up
    row = _row(bundles[0])
    for _ in range(20):
        model.predict({"instances": [row]})
    moments = parse_rollout_moments(generate_latest().decode(), model="route-shadow-share")
    scored = moments[candidate.version]["shadow_score_diff"][0]
    dropped = REGISTRY.get_sample_value(
        "kubeloop_shadow_dropped_total",
        {"model": "route-shadow-share", "version": candidate.version},
    )
    assert 1 <= scored <= 2  # the first pair of each second (the loop may cross one boundary)
    assert scored + (dropped or 0) == 20
    model.stop()
