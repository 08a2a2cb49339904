"""Benchmark the model server's cold start: process start -> model ready, kubeloop vs MLServer.

Usage: ``python bench/coldstart.py [--runs 7] [--no-image-env] [--baseline-src DIR]``.

Issue 12, benchmark (c): ``kubeloop serve --model-dir <bundle>`` against MLServer 1.7 with its
XGBoost runtime (``mlserver-xgboost``) serving the same booster (the bundle's ``model.ubj``);
target: the ratio of the medians <= 1.0.

Each side is started as a user starts it (REST and gRPC; MLServer also its metrics port), and is
ready when ``GET /v2/models/churn/ready`` answers 200 (polled every 5 ms); one prediction then
checks that it serves. MLServer runs twice: ``mlserver`` with ``parallel_workers: 0`` (the model
in the server process: MLServer's fastest start, the baseline of the target) and
``mlserver-default`` with its defaults (one inference worker process). kubeloop is measured in
two environments:

- ``dev``: this interpreter's environment (the project's ``.venv``, scikit-learn, Ray and the
  training libraries installed);
- ``image``: a virtual environment with only ``serving/requirements.txt`` (what the serving image
  installs; no scikit-learn), running this checkout's ``src``.

``--baseline-src DIR`` adds kubeloop from another source tree (e.g. an older commit's ``src``,
from ``git archive``) in the dev environment, to compare before and after in one run.

MLServer gets its own virtual environment (``mlserver==1.7.*``, ``mlserver-xgboost==1.7.*``,
``uvloop<0.22``: see :data:`MLSERVER_REQUIREMENTS`). It and the image-like environment are made
under ``build/`` on first use and reused while their requirements are unchanged. The sides take
turns within each round (the order rotates), so background load hits them alike; each ratio is
of the medians, and the median of the per-round ratios is shown beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
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

from serve import _prepare  # the bench/serve.py model: 20,000 rows, 300 trees of depth 6

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
# uvloop 0.22 and later break MLServer 1.7's inference workers (asyncio.get_event_loop() in a
# new process raises), so its model never loads: the uvloop of MLServer 1.7's time.
MLSERVER_REQUIREMENTS = ("mlserver==1.7.*", "mlserver-xgboost==1.7.*", "uvloop<0.22")
# MLServer started two ways: the model loaded in the server process (parallel_workers 0: its
# fastest start, the target's baseline) and as MLServer starts by default (one inference worker
# process, which loads the model again), for comparison.
MLSERVER_SETTINGS: dict[str, dict[str, object]] = {
    "mlserver": {"parallel_workers": 0},
    "mlserver-default": {},
}
TARGET = 1.0
READY_TIMEOUT = 120.0


def _venv(path: Path, requirements: list[str]) -> Path:
    """The Python of a virtual environment at ``path`` with ``requirements`` installed (made,
    or remade when the requirements changed)."""
    python = path / "bin" / "python"
    stamp = path / ".requirements"
    wanted = "\n".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing {path.relative_to(ROOT)}: {' '.join(requirements)}", flush=True)
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    installed = subprocess.run([*pip, *requirements], capture_output=True, text=True)
    if installed.returncode:
        raise RuntimeError(f"pip install into {path} failed:\n{installed.stderr[-4000:]}")
    stamp.write_text(wanted)
    return python


def _serving_requirements() -> list[str]:
    lines = (ROOT / "serving" / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(port: int, method: str, path: str, body: bytes | None = None) -> int | None:
    """The HTTP status of one request, or ``None`` while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (ConnectionError, OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


class Side:
    """One server to start: a command line (with ``{http}``, ``{grpc}``, ``{metrics}`` ports
    filled in per start) run in ``cwd`` with extra environment; for MLServer, its server
    settings (written to ``cwd/settings.json`` per start, with the ports)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        mlserver: dict[str, object] | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.cwd = cwd
        self.env = env or {}
        self.mlserver = mlserver
        self.times: list[float] = []

    def start_to_ready(self, infer: bytes) -> float:
        """Seconds from starting the process to its model's readiness; then one prediction."""
        ports = {key: _free_port() for key in ("http", "grpc", "metrics")}
        command = [part.format(**ports) for part in self.command]
        if self.mlserver is not None:
            settings = {f"{key}_port": port for key, port in ports.items()}
            (self.cwd / "settings.json").write_text(json.dumps({**self.mlserver, **settings}))
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while _status(ports["http"], "GET", "/v2/models/churn/ready") != 200:
                if process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {process.returncode}: {command}")
                if time.perf_counter() - start > READY_TIMEOUT:
                    raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:.0f}s")
                time.sleep(0.005)
            elapsed = time.perf_counter() - start
            status = _status(ports["http"], "POST", "/v2/models/churn/infer", infer)
            if status != 200:
                raise RuntimeError(f"{self.name} answered a prediction with {status}")
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.times.append(elapsed)
        return elapsed


