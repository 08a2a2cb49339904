"""Watch a staged rollout and end it: promote the candidate, roll it back, or keep watching.

A challenger that passed the offline gate with ``rollout`` canary or shadow is the registry's
*candidate* (:mod:`kubeloop.registry.rollout`); every model server that follows the registry
answers part of the traffic with it (canary) or scores a copy of every request with it (shadow).
Each monitor run while a candidate is out reads, per version:

- from the server's ``/metrics`` (or, summed over every replica, from Prometheus), the
  sufficient statistics (count, sum, sum of squares) of
  ``error`` (0/1 per request), ``latency_log`` (ln seconds per request) and ``score`` (the
  prediction per row), and in shadow mode the paired ``shadow_score_diff`` per row
  (``kubeloop_rollout_moment_total``); the increase since the candidate started is kept in the
  monitor state, across server restarts;
- from the payload log and the delayed labels, ``label_loss``: each labelled row's log loss
  (classification) or squared error over the champion's test MSE (regression), per version that
  answered it (shadow: paired on the same rows);
- from the payload log, ``drift_fit``: on the same live rows, the log-likelihood of each row
  under the champion's reference profile minus under the candidate's (positive: the candidate
  was trained on data less like today's traffic).

:func:`kubeloop.monitoring.sequential.judge` turns them into one verdict with an always-valid
test per signal, and a promotion or rollback is carried out at once, as one operation
(:mod:`kubeloop.registry.rollout`): the pointer, the MLflow aliases, and so what is served.
Every decision goes to the progress output, the metrics (``kubeloop_rollout_decisions_total``),
MLflow (tags on the candidate's run) and the monitor state's history (the HTML report).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kubeloop.bundle import Bundle, load_bundle
from kubeloop.bundle.schema import normalize_category
from kubeloop.console import ProgressFn
from kubeloop.monitoring import metrics as m
from kubeloop.monitoring.decision import MonitorState
from kubeloop.monitoring.report import row_log_likelihood
from kubeloop.monitoring.sequential import Moments, RolloutVerdict, judge
from kubeloop.monitoring.sources import MetricsEndpoint, PrometheusAPI, parse_rollout_moments

if TYPE_CHECKING:
    from kubeloop.monitoring.monitor import MonitorConfig
    from kubeloop.registry import Registry

__all__ = ["RolloutWatch", "label_losses", "watch_rollout"]

_log = logging.getLogger("kubeloop.monitoring")

SERVER_SIGNALS = ("error", "latency_log", "score")
# A retrained model may rightly predict otherwise than the champion (the world changed): where
# delayed labels judge the candidate, a prediction shift alone is reported, not held against it.
PREDICTION_SHIFT = ("score", "shadow_score_diff")
PAIRED_SERVER_SIGNALS = ("shadow_score_diff",)
_CLIP = 1e-6

Triple = list[float]  # [n, sum, sum of squares]


@dataclass(frozen=True)
class RolloutWatch:
    """What one monitor run saw of a staged rollout and what it did.

    Attributes:
        champion: The champion version.
        candidate: The candidate version.
        mode: ``"canary"`` or ``"shadow"``.
        percent: The candidate's share of requests (canary).
        verdict: The sequential decision.
        action: ``"promote"``, ``"rollback"`` or ``"continue"``.
        transition: What the promotion or rollback changed (:mod:`kubeloop.registry.rollout`).
        notes: Human lines (a source that could not be read, a server restart).
    """

    champion: str
    candidate: str
    mode: str
    percent: int
    verdict: RolloutVerdict
    action: str
    transition: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (the monitor history's ``rollout`` entry)."""
        return {
            "champion": self.champion,
            "candidate": self.candidate,
            "mode": self.mode,
            "percent": self.percent,
            "action": self.action,
            "verdict": self.verdict.to_dict(),
            "transition": self.transition,
            "notes": list(self.notes),
        }


def _moments(triple: Triple) -> Moments:
    return Moments(n=float(triple[0]), total=float(triple[1]), total_sq=float(triple[2]))


def _accumulate(
    previous: dict[str, Any], now: dict[str, dict[str, tuple[float, float, float]]]
) -> tuple[dict[str, Any], bool]:
    """Add the counters' increase since the last read to what the rollout saw so far.

    The rollout's first look is every series' baseline: champion and candidate are compared
    over the same stretch of time, and a version that served before (a candidate started again)
    brings none of its earlier counts. A series that appears at a later look began since the
    last one (a server's series never disappear) and counts whole.

    Returns the new record (``last`` = the counters now, ``seen`` = the increase summed since
    the candidate started) and whether the server restarted (a counter went down: its counts
    since the restart are all new).
    """
    last: dict[str, Any] = previous.get("last", {})
    seen: dict[str, Any] = {v: {s: list(t) for s, t in sig.items()} for v, sig in
                            previous.get("seen", {}).items()}  # fmt: skip
    restarted = any(
        value < last.get(version, {}).get(signal, [0.0, 0.0, 0.0])[0]
        for version, signals in now.items()
        for signal, (value, _, _) in signals.items()
    )
    for version, signals in now.items():
        for signal, triple in signals.items():
            before = [0.0, 0.0, 0.0] if restarted else last.get(version, {}).get(signal)
            if before is None and "last" in previous:
                before = [0.0, 0.0, 0.0]  # appeared since the last look
            if before is None:
                continue  # the first look: the baseline
            added = [a - b for a, b in zip(triple, before, strict=True)]
            total = seen.setdefault(version, {}).setdefault(signal, [0.0, 0.0, 0.0])
            seen[version][signal] = [t + a for t, a in zip(total, added, strict=True)]
    fresh = {v: {s: list(t) for s, t in sig.items()} for v, sig in now.items()}
    return {"last": fresh, "seen": seen}, restarted


