"""Driving a local loop: the model server as a child process, traffic, drifted data, free ports.

The demo's story (:mod:`kubeloop.demo.story`) runs on these, and so do the tests and benchmarks:
a public module, so they all drive the server the same way.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from kubeloop.bundle.schema import Schema
from kubeloop.console import ProgressFn
from kubeloop.errors import KubeloopError
from kubeloop.monitoring.sources import parse_metrics_text

__all__ = [
    "ServerProcess",
    "drift_frame",
    "free_port",
    "heartbeat",
    "quiet_output",
    "send_traffic",
    "write_labels",
]

_TASK_DONE = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# Below Linux's ephemeral range (32768-60999): a port the kernel hands out for bind(0) is also
# what it hands to the next outgoing connection, which can take it before the server binds it.
_PORTS = (20_000, 32_768)


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1, outside the ephemeral range."""
    for _ in range(200):
        port = random.randrange(*_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # all tried were taken: any free port
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def quiet_output(log: Path) -> Iterator[None]:
    """Send this process's (and its children's) stdout/stderr to ``log`` meanwhile.

    The KFP local runner prints every step's full spec; the demo keeps that in a log file and
    shows its own timeline instead.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextmanager
def heartbeat(log: Path, say: ProgressFn, *, every: float = 15.0) -> Iterator[None]:
    """While the body runs, say every ``every`` s how long it has run and the last KFP step done.

    The steps' output goes to ``log`` (see :func:`quiet_output`); this reads it back.
    """
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
            steps = _TASK_DONE.findall(_ANSI.sub("", text))
            last = f"; steps done: {', '.join(s for s, _ in steps)}" if steps else ""
            say(f"   ... {time.monotonic() - started:.0f}s{last}")

    thread = threading.Thread(target=beat, name="demo-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class ServerProcess:
    """``kubeloop serve --registry ... --model ...`` as a child process on free ports."""

    def __init__(self, *, registry: Path, model: str, payload_log: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = model
        command = [
            sys.executable, "-c", "import sys; from kubeloop.cli import main; sys.exit(main())",
            "serve", "--registry", str(registry), "--model", model, "--http-port",
            str(self.port), "--grpc-port", str(free_port()), "--payload-log", str(payload_log),
            "--poll-interval", "0.2",  # the demo waits for the hot swap
        ]  # fmt: skip
        self._log = log.open("ab")
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until ``/v2/health/ready`` answers 200 (raises when the process died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise KubeloopError(f"the model server exited with {self._process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise KubeloopError(f"the model server was not ready after {timeout:.0f}s")

    def served_version(self) -> str | None:
        """The version the server reports in ``kubeloop_model_info`` (``None`` if unreadable)."""
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as answer:
                return parse_metrics_text(answer.read().decode(), model=self.model).version
        except (urllib.error.URLError, OSError):
            return None

    def served_rollout(self) -> tuple[str | None, str | None]:
        """(champion, candidate) the server reports in ``kubeloop_model_info`` and
        ``kubeloop_candidate_info`` (``None`` where none or unreadable)."""
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as answer:
                text = answer.read().decode()
        except (urllib.error.URLError, OSError):
            return None, None
        candidates = [
            sample.labels.get("version")
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "kubeloop_candidate_info" and sample.labels.get("model") == self.model
        ]
        champion = parse_metrics_text(text, model=self.model).version
        return champion, (candidates[0] if candidates else None)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 15 s) and close its log."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()


def _instances(frame: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    columns: dict[str, list[Any]] = {}
    for info in schema.features:
        values = frame[info.name] if info.name in frame.columns else pd.Series([None] * len(frame))
        if info.is_numeric:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
            columns[info.name] = [None if np.isnan(v) else float(v) for v in numbers]
        else:
            columns[info.name] = [None if v is None or v != v else v for v in values.tolist()]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def send_traffic(
    url: str, model: str, frame: pd.DataFrame, schema: Schema, *, prefix: str, batch: int = 100
) -> list[tuple[str, int]]:
    """POST ``frame`` as V1 requests of ``batch`` rows over one keep-alive connection; returns
    ``(request_id, rows)`` sent. Raises :class:`KubeloopError` on an answer other than 200."""
    sent = []
    instances = _instances(frame, schema)
    address = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(
        address.hostname or "127.0.0.1", address.port, timeout=30
    )
    try:
        for start in range(0, len(instances), batch):
            request_id = f"{prefix}-{start // batch:05d}"
            body = json.dumps({"instances": instances[start : start + batch]}).encode()
            connection.request(
                "POST", f"/v1/models/{model}:predict", body=body,
                headers={"Content-Type": "application/json", "x-request-id": request_id},
            )  # fmt: skip
            answer = connection.getresponse()
            text = answer.read()
            if answer.status != 200:
                raise KubeloopError(
                    f"the model server answered {answer.status} to request {request_id}: "
                    f"{text[:200].decode(errors='replace')}"
                )
            sent.append((request_id, len(instances[start : start + batch])))
    finally:
        connection.close()
    return sent


def drift_frame(frame: pd.DataFrame, target: str, *, seed: int = 0) -> pd.DataFrame:
    """Drift a user's rows: covariate shift on half the features, then a concept change.

    Numeric columns (every other one) move by one standard deviation; categorical ones (every
    other one) see 40 % of their values replaced by their rarest category. The concept change
    reverses the label inside a sub-population (the upper half of the first numeric column):
    swapped classes for classification, mirrored around the mean for regression.
    """
    rng = np.random.default_rng(seed)
    out = frame.copy()
    features = [c for c in frame.columns if c != target]
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in features if c not in numeric]
    for name in numeric[::2]:
        out[name] = frame[name] + frame[name].std()
    for name in categorical[::2]:
        counts = frame[name].value_counts()
        if len(counts) > 1:
            mask = rng.random(len(frame)) < 0.4
            out.loc[mask, name] = counts.index[-1]
    if numeric:
        group = (frame[numeric[0]] > frame[numeric[0]].median()).to_numpy()
        y = frame[target]
        if pd.api.types.is_numeric_dtype(y) and y.nunique() > 20:
            out.loc[group, target] = 2 * y.mean() - y[group]
        else:
            classes = sorted(y.dropna().unique().tolist(), key=str)
            if len(classes) == 2:
                swap = {classes[0]: classes[1], classes[1]: classes[0]}
                out.loc[group, target] = y[group].map(swap)
    return out


def write_labels(path: Path, sent: list[tuple[str, int]], labels: pd.Series) -> None:
    """Append the labels of the rows sent (``request_id``, ``row``, ``label``) to ``path``."""
    rows, offset = [], 0
    for request_id, count in sent:
        for row in range(count):
            rows.append({"request_id": request_id, "row": row, "label": labels.iloc[offset + row]})
        offset += count
    frame = pd.DataFrame(rows)  # appended: labels keep arriving
    frame.to_csv(path, mode="a", header=not path.exists(), index=False)
