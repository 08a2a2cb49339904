"""Staged rollout in the model server: routing (canary split, stickiness), shadow pairs, the
per-version request statistics, and the registry's candidate entry."""

from __future__ import annotations

import asyncio
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
from kubeloop.serving._rollout import _LINGER, Rollout, ShadowScorer, rollout_bucket
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


def _count_predict_rows(candidate: Any) -> list[int]:
    """Have ``candidate.predict_rows`` note the rows of each call in the returned list."""
    calls: list[int] = []
    predict_rows = candidate.predict_rows

    def counted(matrix: np.ndarray) -> np.ndarray:
        calls.append(len(matrix))
        return predict_rows(matrix)

    object.__setattr__(candidate, "predict_rows", counted)  # Served is frozen
    return calls


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


@pytest.fixture(scope="module", params=["classification", "multiclass", "regression"])
def same_transform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, Path]:
    """A champion and a candidate trained on the same data (one transform), and their task."""
    task = request.param
    root = tmp_path_factory.mktemp(f"batch-{task}")
    champion = build_bundle(root / "a", seed=0, trees=4, task=task)
    return task, champion, build_bundle(root / "b", seed=0, trees=9, task=task)


def _fast_rows(path: Path, count: int) -> list[dict[str, Any]]:
    """``count`` varied rows as the fast path decodes them (one missing value each time)."""
    from kubeloop.data.synth import generate_churn, generate_regression

    schema = load_bundle(path).schema
    features = schema.features
    generate = generate_regression if schema.task == "regression" else generate_churn
    frame = generate(count, seed=11)
    rows = []
    for index, record in enumerate(frame.to_dict("records")):
        row = {
            f.name: float(record[f.name]) if f.is_numeric else str(record[f.name]) for f in features
        }
        missing = features[index % len(features)]
        row[missing.name] = float("nan") if missing.is_numeric else None
        rows.append(row)
    return rows


def _pairs(name: str, champion_path: Path, candidate_path: Path, *, logged: bool) -> list[Any]:
    """Shadow pairs of 12 fast-path rows and one three-row request (every other one logged),
    counted under model ``name``."""
    from kubeloop.serving._rollout import _Pair
    from kubeloop.serving._served import Served

    champion = Served.prepare(load_bundle(champion_path), name)
    candidate = Served.prepare(load_bundle(candidate_path), name)
    assert candidate.transform.spec == champion.transform.spec
    pairs = []
    for index, row in enumerate(_fast_rows(champion_path, 12)):
        result = champion.transform.transform_row(row)
        assert result is not None
        request_id = f"r{index}" if logged and index % 2 == 0 else None
        raw = champion.predict(result.matrix)
        pairs.append(_Pair(candidate, champion, row, result.matrix, raw, request_id))
    rows = _fast_rows(champion_path, 3)
    columns = {
        f.name: np.array([r[f.name] for r in rows]) if f.is_numeric else [r[f.name] for r in rows]
        for f in champion.bundle.schema.features
    }
    matrix = champion.transform.transform_columns(columns).matrix
    request_id = "several" if logged else None
    pairs.insert(
        5, _Pair(candidate, champion, columns, matrix, champion.predict(matrix), request_id)
    )
    return pairs


def _samples(model: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the registry holds for ``model`` (but the counters' creation times)."""
    return {
        (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "model"))): (
            sample.value
        )
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.labels.get("model") == model and not sample.name.endswith("_created")
    }


