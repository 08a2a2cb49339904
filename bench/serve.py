"""Benchmark ``kubeloop serve`` against the naive server and the KServe floor (one run).

Usage: ``python bench/serve.py [--seconds 1.5] [--rounds 10] [--only abcd]``. Everything runs on
this machine with the same model (XGBoost, trained once here) and single-row requests unless stated:

(a) naive: FastAPI + a joblib-loaded scikit-learn ``Pipeline`` (the same fitted ColumnTransformer
    and the same XGBoost model) + ``pd.DataFrame([payload])`` per request; concurrency 1 and 8.
    Targets: kubeloop QPS >= 3x and p50 <= 1/3 of the naive server's.
(b) floor: a ``kserve.Model`` that returns a constant, in the same ``kserve.ModelServer``.
    Target: kubeloop p50 <= 1.3x the floor's.
(c) one 10,000-row V2 (JSON) request: rows/s >= 0.5x of in-process ``inplace_predict`` on the
    same rows (the request and the in-process call alternate; median of the per-pair ratios).
(d) drift counters on vs off (``--no-drift-counters``): p50 ratio <= 1.1.

Servers and the load generator are separate processes; the load generator is a small asyncio
client on raw sockets (HTTP/1.1 keep-alive, prebuilt request bytes), so it costs little CPU.
Background load on a shared machine must hit both sides of a comparison alike: at concurrency 1
one client alternates between the two servers request by request; at concurrency 8 the two are
driven one after the other in ABBA order. Each ratio is the median over ``--rounds`` rounds of
the per-round ratio. Request logs are switched off in every server (they would measure the
terminal, not the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
BIG_ROWS = 10_000
QUIET_LOGS = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {
        name: {"level": "WARNING"}
        for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access")
    },
}


# -- servers (each runs in its own process: `python bench/serve.py --role ...`) -----------------


def run_naive(port: int, pipeline_path: str) -> None:
    """The naive server: FastAPI + joblib Pipeline + a one-row DataFrame per request."""
    import joblib
    import pandas as pd
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    pipeline = joblib.load(pipeline_path)

    @app.post("/predict")
    def predict(payload: dict[str, Any]) -> dict[str, Any]:
        probability = float(pipeline.predict_proba(pd.DataFrame([payload]))[0, 1])
        return {"label": "Yes" if probability >= 0.5 else "No", "probability": probability}

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_floor(port: int) -> None:
    """The floor: a kserve.Model returning a constant, in kserve.ModelServer."""
    import kserve

    class Constant(kserve.Model):
        def __init__(self) -> None:
            super().__init__("churn")
            self.ready = True

        def predict(self, payload: Any, headers: Any = None) -> dict[str, Any]:
            return {"predictions": [{"label": "No", "probability": 0.5}]}

    kserve.ModelServer(http_port=port, enable_grpc=False).start([Constant()])


# -- the load generator (its own process) --------------------------------------------------------


async def _worker(
    targets: list[tuple[int, bytes]], until: float, warm: float, out: list[list[float]]
) -> None:
    """One client: requests to each target in turn (one target: back to back), on one
    keep-alive connection per target; latencies go to ``out[target]``."""
    connections = [await asyncio.open_connection("127.0.0.1", port) for port, _ in targets]
    try:
        turn = 0
        while (start := time.perf_counter()) < until:
            index = turn % len(targets)
            turn += 1
            reader, writer = connections[index]
            writer.write(targets[index][1])
            head = await reader.readuntil(b"\r\n\r\n")
            if head[9:12] != b"200":
                raise RuntimeError(f"status {head[9:12]!r}: {head[:200]!r}")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if start >= warm:
                out[index].append(time.perf_counter() - start)
    finally:
        for _, writer in connections:
            writer.close()


def run_load(
    ports: list[int], paths: list[str], bodies: list[str], concurrency: int, seconds: float
) -> None:
    """Drive one server, or two in alternation (request by request, so both see the same
    background load); print one {"p50_ms", "qps", "n"} per server as a JSON list. ``qps`` is
    requests per second of that server's own latency (``n / sum``) when alternating."""
    targets = []
    for port, path, body_file in zip(ports, paths, bodies, strict=True):
        body = Path(body_file).read_bytes()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        targets.append((port, head.encode() + body))
    latencies: list[list[float]] = [[] for _ in targets]

    async def main() -> None:
        now = time.perf_counter()
        warm, until = now + 0.5, now + 0.5 + seconds
        await asyncio.gather(
            *(_worker(targets, until, warm, latencies) for _ in range(concurrency))
        )

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    print(
        json.dumps(
            [
                {
                    "p50_ms": statistics.median(measured) * 1000,
                    "qps": len(measured) / (seconds if len(targets) == 1 else sum(measured)),
                    "n": len(measured),
                }
                for measured in latencies
            ]
        )
    )