def label_losses(bundle: Bundle, joined: pd.DataFrame) -> np.ndarray:
    """Per labelled row, the loss of the prediction that was logged for it (NaN when the label
    or prediction is unusable): log loss for binary classification, squared error divided by
    the bundle's test MSE for regression (so 1.0 is as good as on the test split).

    Args:
        bundle: The bundle that scored the rows (its classes; its test RMSE).
        joined: Payload rows joined with labels (``prediction``, ``label``).
    """
    prediction = joined["prediction"].to_numpy(np.float64)
    schema = bundle.schema
    if schema.task == "regression":
        y = pd.to_numeric(joined["label"], errors="coerce").to_numpy(np.float64)
        scale = float(bundle.metrics.get("rmse") or 1.0) ** 2 or 1.0
        return np.asarray((prediction - y) ** 2 / scale, dtype=np.float64)
    if len(schema.classes) != 2:
        return np.full(len(joined), np.nan)  # the payload log keeps the top class only
    positive = schema.classes[1]
    known = set(schema.classes)
    labels = [normalize_category(v) for v in joined["label"]]
    y = np.array([1.0 if v == positive else 0.0 if v in known else np.nan for v in labels])
    p = np.clip(prediction, _CLIP, 1.0 - _CLIP)
    return np.asarray(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)), dtype=np.float64)


def _finite(values: np.ndarray) -> Moments:
    return Moments.from_values(values[np.isfinite(values)])


def _payload_signals(
    champion: Bundle,
    candidate: Bundle,
    payload: pd.DataFrame | None,
    labels: pd.DataFrame | None,
    *,
    mode: str,
    since: float,
    with_labels: bool,
) -> dict[str, tuple[Moments, Moments] | Moments]:
    """``drift_fit`` from the payload log (rows since the candidate started) and, when labels
    are configured (``with_labels``), ``label_loss`` from the delayed labels: both at every look
    (empty until there are rows)."""
    signals: dict[str, tuple[Moments, Moments] | Moments] = {"drift_fit": Moments()}
    if with_labels:
        signals["label_loss"] = Moments() if mode == "shadow" else (Moments(), Moments())
    if payload is None or payload.empty:
        return signals
    rows = payload[payload["ts"] >= since]
    shadow = rows["shadow"].astype(bool) if "shadow" in rows.columns else None
    answered = rows if shadow is None else rows[~shadow]
    if not answered.empty:
        fit = row_log_likelihood(champion.reference_profile, answered) - row_log_likelihood(
            candidate.reference_profile, answered
        )
        signals["drift_fit"] = _finite(fit)
    if not with_labels or labels is None or labels.empty:
        return signals
    keys = ["request_id", "row"]
    if mode == "shadow" and shadow is not None:
        ours = answered[answered["version"] == champion.version].merge(labels, on=keys)
        theirs = rows[shadow & (rows["version"] == candidate.version)][[*keys, "prediction"]]
        pairs = ours.merge(theirs, on=keys, suffixes=("", "_candidate"))
        if not pairs.empty:
            base = label_losses(champion, pairs)
            other = label_losses(candidate, pairs.assign(prediction=pairs["prediction_candidate"]))
            signals["label_loss"] = _finite(other - base)
        return signals
    joined = answered.merge(labels, on=keys, how="inner")
    arms = []
    for bundle in (champion, candidate):
        part = joined[joined["version"] == bundle.version]
        arms.append(_finite(label_losses(bundle, part)))
    signals["label_loss"] = (arms[0], arms[1])
    return signals


def _server_signals(
    record: dict[str, Any], champion: str, candidate: str, mode: str
) -> dict[str, tuple[Moments, Moments] | Moments]:
    """The server's signals of the mode, every one at every look (an empty :class:`Moments`
    where nothing was counted yet: the test's error rate is split over the same signals)."""
    seen = record.get("seen", {})
    zero = [0.0, 0.0, 0.0]
    if mode == "canary":
        return {
            name: (
                _moments(seen.get(champion, {}).get(name, zero)),
                _moments(seen.get(candidate, {}).get(name, zero)),
            )
            for name in SERVER_SIGNALS
        }
    return {
        name: _moments(seen.get(candidate, {}).get(name, zero)) for name in PAIRED_SERVER_SIGNALS
    }