def _v2_request(bundle: Path, row: dict[str, object]) -> tuple[bytes, bytes]:
    """One-row V2 requests: kubeloop's (one tensor per feature, as the bundle's schema says)
    and MLServer's (the row's transformed features, missing values as 0: JSON has no NaN)."""
    schema = json.loads((bundle / "schema.json").read_text())
    inputs = []
    for feature in schema["features"]:
        numeric = feature["kind"] == "numeric"
        inputs.append(
            {
                "name": feature["name"],
                "shape": [1],
                "datatype": "FP64" if numeric else "BYTES",
                "data": [row[feature["name"]]],
            }
        )
    ours = json.dumps({"inputs": inputs}).encode()
    from kubeloop.bundle import load_bundle
    from kubeloop.features import FastTransform

    loaded = load_bundle(bundle)
    columns = {name: [value] for name, value in row.items()}
    matrix = FastTransform(loaded.preprocessor).transform_columns(columns).matrix
    theirs = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(matrix.shape),
                    "datatype": "FP64",
                    "data": [0.0 if v != v else float(v) for v in matrix.reshape(-1).tolist()],
                }
            ]
        }
    ).encode()
    return ours, theirs


def run(runs: int, image_env: bool, baseline_src: Path | None) -> int:
    work = Path(tempfile.mkdtemp(prefix="kubeloop-coldstart-"))
    print("preparing: the bench/serve.py model (20,000 generated churn rows, 300 trees) ...")
    _prepare(work)
    bundle = work / "bundle"
    mlserver_python = _venv(BUILD / "bench-mlserver" / ".venv", list(MLSERVER_REQUIREMENTS))
    mlservers = []
    for name, settings in MLSERVER_SETTINGS.items():
        folder = work / name
        folder.mkdir()
        shutil.copy(bundle / "model.ubj", folder / "model.ubj")
        (folder / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": "churn",
                    "implementation": "mlserver_xgboost.XGBoostModel",
                    "parameters": {"uri": "./model.ubj"},
                }
            )
        )
        command = [str(mlserver_python.with_name("mlserver")), "start", str(folder)]
        mlservers.append(Side(name, command, cwd=folder, mlserver=settings))
    serve_args = ["serve", "--model-dir", str(bundle), "--http-port", "{http}"]
    serve_args += ["--grpc-port", "{grpc}"]
    sides = [
        *mlservers,
        Side("kubeloop-dev", [sys.executable, "-m", "kubeloop", *serve_args], cwd=work),
    ]
    if baseline_src is not None:
        sides.append(
            Side(
                "kubeloop-baseline",
                [sys.executable, "-m", "kubeloop", *serve_args],
                cwd=work,
                env={"PYTHONPATH": str(baseline_src)},
            )
        )
    if image_env:
        image_python = _venv(BUILD / "bench-serving" / ".venv", _serving_requirements())
        installed = subprocess.run(
            [str(image_python), "-m", "pip", "list", "--format=freeze"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.lower()
        assert "scikit-learn" not in installed, "the serving requirements pull in scikit-learn"
        sides.append(
            Side(
                "kubeloop-image",
                [str(image_python), "-m", "kubeloop", *serve_args],
                cwd=work,
                env={"PYTHONPATH": str(ROOT / "src")},
            )
        )
    row = json.loads((work / "row.json").read_text())
    ours, theirs = _v2_request(bundle, row)
    digest = hashlib.sha256((bundle / "model.ubj").read_bytes()).hexdigest()[:12]
    print(f"model.ubj sha256 {digest}… served by every side; {runs} rounds, order rotating\n")
    for index in range(runs):
        order = sides[index % len(sides) :] + sides[: index % len(sides)]
        results = []
        for side in order:
            body = theirs if side.mlserver is not None else ours
            results.append(f"{side.name} {side.start_to_ready(body):.2f}s")
        print(f"  round {index + 1}: " + ", ".join(results), flush=True)
    base = sides[0]  # MLServer's fastest start: the target's baseline
    print(f"\nprocess start -> model ready, median of {runs}:")
    for side in sides:
        print(
            f"  {side.name:17s} {statistics.median(side.times):.2f}s  "
            f"(min {min(side.times):.2f}s, max {max(side.times):.2f}s)"
        )
    failures = []
    for side in sides[1:]:
        ratio = statistics.median(side.times) / statistics.median(base.times)
        per_round = statistics.median(o / b for o, b in zip(side.times, base.times, strict=True))
        line = f"  (c) {side.name}/{base.name}: {ratio:.2f}  (median of per-round ratios "
        line += f"{per_round:.2f}"
        if not side.name.startswith("kubeloop-") or side.name == "kubeloop-baseline":
            print(line + ")")  # for comparison only: no target
            continue
        ok = ratio <= TARGET
        print(f"{line}; target <= {TARGET:g})  {'PASS' if ok else 'MISS'}")
        if not ok:
            failures.append(side.name)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'all targets met' if not failures else 'missed: ' + ', '.join(failures)}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds (each side once per round)")
    parser.add_argument(
        "--no-image-env",
        dest="image_env",
        action="store_false",
        help="skip kubeloop in the serving image's environment (serving/requirements.txt)",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also start kubeloop from this source tree (its src directory), for comparison",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.baseline_src is not None and not (args.baseline_src / "kubeloop").is_dir():
        parser.error(f"--baseline-src {args.baseline_src}: no kubeloop package there")
    return run(args.runs, args.image_env, args.baseline_src)


if __name__ == "__main__":
    sys.exit(main())
