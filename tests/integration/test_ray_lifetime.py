"""A ``kill -9`` of ``kubeloop train`` leaves none of its Ray processes behind.

Other Ray instances run on the same machine (other test runs), so only the processes of this
run are counted: the test puts a variable of its own into the environment of the ``kubeloop
train`` it starts, and every process of that run's Ray (GCS, raylet, agents, workers, actors)
inherits it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from kubeloop.training._reaper import marked_processes
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

KUBELOOP = Path(sys.executable).with_name("kubeloop")
VARIABLE = "KUBELOOP_TEST_RUN"


def _describe(run: str) -> list[str]:
    """pid, state and command line of each process of this run that is still there."""
    left = []
    for pid in marked_processes(run, variable=VARIABLE):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        except OSError:
            continue
        left.append(f"{pid} {state} {command[:120].decode(errors='replace')}")
    return left


def test_kill_9_of_train_leaves_no_ray_process(tmp_path: Path, churn_frame: pd.DataFrame) -> None:
    data = tmp_path / "churn.csv"
    churn_frame.to_csv(data, index=False)
    run = uuid.uuid4().hex
    env = {**os.environ, VARIABLE: run, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "train.log"
    command = [str(KUBELOOP), "train", "--data", str(data), "--target", "churned"]
    with log.open("wb") as handle:
        train = subprocess.Popen(
            [*command, "--out", str(tmp_path / "bundle"), "--workers", "2"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        # XGBoost has been trained over Ray: the head, its agents and idle workers are up (the
        # agents and workers are what survived a kill -9 before).
        wait_for(
            # (2,000 rows: below TrainConfig.cv_below_rows, so XGBoost's fold models come first,
            # then its refit on Ray Train's workers, which this line follows)
            lambda: "xgboost: cross-validated score" in log.read_text() or train.poll() is not None,
            what="XGBoost to finish on Ray",
            timeout=600,
        )
        assert train.poll() is None, log.read_text()[-3000:]
        shown = log.read_text()
        assert "engine: 2 Ray Train worker(s) x 1 CPU on a local Ray" in shown
        # Ray's own log lines (start-up, token authentication...) stay out of the output.
        assert "Started a local Ray instance" not in shown and "worker.py" not in shown, shown
        ours = [pid for pid in marked_processes(run, variable=VARIABLE) if pid != train.pid]
        assert len(ours) >= 3, f"expected Ray's processes, found {ours}"
        train.send_signal(signal.SIGKILL)
        assert train.wait(timeout=30) == -signal.SIGKILL
        try:
            wait_for(
                lambda: not list(marked_processes(run, variable=VARIABLE)),
                what="every Ray process of the killed run to exit",
                timeout=60,
            )
        except AssertionError as failure:
            raise AssertionError(f"{failure}; left: {_describe(run)}") from None
    finally:
        if train.poll() is None:
            train.kill()
            train.wait()
        for pid in marked_processes(run, variable=VARIABLE):  # only this run's, if it failed
            os.kill(pid, signal.SIGKILL)
    assert not (tmp_path / "bundle").exists()
