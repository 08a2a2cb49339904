"""Start a retraining run: the data it trains on, the run itself, and active-run tracking.

Retraining data = the reference data (what the champion was trained on, ``--data``) plus the
recent window: payload-log rows whose delayed labels have arrived, with the label as the target.
The new model therefore sees the new regime and the old one, and the gate compares it with the
champion on a held-out split of that same mix.

Active runs: a local run (``kfp.local``) blocks the monitor that started it, so the state records
that monitor's pid; another monitor seeing a live pid never starts a second run, and a dead pid
(a crashed monitor) frees the slot. A cluster run records its KFP run id and host; it stays
active until the KFP API reports a terminal state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from kubeloop.data import read_table
from kubeloop.registry.rollout import pid_alive

if TYPE_CHECKING:
    from kubeloop.console import ProgressFn
    from kubeloop.pipelines.launch.request import RunRequest
    from kubeloop.pipelines.launch.runs import RunOutcome

__all__ = ["TERMINAL_STATES", "StartRun", "build_retrain_data", "refresh_active_run"]

TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "ERROR", "CANCELED", "CANCELLED"})


class StartRun(Protocol):
    """Starts one training run: :func:`kubeloop.pipelines.start_training_run` or a stand-in."""

    def __call__(
        self, request: RunRequest, /, *, progress: ProgressFn | None = None
    ) -> RunOutcome: ...


def build_retrain_data(
    reference: str, *, target: str, recent: pd.DataFrame | None, out: Path
) -> tuple[str, int]:
    """Write reference + labelled recent rows to ``out`` (CSV) and return its path and the
    number of recent rows added. Without recent rows, ``reference`` is returned unchanged.

    Args:
        reference: The reference data (path or URL the pipeline can read).
        target: Target column name.
        recent: Payload-log rows joined with labels (features + ``label``), or ``None``.
        out: Where to write the combined CSV (local file).
    """
    if recent is None or recent.empty:
        return reference, 0
    frame = read_table(reference)
    window = recent.rename(columns={"label": target})
    # Only the columns both sides have: the payload log holds the model's features, so
    # columns the data stage dropped (ids) would otherwise come back half empty.
    columns = [c for c in frame.columns if c in window.columns]
    combined = pd.concat([frame[columns], window[columns]], ignore_index=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp")
    combined.to_csv(temp, index=False)
    os.replace(temp, out)
    return str(out), len(window)


def refresh_active_run(
    active: dict[str, Any] | None, *, run_state: Callable[[str, str], str] | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """Drop the active run when it is over.

    Returns:
        ``(active_run_or_None, note)``; the note says why a run was dropped.
    """
    if active is None:
        return None, None
    if active.get("where") == "cluster":
        if run_state is None:
            from kubeloop.pipelines.launch.runs import run_state as kfp_run_state

            run_state = kfp_run_state
        try:
            state = run_state(str(active["host"]), str(active["run_id"]))
        except Exception as error:  # the KFP API being down must not free the slot
            return active, f"could not read state of run {active['run_id']}: {error}"
        if state.upper() in TERMINAL_STATES:
            return None, f"run {active['run_id']} finished: {state}"
        return active, None
    pid = int(active.get("pid", -1))
    if pid == os.getpid() or (pid > 0 and pid_alive(pid)):
        return active, None
    return None, f"run {active.get('run_id')} was left by a monitor that is gone (pid {pid})"
