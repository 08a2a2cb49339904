"""Benchmark what a staged rollout costs a single-row request: rollout off, canary, shadow.

Usage: ``python bench/rollout_overhead.py [--pairs 3] [--windows 40] [--seconds 0.25]
[--percent 20]``.

Two comparable bundles (XGBoost, 300 trees of depth 6 on the same 20,000 generated churn rows,
different seeds and subsamples, so a request costs about the same whichever answers) are
registered; the first is champion. Two ``kubeloop serve --registry`` processes (A and B) serve
it, each from its own copy of the registry, whose pointer the benchmark moves between three
states:

- **off**: no candidate;
- **canary**: the other bundle as candidate answering ``--percent`` % of requests (no request
  key: random routing, so both bundles answer);
- **shadow**: the other bundle as shadow candidate (the champion answers; the candidate scores
  every request off the response path, on the server's event loop).

In a phase one server stays off and the other serves the candidate, canary and shadow taking
turns. One client sends single-row V1 requests back to back over one keep-alive connection
(prebuilt request bytes) in windows of ``--seconds`` (after a 0.1 s warm-up) that alternate
between the two servers; before every window of either server the benchmark writes its pointer
and waits until it reports the state (``kubeloop_candidate_info``). Each candidate window's p50
is compared with the mean of the two off windows around it: the host's load, which drifts over
seconds on a shared machine, hits a state and its baseline alike. The servers swap roles for
the second phase of a pair (the candidate loads again: ``--settle`` seconds of warm-up for its
verification, warm-up and compiled trees), and ``--pairs`` fresh pairs run one after the other,
so what one process's memory layout adds averages out. Each ratio is the median over all its
windows. Targets: canary/off <= 1.05, shadow/off <= 1.10. Exit status 1 when a target is
missed. Request logs are off in the servers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROWS_TRAIN = 20_000
TREES = 300
TARGETS = {"canary": 1.05, "shadow": 1.10}
WARMUP_S = 0.1  # requests sent, not measured, at the start of each window
# the registry pointer's candidate entry per state (the candidate's filled in once registered)
STATES: dict[str, dict[str, Any] | None] = {"off": None, "canary": None, "shadow": None}
QUIET_LOGS = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {
        name: {"level": "WARNING"}
        for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access")
    },
}


def _prepare(work: Path) -> tuple[list[str], dict[str, Any]]:
    """Train the two bundles, register them (the first is champion); return the versions and a
    request row."""
    import xgboost

    from kubeloop.bundle import write_bundle
    from kubeloop.bundle.models import XGBoostModel
    from kubeloop.bundle.profile import build_reference_profile
    from kubeloop.data import build_dataset
    from kubeloop.data.synth import generate_churn
    from kubeloop.features import FastTransform, fit_preprocessor
    from kubeloop.registry import Registry

    data = build_dataset(generate_churn(ROWS_TRAIN, seed=0), target="churned")
    _, spec = fit_preprocessor(data.X, data.schema)
    matrix = FastTransform(spec).transform(data.X)
    registry = Registry(work / "registry")
    versions = []
    for seed in (0, 1):
        booster = xgboost.train(
            {
                "objective": "binary:logistic",
                "max_depth": 6,
                "eta": 0.05,
                "subsample": 0.8,
                "seed": seed,
            },
            xgboost.DMatrix(matrix, label=data.y),
            num_boost_round=TREES,
        )
        model = XGBoostModel(booster, task="classification", n_classes=2)
        bundle = write_bundle(
            work / f"bundle-{seed}",
            name="churn",
            schema=data.schema,
            preprocessor=spec,
            model=model,
            reference_profile=build_reference_profile(data.X, data.schema, model.predict(matrix)),
            metrics={},
            data_hash=data.data_hash,
        )
        versions.append(registry.register(bundle))
        time.sleep(1.1)  # version ids are stamped to the second
    registry.promote("churn", versions[0])
    numeric = set(data.schema.numeric_features)
    row = {}
    for name in data.schema.feature_names:
        value = data.X[name].iloc[0]
        row[name] = (None if value != value else float(value)) if name in numeric else value
    return versions, row


def _point(root: Path, champion: str, candidate: dict[str, Any] | None) -> None:
    record: dict[str, Any] = {"version": champion, "updated": "2026-12-07T08:00:00Z"}
    if candidate is not None:
        record["candidate"] = {**candidate, "started": "2026-12-07T08:05:00Z"}
    pointer = root / "churn" / "champion"
    temp = pointer.with_name("champion.tmp-bench")
    temp.write_text(json.dumps(record))
    os.replace(temp, pointer)


def _get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    return int(raw[9:12]), raw.split(b"\r\n\r\n", 1)[-1]


def _candidate_state(port: int) -> str:
    """``off``, or the mode of the candidate the server reports."""
    _, body = _get(port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("kubeloop_candidate_info{"):
            return line.split('mode="', 1)[1].split('"', 1)[0]
    return "off"


def _read_response(stream: Any) -> bytes:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        if not line:
            raise RuntimeError("the server closed the connection")
        head += line
    if head[9:12] != b"200":
        raise RuntimeError(f"status {head[9:12]!r}")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    stream.read(length)
    return head


def _p50(port: int, request: bytes, seconds: float, warmup: float) -> tuple[float, int]:
    """p50 seconds of back-to-back requests for ``seconds`` after ``warmup`` seconds."""
    latencies = []
    with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as stream:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = time.perf_counter()
        warm, until = now + warmup, now + warmup + seconds
        while (start := time.perf_counter()) < until:
            sock.sendall(request)
            _read_response(stream)
            if start >= warm:
                latencies.append(time.perf_counter() - start)
    return statistics.median(latencies), len(latencies)


class _Server:
    """One ``kubeloop serve --registry`` process on its own copy of the registry, and how to
    move it between states and measure it."""

    def __init__(self, registry: Path, log_config: Path, request_row: dict[str, Any]) -> None:
        self.registry = registry
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        command = [
            str(Path(sys.executable).with_name("kubeloop")),
            "serve",
            "--registry",
            str(registry),
            "--model",
            "churn",
            "--poll-interval",
            "0.1",
            "--http-port",
            str(self.port),
            "--enable_grpc",
            "false",
            "--log_config_file",
            str(log_config),
        ]
        env = {**os.environ, "KSERVE_LOGLEVEL": "WARNING"}
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        body = json.dumps({"instances": [request_row]}).encode()
        self.request = (
            f"POST /v1/models/churn:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"a server exited with {self.process.returncode}")
            try:
                if _get(self.port, "/v2/models/churn/ready")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("a server did not get ready")
            time.sleep(0.2)

    def switch(self, champion: str, name: str) -> None:
        """Write the registry pointer for state ``name`` (the server follows within 0.1 s)."""
        _point(self.registry, champion, STATES[name])

    def wait_state(self, name: str) -> None:
        wait_until = time.monotonic() + 60
        while _candidate_state(self.port) != name:
            if time.monotonic() > wait_until:
                raise RuntimeError(f"a server did not switch to {name}")
            time.sleep(0.02)

    def p50(self, seconds: float, warmup: float) -> float:
        return _p50(self.port, self.request, seconds, warmup)[0]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _phase(
    base: _Server,
    test: _Server,
    champion: str,
    *,
    windows: int,
    seconds: float,
    settle: float,
    measured: dict[str, list[float]],
) -> dict[str, list[float]]:
    """One phase: ``test`` serves the candidate (canary and shadow windows taking turns),
    ``base`` serves with the rollout off, windows alternating between the two servers. Returns
    each candidate window's p50 over the mean of the two ``off`` windows around it."""
    # the test server loads the candidate (verified, warmed, its trees compiled on a
    # background thread): let that finish, and warm both servers' paths up
    base.switch(champion, "off")
    test.switch(champion, "canary")
    base.wait_state("off")
    test.wait_state("canary")
    test.p50(seconds, settle)
    test.switch(champion, "shadow")
    test.wait_state("shadow")
    test.p50(seconds, WARMUP_S)
    ratios: dict[str, list[float]] = {name: [] for name in TARGETS}

    def window(server: _Server, name: str) -> float:
        # the same steps before every window of either server: a pointer write, the
        # server's /metrics read until it reports the state, a warm-up
        server.switch(champion, name)
        server.wait_state(name)
        return server.p50(seconds, WARMUP_S)

    before = window(base, "off")
    for index in range(windows):
        name = "canary" if index % 2 else "shadow"
        ours = window(test, name)
        after = window(base, "off")
        off = (before + after) / 2
        measured["off"].append(off)
        measured[name].append(ours)
        ratios[name].append(ours / off)
        before = after
    return ratios


