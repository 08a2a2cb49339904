"""Staged rollout through a real ``kubeloop serve --registry`` process: the canary split and its
stickiness, shadow pairs, the version on every answer, and the candidate dropped or promoted."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubeloop.monitoring.sources import parse_metrics_text, parse_rollout_moments
from kubeloop.registry import Registry
from tests.waiting import wait_for

from .conftest import Server, build_bundle, start_server
from .test_protocols import ROWS

pytestmark = pytest.mark.integration

HEADER = "x-kubeloop-model-version"
REQUESTS = 2000


def _point(root: Path, champion: str, candidate: dict[str, Any] | None = None) -> None:
    """Write the champion pointer (with its candidate entry) in one atomic replace."""
    record: dict[str, Any] = {"version": champion, "updated": "2026-12-07T08:00:00Z"}
    if candidate is not None:
        record["candidate"] = {**candidate, "started": "2026-12-07T08:05:00Z"}
    pointer = root / "churn" / "champion"
    temp = pointer.with_name("champion.tmp-test")
    temp.write_text(json.dumps(record))
    os.replace(temp, pointer)


def _candidate_info(server: Server) -> dict[str, str]:
    """``{version: mode}`` of the ``kubeloop_candidate_info`` series."""
    found = {}
    for line in server.metrics().splitlines():
        if line.startswith("kubeloop_candidate_info{"):
            labels = dict(part.split("=", 1) for part in line[24:].split("}")[0].split(","))
            found[labels["version"].strip('"')] = labels["mode"].strip('"')
    return found


def _v1(client: httpx.Client, headers: dict[str, str] | None = None) -> str:
    answer = client.post("/v1/models/churn:predict", json={"instances": [ROWS[0]]}, headers=headers)
    assert answer.status_code == 200, answer.text
    version = answer.json()["model_version"]
    assert answer.headers[HEADER] == version  # the body and the header agree
    return str(version)


def _v2(client: httpx.Client, key: str) -> str:
    body = {
        "id": key,
        "inputs": [
            {
                "name": k,
                "shape": [1],
                "datatype": "BYTES" if isinstance(v, str) else "FP64",
                "data": [v],
            }
            for k, v in ROWS[0].items()
        ],
    }
    answer = client.post("/v2/models/churn/infer", json=body)
    assert answer.status_code == 200, answer.text
    version = answer.json()["model_version"]
    assert answer.headers[HEADER] == version
    return str(version)


@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path, list[str]]]:
    root = tmp_path_factory.mktemp("rollout")
    registry = Registry(root / "registry")
    versions = [
        registry.register(build_bundle(root / f"bundle-{i}", seed=i, trees=20)) for i in range(2)
    ]
    registry.promote("churn", versions[0])
    server = start_server(
        [
            "--registry",
            str(root / "registry"),
            "--model",
            "churn",
            "--poll-interval",
            "0.1",
            "--payload-log",
            str(root / "payload.jsonl"),
        ],
        name="churn",
        log=root / "server.log",
    )
    yield server, root / "registry", versions
    server.stop()


def test_canary_split_is_within_three_points_and_sticky(
    rollout: tuple[Server, Path, list[str]],
) -> None:
    server, root, (champion, candidate) = rollout
    _point(root, champion, {"version": candidate, "mode": "canary", "percent": 20})
    wait_for(lambda: _candidate_info(server) == {candidate: "canary"}, what="the canary")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        keyed = {}
        for i in range(REQUESTS):
            key = f"req-{i}"
            keyed[key] = _v2(client, key) if i % 2 else _v1(client, {"x-request-id": key})
        share = Counter(keyed.values())[candidate] / REQUESTS
        assert abs(share - 0.20) <= 0.03, share
        for i, (key, version) in enumerate(list(keyed.items())[:300]):  # the same key, again
            assert (_v1(client, {"x-request-id": key}) if i % 3 else _v2(client, key)) == version
        unkeyed = Counter(_v1(client) for _ in range(REQUESTS))
        assert abs(unkeyed[candidate] / REQUESTS - 0.20) <= 0.03, unkeyed
        assert set(unkeyed) == {champion, candidate}
    text = server.metrics()
    moments = parse_rollout_moments(text, model="churn")
    assert moments[candidate]["error"][0] + moments[champion]["error"][0] >= 2 * REQUESTS + 300
    requests = f'kubeloop_requests_total{{model="churn",outcome="ok",version="{candidate}"}}'
    assert requests in text
    # drift bins are counted per version; the champion's are the default
    assert parse_metrics_text(text, model="churn").version == champion
    assert parse_metrics_text(text, model="churn", version=candidate).counts


def test_shadow_answers_with_the_champion_and_counts_pairs(
    rollout: tuple[Server, Path, list[str]],
) -> None:
    server, root, (champion, candidate) = rollout
    before = parse_rollout_moments(server.metrics(), model="churn").get(candidate, {})
    rows_before = before.get("shadow_score_diff", (0.0, 0.0, 0.0))[0]
    _point(root, champion, {"version": candidate, "mode": "shadow", "percent": 0})
    wait_for(lambda: _candidate_info(server) == {candidate: "shadow"}, what="shadow mode")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert {_v1(client, {"x-request-id": f"s-{i}"}) for i in range(200)} == {champion}
        assert {_v2(client, f"s2-{i}") for i in range(100)} == {champion}

    def pairs() -> float:
        moments = parse_rollout_moments(server.metrics(), model="churn")[candidate]
        assert moments["shadow_flip"][0] == moments["shadow_score_diff"][0] - rows_before
        return moments["shadow_score_diff"][0] - rows_before

    wait_for(lambda: pairs() == 300, what="300 shadow pairs", timeout=30)
    assert 'kubeloop_shadow_dropped_total{model="churn"' not in server.metrics()


def test_dropped_candidate_then_promoted_candidate(
    rollout: tuple[Server, Path, list[str]],
) -> None:
    server, root, (champion, candidate) = rollout
    _point(root, champion)  # the candidate dropped (a rollback of the candidate)
    wait_for(lambda: _candidate_info(server) == {}, what="the candidate to be dropped")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert {_v1(client, {"x-request-id": f"d-{i}"}) for i in range(200)} == {champion}
        _point(root, champion, {"version": candidate, "mode": "canary", "percent": 20})
        wait_for(lambda: _candidate_info(server) == {candidate: "canary"}, what="the canary")
        _point(root, candidate)  # promoted: the candidate is the champion, no candidate
        wait_for(
            lambda: parse_metrics_text(server.metrics(), model="churn").version == candidate,
            what="the promotion",
        )
        assert _candidate_info(server) == {}
        assert {_v1(client, {"x-request-id": f"p-{i}"}) for i in range(200)} == {candidate}
        assert {_v2(client, f"p2-{i}") for i in range(50)} == {candidate}
    assert "failed to load" not in server.log.read_text()