# -- orchestration ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def _prepare(work: Path) -> dict[str, Any]:
    """Train the one model; write the joblib Pipeline, the bundle and the request bodies."""
    import joblib
    import numpy as np
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from kubeloop.bundle import write_bundle
    from kubeloop.bundle.models import XGBoostModel
    from kubeloop.bundle.profile import build_reference_profile
    from kubeloop.data import build_dataset
    from kubeloop.data.synth import generate_churn
    from kubeloop.features import FastTransform, fit_preprocessor

    data = build_dataset(generate_churn(ROWS_TRAIN, seed=0), target="churned")
    transformer, spec = fit_preprocessor(data.X, data.schema)
    matrix = transformer.transform(data.X)
    classifier = XGBClassifier(n_estimators=TREES, max_depth=6, learning_rate=0.05)
    classifier.fit(matrix, data.y)
    joblib.dump(
        Pipeline([("preprocess", transformer), ("model", classifier)]), work / "naive.joblib"
    )
    model = XGBoostModel(classifier.get_booster(), task="classification", n_classes=2)
    write_bundle(
        work / "bundle",
        name="churn",
        schema=data.schema,
        preprocessor=spec,
        model=model,
        reference_profile=build_reference_profile(data.X, data.schema, model.predict(matrix)),
        metrics={},
        data_hash=data.data_hash,
    )
    numeric = set(data.schema.numeric_features)

    def plain(name: str, value: Any) -> Any:
        if name in numeric:
            return None if value != value else float(value)
        return value

    row = {name: plain(name, data.X[name].iloc[0]) for name in data.schema.feature_names}
    (work / "row.json").write_text(json.dumps(row))
    (work / "v1.json").write_text(json.dumps({"instances": [row]}))
    big = data.X.iloc[:BIG_ROWS]
    inputs = []
    for name in data.schema.feature_names:
        values = [plain(name, v) for v in big[name].tolist()]
        numeric_input = name in numeric
        inputs.append(
            {
                "name": name,
                "shape": [len(values)],
                "datatype": "FP64" if numeric_input else "BYTES",
                "data": values,
            }
        )
    (work / "big.json").write_text(json.dumps({"inputs": inputs}))
    big_matrix = FastTransform(spec).transform(big)
    assert np.allclose(model.predict(big_matrix), classifier.predict_proba(big_matrix)[:, 1])
    return {"booster": classifier.get_booster(), "matrix": big_matrix}


def _load(
    targets: list[tuple[int, str, Path]], concurrency: int, seconds: float
) -> list[dict[str, float]]:
    """Run the load generator on one target (port, path, body) or two in alternation."""
    command = [sys.executable, __file__, "--role", "load"]
    for port, path, body in targets:
        command += ["--port", str(port), "--path", path, "--body", str(body)]
    command += ["--concurrency", str(concurrency), "--seconds", str(seconds)]
    completed = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    return [dict(run) for run in json.loads(completed.stdout.strip().splitlines()[-1])]


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in ("p50_ms", "qps")}


def _read_response(stream: Any) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response from a socket file: (status line + headers, body); the body comes
    with a Content-Length or chunked (how KServe sends V2 answers)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        if not line:
            raise RuntimeError("the server closed the connection")
        head += line
    fields = head.lower()
    if b"content-length:" in fields:
        return head, stream.read(int(fields.split(b"content-length:")[1].split(b"\r\n")[0]))
    chunks = []
    while size := int(stream.readline().split(b";")[0], 16):
        chunks.append(stream.read(size))
        stream.readline()
    stream.readline()  # the blank line after the last (empty) chunk
    return head, b"".join(chunks)