def run(*, pairs: int, windows: int, seconds: float, percent: float, settle: float) -> int:
    """Run the phases and print the p50s and ratios; 1 when a target is missed."""
    work = Path(tempfile.mkdtemp(prefix="kubeloop-rollout-bench-"))
    print(f"preparing: two XGBoost bundles, {TREES} trees depth 6, {ROWS_TRAIN} churn rows ...")
    (champion, candidate), row = _prepare(work)
    STATES["canary"] = {"version": candidate, "mode": "canary", "percent": percent}
    STATES["shadow"] = {"version": candidate, "mode": "shadow", "percent": 0}
    log_config = work / "logging.json"
    log_config.write_text(json.dumps(QUIET_LOGS))
    shutil.copytree(work / "registry", work / "registry-b")
    measured: dict[str, list[float]] = {name: [] for name in STATES}
    ratios: dict[str, list[float]] = {name: [] for name in TARGETS}
    phase = 0
    for pair in range(1, pairs + 1):
        servers = [
            _Server(work / "registry", log_config, row),
            _Server(work / "registry-b", log_config, row),
        ]
        try:
            for server in servers:
                server.wait_ready()
            for base, test in (servers, servers[::-1]):
                phase += 1
                found = _phase(
                    base, test, champion, windows=windows, seconds=seconds, settle=settle,
                    measured=measured,
                )  # fmt: skip
                print(
                    f"  phase {phase} (server pair {pair}, candidate on server "
                    f"{'AB'[servers.index(test)]}): median ratio "
                    + "  ".join(
                        f"{name}/off {statistics.median(found[name]):.3f}" for name in TARGETS
                    )
                )
                for name in TARGETS:
                    ratios[name].extend(found[name])
        finally:
            for server in servers:
                server.stop()
    print(
        f"\nsingle-row V1 p50 per {seconds:g} s window, median of {phase} phases of "
        f"{windows} windows:"
    )
    for name in STATES:
        print(f"  {name:7s} {statistics.median(measured[name]) * 1000:.3f} ms")
    failures = []
    for name, target in TARGETS.items():
        ratio = statistics.median(ratios[name])
        ok = ratio <= target
        print(
            f"  {name}/off p50 ratio: {ratio:.3f} over {len(ratios[name])} windows "
            f"(target <= {target:g})  " + ("PASS" if ok else "FAIL")
        )
        if not ok:
            failures.append(name)
    print("PASS" if not failures else f"FAIL: {', '.join(failures)}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", type=int, default=3, help="server pairs started one after the other"
    )
    parser.add_argument(
        "--windows", type=int, default=40, help="windows of the candidate's server per phase"
    )
    parser.add_argument("--seconds", type=float, default=0.25, help="seconds per window")
    parser.add_argument("--percent", type=float, default=20.0)
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds of warm-up after a candidate loads"
    )
    args = parser.parse_args()
    return run(
        pairs=args.pairs,
        windows=args.windows,
        seconds=args.seconds,
        percent=args.percent,
        settle=args.settle,
    )


if __name__ == "__main__":
    sys.exit(main())
