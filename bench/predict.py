"""Benchmark batch scoring and explanations (one run, ratios measured side by side).

Usage: ``python bench/predict.py [--rows 1000000] [--rounds 3] [--only abc]``. The model is
bench/serve.py's (300 trees of depth 6 on 20,000 generated churn rows), written as a bundle.

(a) throughput: ``kubeloop predict`` (Parquet in, Parquet out; read, validation, transform,
    predict, write and the drift counts all included) against in-process
    ``Booster.inplace_predict`` on the same rows already transformed (transform excluded on
    that side). Both run in this process, alternating, ``--rounds`` times; the ratio of medians
    is reported. Target: >= 0.8. The CLI run (a fresh process: imports and bundle load
    included) is timed once beside it.
(b) memory: peak RSS of a ``kubeloop predict`` process for two chunk sizes x two input sizes
    (``os.wait4``'s ``ru_maxrss``). Bounded memory: peak RSS grows with the chunk, not the input.
(c) explanations: a real ``kubeloop serve``, single-row V1 ``:predict`` and ``:explain``
    alternating request by request; p50 ratio explain / predict. Target: <= 2.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KUBELOOP = Path(sys.executable).with_name("kubeloop")


def _bundle(work: Path) -> Path:
    """The bench/serve.py model (same data, trees and depth), written as a bundle."""
    from serve import _prepare

    _prepare(work)
    return work / "bundle"


def _table(path: Path, rows: int, seed: int) -> None:
    """Generated rows as typed Parquet (the text-with-blanks numeric column as numbers)."""
    import pandas as pd

    from kubeloop.data.synth import generate_churn

    frame = generate_churn(rows, seed=seed)
    frame["total_charges"] = pd.to_numeric(frame["total_charges"], errors="coerce")
    frame.to_parquet(path, index=False, row_group_size=50_000)


def throughput(work: Path, bundle: Path, data: Path, rows: int, rounds: int) -> None:
    import pandas as pd

    from kubeloop.batch import BatchOptions, score_table
    from kubeloop.bundle import load_bundle
    from kubeloop.features import FastTransform

    loaded = load_bundle(bundle)
    frame = pd.read_parquet(data)
    matrix = FastTransform(loaded.preprocessor).transform(frame[list(loaded.schema.feature_names)])
    del frame
    booster = loaded.model.booster  # type: ignore[attr-defined]
    booster.inplace_predict(matrix[:1000])
    ours, base = [], []
    options = BatchOptions(data=str(data), out=str(work / "scored.parquet"), model_dir=bundle)
    for _ in range(rounds):
        start = time.perf_counter()
        booster.inplace_predict(matrix)
        base.append(time.perf_counter() - start)
        result = score_table(options)
        assert result.rows == rows and result.rejected == 0
        ours.append(result.seconds)
    base_rate, our_rate = rows / statistics.median(base), rows / statistics.median(ours)
    print(f"(a) rows: {rows:,}; rounds: {rounds}")
    print(f"    inplace_predict (transformed rows, in process): {base_rate:,.0f} rows/s")
    print(f"    kubeloop predict (score_table, parquet->parquet): {our_rate:,.0f} rows/s")
    print(f"    ratio kubeloop / inplace_predict: {our_rate / base_rate:.2f}  (target >= 0.8)")
    start = time.perf_counter()
    subprocess.run(
        [str(KUBELOOP), "predict", "--model-dir", str(bundle), "--data", str(data),
         "--out", str(work / "cli.parquet"), "--no-progress"],
        check=True, capture_output=True,
    )  # fmt: skip
    cli = time.perf_counter() - start
    print(
        f"    `kubeloop predict` CLI process (imports + load included): {cli:.2f}s = "
        f"{rows / cli:,.0f} rows/s; ratio {rows / cli / base_rate:.2f}"
    )


# Run by a fresh, small interpreter: ru_maxrss of a child counts the memory it inherited at fork
# time, so a child forked straight from this (large) process would report this process's size.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(status, usage.ru_maxrss)
"""