def _big_request_vs_local(
    port: int, body: Path, booster: Any, matrix: Any, pairs: int
) -> tuple[float, float, float]:
    """One 10,000-row V2 request, then in-process ``inplace_predict`` on the same rows,
    alternating; returns the median request seconds, the median in-process seconds and the
    median of the per-pair ratios in-process/request (adjacent measurements see the same
    background load). The request goes over a raw keep-alive socket with prebuilt bytes, like
    the load generator, so the client's own parsing is not counted as server time."""
    content = body.read_bytes()
    request = (
        f"POST /v2/models/churn/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(content)}\r\n\r\n"
    ).encode() + content
    served, local = [], []
    with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as stream:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(pairs + 1):
            start = time.perf_counter()
            sock.sendall(request)
            head, answer = _read_response(stream)
            elapsed = time.perf_counter() - start
            if head[9:12] != b"200":
                raise RuntimeError(f"status {head[9:12]!r}: {answer[:200]!r}")
            if not i:  # the first pair warms up; its answer is checked
                assert len(json.loads(answer)["outputs"][1]["data"]) == BIG_ROWS
            start = time.perf_counter()
            booster.inplace_predict(matrix)
            in_process = time.perf_counter() - start
            if i:
                served.append(elapsed)
                local.append(in_process)
    ratio = statistics.median(b / a for a, b in zip(served, local, strict=True))
    return statistics.median(served), statistics.median(local), ratio


