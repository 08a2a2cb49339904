"""Hot swap under load: 8 clients, 10 champion changes (one bundle tampered), zero failures."""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from kubeloop.registry import Registry
from tests.waiting import wait_for

from .conftest import Server, build_bundle, start_server
from .test_protocols import ROWS

pytestmark = pytest.mark.integration

CLIENTS = 8
SWAPS = 10
TAMPERED = 4  # the 5th swap points at a bundle whose files no longer match its manifest
FAILURES = r'kubeloop_model_load_failures_total{model="churn"} (\S+)'
POLLS = r'kubeloop_champion_polls_total{model="churn"} (\S+)'


def _point_champion(root: Path, model: str, version: str) -> None:
    """Write the champion pointer directly (Registry.promote refuses a damaged version)."""
    pointer = root / model / "champion"
    temp = pointer.with_name("champion.tmp-test")
    temp.write_text(json.dumps({"version": version, "updated": "now"}))
    os.replace(temp, pointer)


def _metric(server: Server, pattern: str) -> float:
    found = re.search(pattern, server.metrics())
    return float(found.group(1)) if found else 0.0


def _served_version(server: Server) -> str:
    found = re.search(
        r'kubeloop_model_info{model="churn",version="([^"]+)"} 1\.0', server.metrics()
    )
    assert found, "no kubeloop_model_info series"
    return found.group(1)


def _wait_for(server: Server, version: str) -> None:
    wait_for(lambda: _served_version(server) == version, what=f"the server to swap to {version}")


def test_champion_swaps_under_load_without_failed_requests(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    versions = [
        registry.register(build_bundle(tmp_path / f"bundle-{i}", seed=i, trees=5 + i))
        for i in range(SWAPS + 1)
    ]
    assert len(set(versions)) == SWAPS + 1
    registry.promote("churn", versions[0])
    server = start_server(
        ["--registry", str(tmp_path / "registry"), "--model", "churn", "--poll-interval", "0.1"],
        name="churn",
        log=tmp_path / "server.log",
    )
    seen: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(index: int) -> None:
        v2 = index % 2 == 1
        body = {
            "inputs": [
                {
                    "name": k,
                    "shape": [1],
                    "datatype": "BYTES" if isinstance(v, str) else "FP64",
                    "data": [v],
                }
                for k, v in ROWS[0].items()
            ]
        }
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                try:
                    if v2:
                        response = http.post("/v2/models/churn/infer", json=body)
                        version = response.json().get("model_version", "")
                    else:
                        response = http.post("/v1/models/churn:predict", json={"instances": ROWS})
                        version = response.json().get("model_version", "")
                    ok = response.status_code == 200
                except httpx.HTTPError as error:  # a dropped connection is a failure too
                    ok, version = False, repr(error)
                with lock:
                    if ok:
                        seen[version] += 1
                    else:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        _wait_for(server, versions[0])
        for swap in range(1, SWAPS + 1):
            version = versions[swap]
            if swap - 1 == TAMPERED:
                profile = tmp_path / "registry" / "churn" / "versions" / version / "metrics.json"
                profile.write_text(profile.read_text() + " ")
                before = _served_version(server)
                _point_champion(tmp_path / "registry", "churn", version)
                wait_for(lambda: _metric(server, FAILURES) >= 1, what="the failed load")
                assert _metric(server, FAILURES) == 1
                # Three more complete polls of the same pointer: refused once, not retried.
                polls = _metric(server, POLLS) + 3
                wait_for(lambda n=polls: _metric(server, POLLS) >= n, what="three more polls")
                assert _served_version(server) == before
                assert _metric(server, FAILURES) == 1
            else:
                registry.promote("churn", version)
                _wait_for(server, version)
                # Clients answered by this version, as many as there are clients.
                wait_for(lambda v=version: seen[v] >= CLIENTS, what=f"answers from {version}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server.stop()
    good = [v for i, v in enumerate(versions) if i != TAMPERED + 1]
    assert failures == []
    assert set(good) <= set(seen), f"versions seen in responses: {sorted(seen)}"
    assert versions[TAMPERED + 1] not in seen
    assert sum(seen.values()) > 100
    log = (tmp_path / "server.log").read_text()
    assert f"champion {versions[TAMPERED + 1]} of churn failed to load" in log