def _shadow_lines(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(line["shadow"] for line in lines)
    return {line["request_id"]: line for line in lines}


def test_a_flush_scores_single_rows_in_one_batch_with_the_same_results(
    same_transform: tuple[str, Path, Path], tmp_path: Path
) -> None:
    task, champion_path, candidate_path = same_transform
    names = {way: f"shadow-batch-{task}-{way}" for way in ("batched", "alone")}
    logs = {way: tmp_path / f"{way}.jsonl" for way in names}
    scorers = {way: ShadowScorer(names[way], PayloadLogger(logs[way])) for way in names}
    batched = _pairs(names["batched"], champion_path, candidate_path, logged=True)
    alone = _pairs(names["alone"], champion_path, candidate_path, logged=True)
    candidate = batched[0].candidate

    # the twelve single rows share one predict call; the three-row request is scored alone
    assert [len(batch) for batch in scorers["batched"]._batches(batched)] == [12, 1]
    calls = _count_predict_rows(candidate)
    scorers["batched"]._pending = batched
    scorers["batched"]._flush()
    assert calls == [12]
    for pair in alone:
        scorers["alone"]._run([pair])

    got, expected = _samples(names["batched"]), _samples(names["alone"])
    assert got.keys() == expected.keys()
    assert any(key[0] == "kubeloop_feature_bin_total" for key in got)
    moments = parse_rollout_moments(generate_latest().decode(), model=names["batched"])
    assert moments[candidate.version]["shadow_score_diff"][0] == 15.0
    if task != "regression":
        assert moments[candidate.version]["shadow_flip"][0] == 15.0
    sums = {"sum", "sumsq"}
    for key, value in expected.items():
        labels = dict(key[1])
        if key[0].endswith("_sum") or labels.get("moment") in sums:
            # the same additions, in another order (the three-row request comes after the
            # batch); and the forest's sigmoid of several rows is numpy's exp, not math.exp
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        else:
            assert got[key] == value, key  # counts: exactly

    # each logged request has its own line with its own row(s), as when scored alone
    got_lines, expected_lines = _shadow_lines(logs["batched"]), _shadow_lines(logs["alone"])
    assert (
        sorted(got_lines)
        == sorted(expected_lines)
        == sorted(["several", *(f"r{i}" for i in range(0, 12, 2))])
    )
    for request_id, line in expected_lines.items():
        other = got_lines[request_id]
        assert (other["version"], other["rows"]) == (line["version"], line["rows"])
        assert other["inputs"] == line["inputs"]
        assert other["outputs"].keys() == line["outputs"].keys()
        for output, values in line["outputs"].items():
            if output == "label":
                assert other["outputs"][output] == values
            else:
                np.testing.assert_allclose(other["outputs"][output], values, rtol=1e-12)


def test_a_batch_is_dropped_whole_when_the_share_is_spent_or_the_candidate_fails(
    same_transform: tuple[str, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    task, champion_path, candidate_path = same_transform
    name = f"shadow-batch-drop-{task}"
    pairs = _pairs(name, champion_path, candidate_path, logged=False)
    candidate = pairs[0].candidate

    def dropped() -> float:
        labels = {"model": name, "version": candidate.version}
        return REGISTRY.get_sample_value("kubeloop_shadow_dropped_total", labels) or 0.0

    spent = ShadowScorer(name, None, share=0.0)  # the first unit of the second uses it up
    spent._pending = list(pairs)
    spent._flush()
    moments = parse_rollout_moments(generate_latest().decode(), model=name)
    assert moments[candidate.version]["shadow_score_diff"][0] == 12.0  # the batch came first
    assert dropped() == 1.0  # the three-row request: one pair

    def broken(matrix: np.ndarray) -> np.ndarray:
        raise RuntimeError("no")

    object.__setattr__(candidate, "predict_rows", broken)
    failing = ShadowScorer(name, None)
    for _ in range(2):
        failing._pending = [pair for pair in pairs if pair.single_row]
        failing._flush()
    assert dropped() == 1.0 + 24.0
    warnings = [r for r in caplog.records if "could not score" in r.getMessage()]
    assert len(warnings) == 1
    assert (
        parse_rollout_moments(generate_latest().decode(), model=name)[candidate.version][
            "shadow_score_diff"
        ][0]
        == 12.0
    )


def test_single_rows_served_on_the_event_loop_share_one_predict_call(
    same_transform: tuple[str, Path, Path],
) -> None:
    task, champion_path, candidate_path = same_transform
    name = f"shadow-loop-{task}"
    model = BundleModel(name, lambda: champion_path)
    model.load()
    candidate = model.prepare(candidate_path)
    model.start_rollout(candidate, mode="shadow", percent=0)
    calls = _count_predict_rows(candidate)

    async def serve() -> None:
        for row in _fast_rows(champion_path, 6):
            model.predict({"instances": [row]})
        # A timer set after the first pair's flush timer, for the same delay, fires after it
        # (the loop runs due timers in deadline order): not a race, whatever the clock.
        await asyncio.sleep(_LINGER)

    asyncio.run(serve())
    assert calls == [6]
    moments = parse_rollout_moments(generate_latest().decode(), model=name)
    assert moments[candidate.version]["shadow_score_diff"][0] == 6.0
    model.stop()