def run_bench(*, seconds: float, rounds: int, parts: str = "abcd") -> int:
    """Run (a)-(d) and print every ratio; exit status 1 when a target is missed."""
    work = Path(tempfile.mkdtemp(prefix="kubeloop-bench-"))
    print(f"preparing: {ROWS_TRAIN} generated churn rows, XGBoost {TREES} trees depth 6 ...")
    model = _prepare(work)
    log_config = work / "logging.json"
    log_config.write_text(json.dumps(QUIET_LOGS))
    kubeloop = [
        str(Path(sys.executable).with_name("kubeloop")),
        "serve",
        "--model-dir",
        str(work / "bundle"),
        "--enable_grpc",
        "false",
        "--log_config_file",
        str(log_config),
    ]
    ports = {name: _free_port() for name in ("naive", "kubeloop", "nodrift", "floor")}
    commands = {
        "naive": [
            sys.executable,
            __file__,
            "--role",
            "naive",
            "--port",
            str(ports["naive"]),
            "--pipeline",
            str(work / "naive.joblib"),
        ],
        "kubeloop": [*kubeloop, "--http-port", str(ports["kubeloop"])],
        "nodrift": [*kubeloop, "--http-port", str(ports["nodrift"]), "--no-drift-counters"],
        "floor": [
            sys.executable,
            __file__,
            "--role",
            "floor",
            "--port",
            str(ports["floor"]),
            "--log_config_file",
            str(log_config),
        ],
    }
    env = {**os.environ, "KSERVE_LOGLEVEL": "WARNING"}
    processes = {
        name: subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for name, command in commands.items()
    }
    failures: list[str] = []

    def check(label: str, value: float, target: float, *, at_least: bool) -> None:
        ok = value >= target if at_least else value <= target
        sign = ">=" if at_least else "<="
        print(f"  {label}: {value:.2f}  (target {sign} {target:g})  {'PASS' if ok else 'MISS'}")
        if not ok:
            failures.append(label)

    try:
        for name, port in ports.items():
            ready = "/ready" if name == "naive" else "/v2/models/churn/ready"
            _wait_ready(f"http://127.0.0.1:{port}{ready}", processes[name])
        v1, row, big = work / "v1.json", work / "row.json", work / "big.json"
        target = {
            "naive": (ports["naive"], "/predict", row),
            "floor": (ports["floor"], "/v1/models/churn:predict", v1),
            "kubeloop": (ports["kubeloop"], "/v1/models/churn:predict", v1),
            "nodrift": (ports["nodrift"], "/v1/models/churn:predict", v1),
        }

        def compare(base: str, ours: str, concurrency: int) -> dict[str, float]:
            """Per round, the ratio ours/base. At concurrency 1 one client alternates between
            the two servers request by request (both see the same background load); otherwise
            the two are driven one after the other, in ABBA order over the rounds."""
            runs: dict[str, list[dict[str, float]]] = {base: [], ours: []}
            for index in range(rounds):
                if concurrency == 1:
                    pair = (base, ours) if index % 2 == 0 else (ours, base)
                    measured = _load([target[name] for name in pair], 1, seconds)
                    for name, result in zip(pair, measured, strict=True):
                        runs[name].append(result)
                    continue
                for name in (base, ours) if index % 2 == 0 else (ours, base):
                    runs[name].append(_load([target[name]], concurrency, seconds)[0])
            how = "alternating requests" if concurrency == 1 else "runs"
            for name, measured in runs.items():
                summary = _median(measured)
                each = ", ".join(f"{m['p50_ms']:.2f}" for m in measured)
                print(
                    f"  {name:9s} c={concurrency}: p50 {summary['p50_ms']:.3f} ms  "
                    f"{summary['qps']:.0f} req/s  (median of {rounds} rounds of {how}; "
                    f"per-round p50 ms: {each})"
                )
            pairs = list(zip(runs[base], runs[ours], strict=True))
            return {
                "p50": statistics.median(o["p50_ms"] / b["p50_ms"] for b, o in pairs),
                "qps": statistics.median(o["qps"] / b["qps"] for b, o in pairs),
            }

        if "a" in parts:
            print(f"\n(a) kubeloop vs naive FastAPI + sklearn Pipeline ({rounds} x {seconds}s)")
            for concurrency in (1, 8):
                ratio = compare("naive", "kubeloop", concurrency)
                label = f"(a) c={concurrency}"
                check(f"{label} QPS ratio kubeloop/naive", ratio["qps"], 3.0, at_least=True)
                check(f"{label} p50 ratio kubeloop/naive", ratio["p50"], 1 / 3, at_least=False)
        if "b" in parts:
            print("\n(b) kubeloop vs the KServe floor (constant kserve.Model)")
            ratio = compare("floor", "kubeloop", 1)
            check("(b) p50 ratio kubeloop/floor", ratio["p50"], 1.3, at_least=False)
        if "d" in parts:
            print("\n(d) drift counters on vs off")
            ratio = compare("nodrift", "kubeloop", 1)
            check("(d) p50 ratio counters on/off", ratio["p50"], 1.1, at_least=False)
        if "c" in parts:
            print(f"\n(c) one {BIG_ROWS}-row V2 JSON request vs in-process inplace_predict")
            served, local, ratio_c = _big_request_vs_local(
                ports["kubeloop"], big, model["booster"], model["matrix"], pairs=4 * rounds + 1
            )
            print(
                f"  server {BIG_ROWS / served:,.0f} rows/s ({served * 1000:.1f} ms per request);"
                f" in-process inplace_predict {BIG_ROWS / local:,.0f} rows/s"
                f" ({local * 1000:.1f} ms); {4 * rounds + 1} alternating pairs, median of the"
                " per-pair ratios"
            )
            check("(c) rows/s ratio server/in-process", ratio_c, 0.5, at_least=True)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"\n{'all targets met' if not failures else 'missed: ' + ', '.join(failures)}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("bench", "naive", "floor", "load"), default="bench")
    parser.add_argument("--port", type=int, action="append", default=[])
    parser.add_argument("--pipeline")
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("--body", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", default="abcd", help="the parts to run, e.g. --only bc")
    args, _ = parser.parse_known_args()  # the floor also takes KServe's own flags
    if args.role == "naive":
        run_naive(args.port[0], args.pipeline)
    elif args.role == "floor":
        run_floor(args.port[0])
    elif args.role == "load":
        run_load(args.port, args.path, args.body, args.concurrency, args.seconds)
    else:
        return run_bench(seconds=args.seconds, rounds=args.rounds, parts=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