def _started(entry: dict[str, Any], now: float) -> float:
    """When the candidate started serving (the pointer's ``started``; ``now`` if unreadable)."""
    try:
        return datetime.fromisoformat(str(entry["started"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return now


def _publish(model: str, watch: RolloutWatch) -> None:
    m.ROLLOUT_REQUESTS.labels(model=model, candidate=watch.candidate).set(watch.verdict.requests)
    for result in watch.verdict.signals:
        for bound, value in (
            ("estimate", result.estimate),
            ("low", result.low),
            ("high", result.high),
        ):
            m.ROLLOUT_SIGNAL.labels(model=model, signal=result.name, bound=bound).set(value)


def watch_rollout(
    config: MonitorConfig,
    registry: Registry,
    state: MonitorState,
    *,
    payload: pd.DataFrame | None,
    labels: pd.DataFrame | None,
    now: float,
    say: ProgressFn,
    act: bool = True,
) -> tuple[MonitorState, RolloutWatch | None]:
    """Judge the registry's candidate of ``config.model`` once and act on the verdict
    (``act=False``, a dry run: only say what would be done).

    Returns:
        The new state (its ``rollout`` record) and what was seen and done; ``None`` when no
        candidate is out.
    """
    from kubeloop.registry.rollout import promote_candidate, rollback_candidate

    entry = registry.candidate(config.model)
    champion_version = registry.champion(config.model)
    if entry is None or champion_version is None:
        return replace(state, rollout=None), None
    candidate_version, mode = str(entry["version"]), str(entry["mode"])
    percent = int(entry.get("percent", 0))
    record = dict(state.rollout or {})
    if record.get("candidate") != candidate_version or record.get("champion") != champion_version:
        record = {"candidate": candidate_version, "champion": champion_version, "mode": mode,
                  "started": _started(entry, now)}  # fmt: skip
        say(f"rollout: watching {mode} candidate {candidate_version} beside {champion_version}")
    notes: list[str] = []
    if config.prometheus_url:  # every replica, summed; the increase since the start
        api = PrometheusAPI(config.prometheus_url, config.model, retries=config.retries)
        moments = api.rollout_moments(now - float(record["started"]))
        record["seen"] = {v: {s: list(t) for s, t in sig.items()} for v, sig in moments.items()}
    elif config.metrics_url:
        endpoint = MetricsEndpoint(config.metrics_url, config.model, retries=config.retries)
        counters, restarted = _accumulate(
            record,
            parse_rollout_moments(endpoint.text(), model=config.model),
        )
        record.update(counters)
        if restarted:
            notes.append("the model server restarted; its counters count on from zero")
    champion = load_bundle(registry.fetch(config.model, champion_version))
    candidate = load_bundle(registry.fetch(config.model, candidate_version))
    signals = _server_signals(record, champion_version, candidate_version, mode)
    if config.payload_log is not None:
        signals.update(
            _payload_signals(
                champion,
                candidate,
                payload,
                labels,
                mode=mode,
                since=float(record["started"]),
                with_labels=config.labels is not None,
            )
        )
    policy = config.rollout_policy
    if config.labels is not None:
        policy = replace(
            policy, rules=tuple(r for r in policy.rules if r.name not in PREDICTION_SHIFT)
        )
    verdict = judge(signals, policy=policy, elapsed_s=now - float(record["started"]))
    transition = None
    if act and verdict.action in ("promote", "rollback"):
        carry_out = promote_candidate if verdict.action == "promote" else rollback_candidate
        done = carry_out(
            registry, config.model, version=candidate_version, tracking_uri=config.mlflow_uri
        )
        say(f"rollout: {done.line}")
        transition = done.to_dict()
    watch = RolloutWatch(
        champion=champion_version, candidate=candidate_version, mode=mode, percent=percent,
        verdict=verdict, action=verdict.action, transition=transition, notes=tuple(notes),
    )  # fmt: skip
    _publish(config.model, watch)
    headline = {"promote": "PROMOTE", "rollback": "ROLL BACK", "continue": "keep watching"}
    say(
        f"rollout {mode} {candidate_version}: {headline[verdict.action]} after "
        f"{verdict.requests:g} candidate requests -- " + "; ".join(verdict.reasons)
    )
    if verdict.action != "continue" and act:
        m.ROLLOUT_DECISIONS.labels(model=config.model, action=verdict.action).inc()
        _track(config, candidate_version, watch)
        record = {}
    return replace(state, rollout=record or None), watch


def _track(config: MonitorConfig, version: str, watch: RolloutWatch) -> None:
    """Tag the candidate's MLflow run with the decision (a missing store only logs why)."""
    try:
        from kubeloop.registry.tracking import existing_store, record_rollout_decision

        uri = existing_store(config.mlflow_uri)
        if uri is None:  # nothing was ever tracked there: no store is made for this
            return
        record_rollout_decision(config.model, version, watch.to_dict(), tracking_uri=uri)
    except Exception as error:  # tracking never blocks a decision already carried out
        _log.warning("could not record the rollout decision in MLflow: %s", error)