def _peak_rss(command: list[str]) -> float:
    """Peak RSS of ``command`` in MiB (a fresh process, started by a small launcher)."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *command], capture_output=True, text=True, check=True
    )
    status, peak = (int(word) for word in done.stdout.split())
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({status})")
    return peak / 1024.0  # KiB -> MiB


def _predict_command(bundle: Path, data: Path, out: Path, chunk: int) -> list[str]:
    return [
        str(KUBELOOP), "predict", "--model-dir", str(bundle), "--data", str(data),
        "--out", str(out), "--chunk-rows", str(chunk), "--no-progress",
    ]  # fmt: skip


def memory(work: Path, bundle: Path, big: Path, rows: int) -> None:
    small, one = work / "small.parquet", work / "one.parquet"
    _table(small, rows // 4, seed=2)
    _table(one, 1, seed=3)
    fixed = _peak_rss(_predict_command(bundle, one, work / "m.parquet", 1))
    print("(b) peak RSS of `kubeloop predict` (MiB):")
    print(f"    one row (imports + bundle, the fixed part): {fixed:.0f}")
    print(f"    {'chunk rows':>10}  {rows // 4:>12,} rows  {rows:>12,} rows")
    for chunk in (20_000, 100_000):
        peaks = [
            _peak_rss(_predict_command(bundle, data, work / "m.parquet", chunk))
            for data in (small, big)
        ]
        print(f"    {chunk:>10,}  {peaks[0]:>17.0f}  {peaks[1]:>17.0f}")


def explain_latency(work: Path, bundle: Path, requests: int) -> None:
    import json
    import socket

    import httpx
    import pandas as pd

    from kubeloop.bundle import load_bundle
    from kubeloop.data.synth import generate_churn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        grpc_port = sock.getsockname()[1]
    log = (work / "server.log").open("wb")
    process = subprocess.Popen(
        [str(KUBELOOP), "serve", "--model-dir", str(bundle), "--http-port", str(port),
         "--grpc-port", str(grpc_port), "--no-drift-counters"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"{url}/v2/models/churn/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"server not ready: {(work / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        schema = load_bundle(bundle).schema
        names = schema.feature_names
        frame = generate_churn(requests, seed=3)[list(names)]
        for name in schema.numeric_features:  # blank text is missing, as in training
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
        frame = frame.astype(object).where(frame.notna(), None)
        bodies = [
            json.dumps({"instances": [dict(zip(names, row, strict=True))]}).encode()
            for row in frame.itertuples(index=False)
        ]
        times: dict[str, list[float]] = {"predict": [], "explain": []}
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=url, timeout=10) as client:
            for verb in ("predict", "explain"):  # warm-up
                client.post(f"/v1/models/churn:{verb}", content=bodies[0], headers=headers)
            for body in bodies:
                for verb in ("predict", "explain"):
                    start = time.perf_counter()
                    reply = client.post(f"/v1/models/churn:{verb}", content=body, headers=headers)
                    times[verb].append(time.perf_counter() - start)
                    assert reply.status_code == 200, reply.text
        p50 = {verb: statistics.median(values) * 1000 for verb, values in times.items()}
        print(f"(c) single-row V1 requests, {requests} each, alternating:")
        print(f"    :predict p50 {p50['predict']:.2f} ms; :explain p50 {p50['explain']:.2f} ms")
        print(
            f"    ratio explain / predict p50: {p50['explain'] / p50['predict']:.2f}  (target <= 2)"
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--only", default="abc", help="which parts to run (a, b, c)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-predict-") as directory:
        work = Path(directory)
        bundle = _bundle(work)
        data = work / "in.parquet"
        if "a" in args.only or "b" in args.only:
            _table(data, args.rows, seed=1)
        if "a" in args.only:
            throughput(work, bundle, data, args.rows, args.rounds)
        if "b" in args.only:
            memory(work, bundle, data, args.rows)
        if "c" in args.only:
            explain_latency(work, bundle, args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
