"""Decide whether to retrain, and remember what was decided.

:func:`decide` is pure: drift and performance findings plus the persisted :class:`MonitorState`
and a :class:`TriggerPolicy` give a :class:`Decision` with its reasons. Guards, in order:

1. **de-duplication** -- never while a training run is active (a local run records the pid of
   the monitor running it; a cluster run its KFP run id, whose state the caller refreshes), nor
   while a staged rollout's candidate is being watched (``state.rollout``);
2. **cooldown** -- no new run within ``cooldown_s`` of the last one;
3. **daily cap** -- at most ``daily_cap`` runs in any 24 hours.

The state is a small JSON file written atomically (temp file + ``os.replace``), so a monitor
killed mid-write leaves the previous state, and a CronJob's ``--once`` runs share it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kubeloop.errors import ConfigError, check_range

__all__ = [
    "DAY_S",
    "HISTORY_KEEP",
    "Decision",
    "MonitorState",
    "TriggerPolicy",
    "decide",
    "load_state",
    "save_state",
]

DAY_S = 86_400.0
HISTORY_KEEP = 200
_STATE_FORMAT = 1


@dataclass(frozen=True)
class TriggerPolicy:
    """When drift or a performance drop starts retraining.

    Attributes:
        drift_share: Retrain when at least this fraction of input features drifted.
        max_performance_drop: Retrain when the live metric is worse than the bundle's test
            metric by more than this (ROC AUC points for classification, relative RMSE
            increase for regression).
        cooldown_s: Seconds after a retrain start during which no new run starts.
        daily_cap: Most retrain starts in any 24 hours.
    """

    drift_share: float = 0.3
    max_performance_drop: float = 0.05
    cooldown_s: float = 3600.0
    daily_cap: int = 3

    def __post_init__(self) -> None:
        owner = "TriggerPolicy"
        check_range("drift_share", self.drift_share, low=0.0, high=1.0, closed="right", owner=owner)
        drop = self.max_performance_drop
        check_range("max_performance_drop", drop, low=0.0, closed="neither", owner=owner)
        check_range("cooldown_s", self.cooldown_s, low=0.0, owner=owner)
        check_range("daily_cap", self.daily_cap, kind=int, low=1, owner=owner)


@dataclass(frozen=True)
class MonitorState:
    """What the monitor remembers between runs.

    Attributes:
        retrain_starts: Unix times of retrain starts (last 24 hours kept).
        active_run: The run in progress: ``{"run_id", "where", "started", "pid"?, "host"?}``.
        last_scrape: The previous ``/metrics`` scrape (:meth:`Scrape.to_dict`), for deltas.
        last_decision: The previous decision (:meth:`Decision.to_dict`).
        errors: Count of failed source reads since the state was created.
        history: One record per run, oldest first (the last :data:`HISTORY_KEEP`): time,
            versions, drift share, the decision and the retraining run's gate outcome; the
            HTML report (:mod:`kubeloop.report`) draws the loop's history from it.
        rollout: The staged rollout being watched (:mod:`kubeloop.monitoring.rollout`): the
            candidate, its champion, mode, start time and the server counters seen so far.
    """

    retrain_starts: tuple[float, ...] = ()
    active_run: dict[str, Any] | None = None
    last_scrape: dict[str, Any] | None = None
    last_decision: dict[str, Any] | None = None
    errors: int = 0
    history: tuple[dict[str, Any], ...] = ()
    rollout: dict[str, Any] | None = None

    def with_history(self, record: dict[str, Any]) -> MonitorState:
        """The state with ``record`` appended to the history (oldest records dropped)."""
        return replace(self, history=(*self.history, record)[-HISTORY_KEEP:])

    def with_run_started(self, run: dict[str, Any], now: float) -> MonitorState:
        """The state after a retrain start (old starts beyond 24 h dropped)."""
        kept = tuple(t for t in self.retrain_starts if now - t < DAY_S)
        return replace(self, retrain_starts=(*kept, now), active_run=run)


@dataclass(frozen=True)
class Decision:
    """The outcome of one monitor run.

    Attributes:
        retrain: Whether a training run should start now.
        reasons: Why retraining is wanted (``"drift"``, ``"performance"``) with details.
        blocked_by: Why a wanted retrain does not start (``"active_run"``, ``"rollout"``,
            ``"cooldown"``, ``"daily_cap"``), else ``None``.
        details: Human lines explaining the decision.
    """

    retrain: bool
    reasons: tuple[str, ...] = ()
    blocked_by: str | None = None
    details: tuple[str, ...] = field(default=())

    @property
    def reason(self) -> str:
        """The metric label of the trigger: ``drift``, ``performance`` or ``drift+performance``."""
        return "+".join(self.reasons) or "none"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content."""
        return asdict(self) | {"reasons": list(self.reasons), "details": list(self.details)}


