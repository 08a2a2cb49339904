"""Gather the report's inputs (bundle, live counts, registry, monitor state) and write the page."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from kubeloop.bundle import Bundle
from kubeloop.charts import number
from kubeloop.errors import ConfigError
from kubeloop.monitoring.decision import MonitorState
from kubeloop.monitoring.monitor import MonitorConfig, MonitorResult
from kubeloop.monitoring.payload import read_payload_log
from kubeloop.monitoring.report import (
    PREDICTION,
    Counts,
    DriftConfig,
    compare_profile,
    count_frame,
)
from kubeloop.monitoring.sources import MetricsEndpoint
from kubeloop.registry import Registry
from kubeloop.report._sections import drift_section, history_section, model_card, stamp

__all__ = ["build_report", "live_counts", "monitor_report", "registry_versions", "write_report"]

_CSS = """
:root{--ink:#1d2330;--muted:#5b6472;--line:#dde1e6;--bg:#f6f7f9;--drift:#b42318;--ok:#1f7a4d}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:var(--bg)}
header,main{max-width:1180px;margin:0 auto;padding:0 20px}
header{padding-top:20px}
h1{font-size:1.6rem;margin:.2em 0}h2{font-size:1.3rem;margin:1.6em 0 .5em;
border-bottom:2px solid var(--line);padding-bottom:.2em}h3{font-size:1.05rem;margin:1.2em 0 .4em}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:4px 20px 20px;
margin:18px 0}
nav ul{display:flex;flex-wrap:wrap;gap:8px 18px;padding:0;list-style:none;margin:.4em 0}
a{color:#1f5ca8}
.summary{font-size:1.02rem}.note{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:10px 14px;min-width:0}
.card b{display:block;font-size:1.3rem;overflow-wrap:anywhere;line-height:1.25}
.card b.long{font-size:.95rem;font-family:ui-monospace,monospace}
.card span{color:var(--muted);font-size:.85rem}
.card.alert{border-color:var(--drift)}.card.alert b{color:var(--drift)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:.6em 0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;font-weight:600;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0;font-size:.9rem;min-width:50%}
caption{text-align:left;color:var(--muted);font-size:.85rem;padding-bottom:4px}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.chosen td{font-weight:600;background:#eef5ff}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:16px}
.features{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,520px),1fr));gap:16px}
figure{margin:0;min-width:0}figure img,svg.chart{width:100%;height:auto;display:block}
figure.wide svg.chart{max-width:900px}svg.chart.medium{max-width:560px}
svg.chart.small{max-width:380px}
figcaption{color:var(--muted);font-size:.85rem}
details{margin-top:4px}summary{cursor:pointer;color:#1f5ca8;font-size:.85rem}
article.feature{border:1px solid var(--line);border-radius:8px;padding:4px 14px 12px;min-width:0}
article.feature.drifted{border-left:5px solid var(--drift)}
article.feature h3{margin-top:.6em}
.badge{display:inline-block;border-radius:999px;padding:0 9px;font-size:.78rem;font-weight:600;
vertical-align:middle}
.badge.drift{background:#fde8e7;color:var(--drift)}.badge.ok{background:#e6f4ec;color:var(--ok)}
.badge.idle{background:#eceff3;color:var(--muted)}
#drifted-features li{color:var(--drift);font-weight:600}
footer{max-width:1180px;margin:0 auto;padding:10px 20px 30px;color:var(--muted);font-size:.85rem}
@media (max-width:600px){body{font-size:14px}header,main{padding:0 10px}
section{padding:2px 12px 14px}dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:6px}
h1{font-size:1.3rem}}
"""


def live_counts(
    bundle: Bundle,
    *,
    metrics_url: str | None = None,
    payload_log: Path | None = None,
    since: float | None = None,
) -> tuple[dict[str, dict[str, float]] | None, str]:
    """Live bin counts for ``bundle`` and a line saying where they came from.

    The payload log gives every feature and the prediction (rows served by this version only);
    the server's ``/metrics`` gives the features' cumulative counters since it started. With
    both, the features come from ``/metrics`` and the prediction from the payload log.

    Raises:
        SourceError: ``metrics_url`` cannot be read.
        ConfigError: The server at ``metrics_url`` serves another version.
    """
    counts: dict[str, dict[str, float]] = {}
    sources = []
    if payload_log is not None:
        frame = read_payload_log(
            Path(payload_log), model=bundle.name, version=bundle.version, since=since
        )
        counts.update(count_frame(bundle.reference_profile, frame))
        sources.append(
            f"payload log {payload_log} ({len(frame):,} rows served by {bundle.version})"
        )
    if metrics_url:
        scrape = MetricsEndpoint(metrics_url, bundle.name).scrape()
        if scrape.version not in (None, bundle.version):
            raise ConfigError(
                f"{metrics_url} serves {bundle.name} {scrape.version}, not {bundle.version}; "
                "its counters are in that version's bins: report on the served version instead."
            )
        counts.update(scrape.counts)
        sources.append(f"the server's counters at {metrics_url}")
    if not sources:
        return None, ""
    return counts, " and ".join(sources)


def registry_versions(registry: Registry, model: str) -> list[dict[str, Any]]:
    """Every registered version, oldest first: created time, model kind, test metrics, status."""
    champion = registry.champion(model)
    found = []
    for version in registry.versions(model):
        manifest = registry.manifest(model, version)
        path = registry.fetch(model, version) / "metrics.json"
        metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        created = manifest.get("created")
        try:
            created_s = datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
        except ValueError:
            created_s = None
        found.append(
            {
                "version": version,
                "created": created,
                "created_s": created_s,
                "model": metrics.get("model"),
                "roc_auc": metrics.get("roc_auc"),
                "rmse": metrics.get("rmse"),
                "status": "champion" if version == champion else "registered",
            }
        )
    return found


def _cards(bundle: Bundle, drift: Any, champion: Mapping[str, Any] | None) -> str:
    metric = "roc_auc" if bundle.schema.task == "classification" else "rmse"
    cards = [
        ("model version", bundle.version, False),
        (f"test {metric}", number(bundle.metrics.get(metric), 4), False),
    ]
    if drift is not None:
        drifted = len(drift.drifted_features)
        cards.append(("features drifted", f"{drifted} of {len(drift.judged)}", drifted > 0))
        cards.append(("live rows", f"{drift.rows:,}", False))
    if champion:
        cards.append(("champion now", str(champion["version"]), False))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card{" alert" if alert else ""}">'
            f"<b{' class=long' if len(value) > 12 else ''}>{escape(value)}</b>"
            f"<span>{escape(label)}</span></div>"
            for label, value, alert in cards
        )
        + "</div>"
    )


def build_report(
    bundle: Bundle,
    *,
    counts: Counts | None = None,
    source: str = "",
    drift: DriftConfig | None = None,
    registry: Registry | None = None,
    state: MonitorState | None = None,
    now: float | None = None,
) -> str:
    """The whole report as one self-contained HTML page (inline CSS and SVG, no script).

    Args:
        bundle: The model the report is about (its card; its reference profile for drift).
        counts: Live ``feature -> {bin label -> count}`` (:func:`live_counts`); ``None`` leaves
            drift out.
        source: Where ``counts`` came from, shown beside them.
        drift: Thresholds (the monitor's); default :class:`DriftConfig`.
        registry: Versions over time and the champion pointer.
        state: The monitor's state (its history of runs, decisions and gate results).
        now: Generation time (Unix seconds).
    """
    report = compare_profile(bundle.reference_profile, counts, config=drift) if counts else None
    versions = registry_versions(registry, bundle.name) if registry is not None else []
    champion = registry.champion_record(bundle.name) if registry is not None else None
    history = list(state.history) if state is not None else []
    if state is not None and not history and state.last_decision:
        history = [{"at": state.last_decision.get("at"), "decision": state.last_decision}]
    title = f"kubeloop report: {bundle.name} {bundle.version}"
    generated = stamp(time.time() if now is None else now)
    nav = "".join(
        f'<li><a href="#{anchor}">{label}</a></li>'
        for anchor, label in (
            ("drift", "Drift"),
            ("prediction-h", "Prediction distribution"),
            ("model-card", "Model card"),
            ("history", "History"),
        )
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>{escape(title)}</h1><p class="note">Generated {generated} by '
        f'<code>kubeloop report</code>.</p><nav aria-label="sections"><ul>{nav}</ul></nav>'
        f"{_cards(bundle, report, champion)}</header><main>"
        f"{drift_section(bundle, report, counts, source)}"
        f"{model_card(bundle)}"
        f"{history_section(versions, champion, history, task=bundle.schema.task)}"
        "</main><footer>One self-contained file: no scripts, no network.</footer></body></html>\n"
    )


def monitor_report(
    config: MonitorConfig, result: MonitorResult, *, since: float | None = None
) -> str:
    """The report of one monitor run: its bundle, its drift window, the state's history.

    The features' counts are the run's own window (``result.counts``); the prediction comes
    from the payload log (rows since ``since``, default the monitor's window) when it is kept.
    """
    from kubeloop.bundle import load_bundle
    from kubeloop.monitoring.decision import load_state
    from kubeloop.monitoring.monitor import parse_window

    registry = Registry(config.registry) if config.registry is not None else None
    if registry is not None:
        bundle = load_bundle(registry.fetch(config.model, result.bundle_version))
    else:
        assert config.model_dir is not None
        bundle = load_bundle(config.model_dir)
    counts = dict(result.counts) if result.counts is not None else None
    source = "the monitor's last window"
    if counts is not None and PREDICTION not in counts and config.payload_log is not None:
        since = time.time() - parse_window(config.window) if since is None else since
        payload, _ = live_counts(bundle, payload_log=config.payload_log, since=since)
        if payload and PREDICTION in payload:
            counts[PREDICTION] = payload[PREDICTION]
            source += f"; the prediction from the payload log since {stamp(since)}"
    state = load_state(config.state_file) if config.state_file.is_file() else None
    return build_report(
        bundle, counts=counts, source=source, drift=config.drift, registry=registry, state=state
    )


def write_report(path: Path, page: str) -> Path:
    """Write ``page`` to ``path`` atomically (a reader never sees half a page)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