def decide(
    *,
    drift_share: float | None,
    drifted_features: tuple[str, ...] = (),
    performance_drop: float | None = None,
    state: MonitorState,
    policy: TriggerPolicy,
    now: float,
) -> Decision:
    """Decide whether to start a retraining run.

    Args:
        drift_share: Fraction of judged features that drifted (``None``: no usable window).
        drifted_features: Their names, for the explanation.
        performance_drop: How much worse the live metric is (``None``: no labels).
        state: The persisted state (its ``active_run`` already refreshed by the caller).
        policy: Thresholds and guards.
        now: Current Unix time.

    Returns:
        The decision; ``retrain`` is true only when a reason holds and no guard blocks.
    """
    reasons: list[str] = []
    details: list[str] = []
    if drift_share is not None and drift_share >= policy.drift_share:
        reasons.append("drift")
        details.append(
            f"drift share {drift_share:.2f} >= {policy.drift_share:.2f} "
            f"(drifted: {', '.join(drifted_features) or '-'})"
        )
    elif drift_share is not None:
        details.append(f"drift share {drift_share:.2f} < {policy.drift_share:.2f}")
    if performance_drop is not None and performance_drop > policy.max_performance_drop:
        reasons.append("performance")
        details.append(
            f"performance drop {performance_drop:.3f} > {policy.max_performance_drop:.3f}"
        )
    elif performance_drop is not None:
        details.append(f"performance drop {performance_drop:.3f} within bound")
    if not reasons:
        return Decision(retrain=False, details=tuple(details) or ("no usable data",))
    blocked: str | None = None
    recent = [t for t in state.retrain_starts if now - t < DAY_S]
    if state.active_run is not None:
        blocked = "active_run"
        details.append(f"run {state.active_run.get('run_id')} is still active")
    elif state.rollout is not None:
        blocked = "rollout"
        ended = state.rollout.get("ended")
        candidate = state.rollout.get("candidate")
        details.append(
            f"the rollout of candidate {candidate} ended in this run ({ended}); the next run "
            "judges the new state"
            if ended
            else f"candidate {candidate} is still in its rollout"
        )
    elif recent and now - max(recent) < policy.cooldown_s:
        blocked = "cooldown"
        details.append(
            f"cooldown: last run {now - max(recent):.0f}s ago < {policy.cooldown_s:.0f}s"
        )
    elif len(recent) >= policy.daily_cap:
        blocked = "daily_cap"
        details.append(f"daily cap: {len(recent)} runs in 24h")
    return Decision(
        retrain=blocked is None, reasons=tuple(reasons), blocked_by=blocked, details=tuple(details)
    )


def load_state(path: Path) -> MonitorState:
    """Read the state file; a missing file is a fresh state.

    Raises:
        ConfigError: The file exists but is not a monitor state.
    """
    if not path.exists():
        return MonitorState()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return MonitorState(
            retrain_starts=tuple(float(t) for t in data.get("retrain_starts", ())),
            active_run=data.get("active_run"),
            last_scrape=data.get("last_scrape"),
            last_decision=data.get("last_decision"),
            errors=int(data.get("errors", 0)),
            history=tuple(dict(record) for record in data.get("history", ())),
            rollout=data.get("rollout"),
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise ConfigError(
            f"Monitor state file {path} is not valid ({error}); delete it to start afresh."
        ) from error


def save_state(path: Path, state: MonitorState) -> None:
    """Write the state atomically (temp file in the same directory, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"format": _STATE_FORMAT, **asdict(state)}
    content["retrain_starts"] = list(state.retrain_starts)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
