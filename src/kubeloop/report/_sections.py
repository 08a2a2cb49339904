"""The three parts of the report as HTML fragments: model card, drift, the loop's history.

Each chart comes with a ``<details>`` table of the numbers it draws (the accessible fallback
and the way to copy the numbers out).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from itertools import pairwise
from typing import Any

import numpy as np

from kubeloop import charts
from kubeloop.bundle import Bundle
from kubeloop.bundle.dates import format_seconds
from kubeloop.bundle.profile import MISSING_BIN, UNKNOWN_BIN
from kubeloop.bundle.schema import OTHER_CATEGORY
from kubeloop.monitoring.report import (
    PREDICTION,
    Counts,
    DriftReport,
    FeatureDrift,
    align_counts,
    count_labels,
    reference_counts,
)

__all__ = ["drift_section", "history_section", "model_card", "stamp", "table"]

_SUMMARY = {
    "classification": ("roc_auc", "pr_auc", "f1", "accuracy", "precision", "recall", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}


def stamp(seconds: float | str | None) -> str:
    """A UTC time as ``YYYY-MM-DD HH:MM:SS UTC`` (from Unix seconds or ISO text)."""
    if seconds is None:
        return "-"
    if isinstance(seconds, str):
        try:
            return stamp(datetime.fromisoformat(seconds.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return seconds
    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, np.floating)):
        return charts.number(float(value), 4)
    return escape("-" if value is None else str(value))


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    caption: str = "",
    row_attrs: Sequence[str] = (),
    raw: bool = False,
) -> str:
    """An HTML table in a horizontally scrolling box; numbers right-aligned.

    ``raw`` cells are inserted as given (already HTML); otherwise escaped/formatted.
    """
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = []
    for i, row in enumerate(rows):
        attrs = f" {row_attrs[i]}" if i < len(row_attrs) else ""
        cells = []
        for value in row:
            number = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
            text = str(value) if raw and isinstance(value, str) else _cell(value)
            cells.append(f'<td class="num">{text}</td>' if number else f"<td>{text}</td>")
        body.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (
        f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _figure(chart: str, caption: str, data: str) -> str:
    return (
        f"<figure>{chart}<figcaption>{escape(caption)}</figcaption>"
        f"<details><summary>Data table: {escape(caption)}</summary>{data}</details></figure>"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


# -- model card ------------------------------------------------------------------------------


def _facts(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{_cell(v)}</dd>" for k, v in items)
    return f'<dl class="facts">{rows}</dl>'


def _data_table(bundle: Bundle) -> str:
    features = bundle.reference_profile.get("features", {})
    rows = []
    for info in bundle.schema.features:
        profile = features.get(info.name, {})
        if info.is_numeric:
            values = f"{charts.number(info.minimum)} … {charts.number(info.maximum)}"
        elif info.kind == "datetime" and info.minimum is not None and info.maximum is not None:
            values = f"{format_seconds(info.minimum)} … {format_seconds(info.maximum)}"
        else:
            shown = [_category_name(c) for c in info.categories]
            values = ", ".join(shown[:8]) + (" …" if len(shown) > 8 else "")
        rows.append((info.name, info.kind, values, profile.get("missing", 0)))
    rows_total = bundle.reference_profile.get("rows")
    return table(
        ("feature", "kind", "values seen in training", "missing in training"),
        rows,
        caption=f"Input features, in model order ({rows_total} training rows profiled)",
    )


def _candidates(metrics: Mapping[str, Any], task: str) -> str:
    columns = _SUMMARY.get(task, ())
    scores = metrics.get("validation_scores", {})
    rows, attrs = [], []
    for name, values in metrics.get("candidates", {}).items():
        chosen = name == metrics.get("model")
        rows.append(
            (
                f"{name} (chosen)" if chosen else name,
                scores.get(name),
                *(values.get(c) for c in columns),
            )
        )
        attrs.append('class="chosen"' if chosen else "")
    return table(
        ("candidate", "validation score", *columns),
        rows,
        caption="Candidates: test-split metrics; the best validation score is chosen",
        row_attrs=attrs,
    )


def _curve_figures(bundle: Bundle) -> list[str]:
    curves = bundle.metrics.get("curves") or {}
    figures = []
    for key, (title, x_label, y_label, score) in charts.CURVES.items():
        series = curves.get(key) or []
        if not series:
            continue
        data = "".join(
            table(
                (x_label, y_label),
                list(zip(s["x"], s["y"], strict=True)),
                caption=f"{s['name']} ({score} {s['score']:.3f})",
            )
            for s in series
        )
        figures.append(_figure(charts.curve(key, series), f"{title} (test split)", data))
    residuals = curves.get("residuals")
    if residuals:
        edges, counts = residuals["edges"], residuals["counts"]
        rows = [
            (f"{charts.number(a)} … {charts.number(b)}", c)
            for a, b, c in zip(edges, edges[1:], counts, strict=False)
        ]
        figures.append(
            _figure(
                charts.residuals(edges, counts),
                "Residuals, test split",
                table(("residual", "rows"), rows),
            )
        )
    return figures


def _png_figures(bundle: Bundle) -> list[str]:
    """Bundles written before metrics.json kept curve points: show their PNG plots inline."""
    figures = []
    for name in ("roc", "pr", "residuals"):
        path = bundle.path / f"{name}.png"
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            figures.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{name} plot of the test '
                f'split (the bundle holds no curve data)"><figcaption>{name} (bundle plot)'
                "</figcaption></figure>"
            )
    return figures


def _confusion(bundle: Bundle) -> str:
    matrix = bundle.metrics.get("confusion_matrix")
    if not matrix:
        return ""
    names = list(bundle.schema.classes) or [str(i) for i in range(len(matrix))]
    chart = charts.matrix("confusion", matrix, names, title="Confusion matrix (test split)")
    rows = [(f"true {names[i]}", *row) for i, row in enumerate(matrix)]
    data = table(("", *(f"predicted {n}" for n in names)), rows)
    return _figure(chart, "Confusion matrix (test split)", data)


def _importance(bundle: Bundle) -> str:
    try:
        scores = bundle.model.feature_importance(bundle.preprocessor.output_columns)
    except (ValueError, AttributeError):
        return ""
    top = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:15]
    if not top:
        return ""
    other = f"={OTHER_CATEGORY}"  # a one-hot column of the other category, named in words
    top = [(n.removesuffix(other) + "=(other)" if n.endswith(other) else n, v) for n, v in top]
    chart = charts.importance("importance", top, title="Feature importance", what="model input")
    data = table(("model input", "importance"), top)
    return _figure(chart, f"Feature importance (top {len(top)} model inputs)", data)


def model_card(bundle: Bundle) -> str:
    """Task, data, candidates, chosen model, test metrics, curves, confusion, importance."""
    manifest, metrics, schema = bundle.manifest, bundle.metrics, bundle.schema
    facts = [
        ("model", bundle.name),
        ("version", bundle.version),
        ("created", stamp(manifest.get("created"))),
        ("task", schema.task),
        ("target", schema.target),
        ("classes", ", ".join(schema.classes) or "-"),
        ("chosen model", metrics.get("model", manifest.get("model", {}).get("kind"))),
        (
            "features",
            f"{len(schema.numeric_features)} numeric, "
            f"{len(schema.categorical_features)} categorical, "
            f"{len(schema.datetime_features)} date/time",
        ),
        ("training data sha256", str(manifest.get("data_hash", "-"))[:16]),
    ]
    shown = [m for m in _SUMMARY.get(schema.task, ()) if metrics.get(m) is not None]
    test = table(("metric", "test split"), [(m, metrics[m]) for m in shown])
    charts = _curve_figures(bundle) or _png_figures(bundle)
    charts += [c for c in (_confusion(bundle), _importance(bundle)) if c]
    return (
        '<section id="model-card" aria-labelledby="model-card-h">'
        '<h2 id="model-card-h">Model card</h2>'
        f"{_facts(facts)}"
        f"<h3>Test metrics of the chosen model ({escape(str(metrics.get('model', '-')))})</h3>"
        f"{test}<h3>Candidates</h3>{_candidates(metrics, schema.task)}"
        f'<h3>Evaluation</h3><div class="grid">{"".join(charts)}</div>'
        f"<h3>Data</h3>{_data_table(bundle)}</section>"
    )


# -- drift -----------------------------------------------------------------------------------


def _bin_names(feature_profile: Mapping[str, Any]) -> list[str]:
    labels = count_labels(feature_profile)
    if feature_profile["kind"] == "datetime":
        edges = [format_seconds(float(e)) for e in feature_profile["edges"]]
    elif feature_profile["kind"] == "numeric":
        edges = [charts.number(float(e)) for e in feature_profile["edges"]]
    else:
        return [_category_name(label) for label in labels]
    if not edges:
        return ["all values", "(missing)"]
    names = [f"≤ {edges[0]}"]
    names += [f"{a} – {b}" for a, b in pairwise(edges)]
    return [*names, f"> {edges[-1]}", "(missing)"]


def _category_name(label: str) -> str:
    """A category or bin label as the page shows it (the reserved names in words)."""
    names = {UNKNOWN_BIN: "(unknown)", MISSING_BIN: "(missing)", OTHER_CATEGORY: "(other)"}
    return names.get(label, label)


def _order(items: Sequence[FeatureDrift]) -> list[FeatureDrift]:
    """Drifted first, then by PSI (highest first), features not judged last."""
    return sorted(
        items,
        key=lambda f: (not f.drifted, math.isnan(f.psi), -(0 if math.isnan(f.psi) else f.psi)),
    )


def _verdict(item: FeatureDrift) -> str:
    if math.isnan(item.psi):
        return '<span class="badge idle">not judged (too few rows)</span>'
    if item.drifted:
        return '<span class="badge drift">drifted</span>'
    return '<span class="badge ok">stable</span>'


def _feature_article(item: FeatureDrift, feature_profile: Mapping[str, Any], live: Any) -> str:
    name = "prediction" if item.feature == PREDICTION else item.feature
    ref = reference_counts(feature_profile)
    cur = align_counts(feature_profile, live or {})
    ref_share = ref / max(ref.sum(), 1.0)
    cur_share = cur / max(cur.sum(), 1.0)
    labels = _bin_names(feature_profile)
    keep = [i for i in range(len(labels)) if ref[i] > 0 or cur[i] > 0]
    chart = charts.bars(
        f"dist-{_slug(name)}",
        [labels[i] for i in keep],
        [
            ("reference (training)", charts.REFERENCE, [float(ref_share[i]) for i in keep]),
            ("live", charts.LIVE, [float(cur_share[i]) for i in keep]),
        ],
        title=f"{name}: reference vs live distribution",
        desc=f"Share of rows per reference bin of {name}; PSI {charts.number(item.psi)}",
    )
    rows = [
        (
            labels[i],
            int(ref[i]),
            f"{ref_share[i] * 100:.1f}%",
            int(cur[i]),
            f"{cur_share[i] * 100:.1f}%",
        )
        for i in range(len(labels))
    ]
    data = table(("bin", "reference rows", "reference share", "live rows", "live share"), rows)
    test = (
        f"{item.test.upper()} statistic {charts.number(item.statistic)}, "
        f"p = {charts.number(item.p_value, 2)}"
    )
    css = "drifted" if item.drifted else "stable"
    return (
        f'<article class="feature {css}" data-feature="{escape(name)}" '
        f'aria-labelledby="f-{_slug(name)}"><h3 id="f-{_slug(name)}">{escape(name)} '
        f"{_verdict(item)}</h3><p>PSI <strong>{charts.number(item.psi)}</strong> "
        f"(threshold {charts.number(item.threshold)}) · {escape(test)} · "
        f"{item.rows:,} live rows · {escape(item.kind)}</p>"
        f"{_figure(chart, f'{name}: share of rows per reference bin', data)}</article>"
    )


def drift_section(
    bundle: Bundle, drift: DriftReport | None, counts: Counts | None, source: str
) -> str:
    """PSI overview (drifted first), then each feature's distributions, then the prediction's."""
    head = '<section id="drift" aria-labelledby="drift-h"><h2 id="drift-h">Drift</h2>'
    if drift is None or counts is None:
        return (
            f'{head}<p class="note">No live traffic was given, so drift is not shown. Pass '
            "<code>--metrics-url</code> (the server's /metrics) or <code>--payload-log</code>."
            "</p></section>"
        )
    ordered = _order(drift.features)
    drifted = [f for f in ordered if f.drifted]
    judged = drift.judged
    summary = (
        f'<p class="summary"><strong>{len(drifted)} of {len(judged)}</strong> judged features '
        f"drifted over {drift.rows:,} live rows (drift share {drift.drift_share:.2f}). A feature "
        "drifts when its PSI reaches its threshold. Live data: "
        f"{escape(source)}.</p>"
    )
    listing = (
        '<ol id="drifted-features" aria-label="drifted features">'
        + "".join(f"<li>{escape(f.feature)} (PSI {charts.number(f.psi)})</li>" for f in drifted)
        + "</ol>"
        if drifted
        else '<p id="drifted-features">No feature drifted.</p>'
    )
    psi_items = [(f.feature, f.psi) for f in ordered]
    threshold = drift.features[0].threshold if drift.features else None
    chart = charts.hbars(
        "psi",
        psi_items,
        title="PSI per feature",
        threshold=threshold,
        alert=lambda name, _v: name in {f.feature for f in drifted},
        desc="Population stability index per feature, drifted features first: "
        + ", ".join(f"{n} {charts.number(v)}" for n, v in psi_items),
    )
    rows = [
        (f.feature, f.kind, f.rows, f.psi, f.threshold, _verdict(f), f.test, f.p_value)
        for f in ordered
    ]
    psi_table = table(
        ("feature", "kind", "live rows", "PSI", "threshold", "verdict", "test", "p-value"),
        rows,
        caption="PSI per feature, drifted first",
        row_attrs=[f'data-feature="{escape(f.feature)}"' for f in ordered],
        raw=True,
    )
    profiles = bundle.reference_profile["features"]
    articles = "".join(
        _feature_article(f, profiles[f.feature], counts.get(f.feature)) for f in ordered
    )
    prediction = drift.prediction
    if prediction is not None and bundle.reference_profile.get("prediction"):
        live = counts.get(PREDICTION) or counts.get("prediction")
        pred_html = (
            '<div class="features">'
            + _feature_article(prediction, bundle.reference_profile["prediction"], live)
            + "</div>"
        )
    else:
        pred_html = (
            '<p class="note">The live prediction distribution over the reference bins comes '
            "from the payload log; pass <code>--payload-log</code> to see it.</p>"
        )
    return (
        f"{head}{summary}<h3>Drifted features</h3>{listing}"
        f'<figure class="wide">{chart}<figcaption>PSI per feature</figcaption>'
        f"<details><summary>Data table: PSI per feature</summary>{psi_table}</details></figure>"
        "<h3>Distributions per feature</h3>"
        f'<div class="features" id="feature-distributions">{articles}</div>'
        f'<h2 id="prediction-h">Prediction distribution</h2>{pred_html}</section>'
    )


# -- history ---------------------------------------------------------------------------------


def _clock(span: float) -> Callable[[float], str]:
    """Tick labels of a time axis: seconds for short spans, dates for long ones."""
    pattern = "%H:%M:%S" if span < 3 * 3600 else "%m-%d %H:%M" if span < 5 * 86400 else "%Y-%m-%d"
    return lambda s: datetime.fromtimestamp(s, UTC).strftime(pattern)


def _run_cell(run: Mapping[str, Any] | None) -> str:
    if not run:
        return "-"
    if run.get("promoted") is True:
        verdict = f"PROMOTED {run.get('challenger_version')}"
    elif run.get("promoted") is False:
        verdict = f"kept {run.get('champion_version')}"
    else:
        verdict = f"{run.get('state', 'submitted')} {run.get('run_id')}"
    scores = ""
    if run.get("challenger_score") is not None and run.get("champion_score") is not None:
        scores = (
            f" (new {charts.number(run['challenger_score'], 4)} vs old "
            f"{charts.number(run['champion_score'], 4)})"
        )
    return f"{verdict}{scores}: {run.get('reason', '')}"


def _decision_cell(record: Mapping[str, Any]) -> str:
    decision = record.get("decision") or {}
    if record.get("error") and not decision:
        return f"source error: {record['error']}"
    verdict = "RETRAIN" if decision.get("retrain") else "no retrain"
    if decision.get("blocked_by"):
        verdict = f"wanted, blocked by {decision['blocked_by']}"
    return f"{verdict} — {'; '.join(decision.get('details', ()))}"


def _rollout_table(history: Sequence[Mapping[str, Any]]) -> str:
    """The staged rollouts' decisions (promote, roll back) with their reasons; "" if none."""
    ended = [
        r for r in history if (r.get("rollout") or {}).get("action") in {"promote", "rollback"}
    ]
    if not ended:
        return ""
    rows = []
    for record in ended:
        rollout = record["rollout"]
        verdict = rollout.get("verdict") or {}
        action = "PROMOTED" if rollout["action"] == "promote" else "ROLLED BACK"
        rows.append(
            (
                stamp(record.get("at")),
                f"{rollout.get('mode')} {rollout.get('percent') or ''}".strip(),
                rollout.get("candidate"),
                rollout.get("champion"),
                action,
                verdict.get("requests"),
                "; ".join(verdict.get("reasons", ())),
            )
        )
    return "<h3>Staged rollouts</h3>" + table(
        ("time", "rollout", "candidate", "champion then", "decision", "candidate requests",
         "reasons"),
        rows,
        caption="Canary and shadow rollouts the monitor ended, oldest first",
    )  # fmt: skip


def history_section(
    versions: Sequence[Mapping[str, Any]],
    champion: Mapping[str, Any] | None,
    history: Sequence[Mapping[str, Any]],
    *,
    task: str,
) -> str:
    """Versions over time (registry), monitor runs with decisions and gate results (state)."""
    parts = [
        '<section id="history" aria-labelledby="history-h">'
        '<h2 id="history-h">History of the loop</h2>'
    ]
    metric = "roc_auc" if task == "classification" else "rmse"
    if champion:
        since = stamp(champion.get("updated"))
        previous = champion.get("previous")
        parts.append(
            f'<p class="summary">Champion: <strong>{escape(str(champion["version"]))}</strong> '
            f"since {since}"
            + (f", replacing {escape(str(previous))}" if previous else "")
            + ".</p>"
        )
    if versions:
        dated = [
            v for v in versions if v.get("created_s") is not None and v.get(metric) is not None
        ]
        if dated:
            xs = [float(v["created_s"]) for v in dated]
            ys = [float(v[metric]) for v in dated]
            low, high = min(ys), max(ys)
            pad = max((high - low) * 0.2, 0.01)
            chart = charts.lines(
                "versions",
                [(f"test {metric}", xs, ys)],
                title=f"Test {metric} per version",
                desc=f"Test {metric} of each registered version over time",
                x_label="created (UTC)",
                y_label=metric,
                x_range=(min(xs) - 60, max(xs) + 60),
                y_range=(low - pad, high + pad),
                points=True,
                x_fmt=_clock(max(xs) - min(xs)),
            )
            data = table(
                ("version", "created", f"test {metric}"),
                [(v["version"], stamp(v.get("created")), v[metric]) for v in dated],
            )
            caption = f"Test {metric} per version (each on its own test split)"
            parts.append(f'<div class="grid">{_figure(chart, caption, data)}</div>')
        rows: list[tuple[Any, ...]] = [
            (v["version"], stamp(v.get("created")), v.get("model"), v.get(metric), v["status"])
            for v in versions
        ]
        parts.append(
            "<h3>Versions</h3>"
            + table(
                ("version", "created", "model", f"test {metric}", "status"),
                rows,
                caption="Registered versions, oldest first",
            )
        )
    else:
        parts.append(
            '<p class="note">No registry given: pass <code>--registry</code> for the '
            "versions over time.</p>"
        )
    if history:
        shares = [
            (float(r["at"]), r["drift_share"]) for r in history if r.get("drift_share") is not None
        ]
        if shares:
            xs, ys = [s for s, _ in shares], [float(v) for _, v in shares]
            chart = charts.lines(
                "drift-share",
                [("drift share", xs, ys)],
                title="Drift share per monitor run",
                desc="Fraction of judged features that drifted, per monitor run",
                x_label="monitor run (UTC)",
                y_label="drift share",
                points=True,
                x_range=(min(xs) - 30, max(xs) + 30),
                y_range=(0.0, 1.0),
                x_fmt=_clock(max(xs) - min(xs)),
            )
            data = table(("monitor run", "drift share"), [(stamp(x), y) for x, y in shares])
            parts.append(
                f'<div class="grid">{_figure(chart, "Drift share per monitor run", data)}</div>'
            )
        rows = [
            (
                stamp(r.get("at")),
                r.get("served_version") or r.get("bundle_version"),
                r.get("rows"),
                r.get("drift_share"),
                ", ".join(r.get("drifted_features") or []) or "-",
                _decision_cell(r),
                _run_cell(r.get("run")),
            )
            for r in history
        ]
        parts.append(
            "<h3>Monitor runs, decisions and gate results</h3>"
            + table(
                (
                    "time",
                    "version",
                    "live rows",
                    "drift share",
                    "drifted",
                    "decision and reasons",
                    "retraining run and gate",
                ),
                rows,
                caption="Monitor runs, oldest first",
            )
        )
        parts.append(_rollout_table(history))
        promotions = [r["run"] for r in history if (r.get("run") or {}).get("promoted")]
        if promotions:
            parts.append(
                "<h3>Promotions</h3><ul>"
                + "".join(
                    f"<li>{escape(str(p.get('previous_champion')))} → "
                    f"<strong>{escape(str(p.get('challenger_version')))}</strong>: "
                    f"{escape(str(p.get('reason', '')))}</li>"
                    for p in promotions
                )
                + "</ul>"
            )
    else:
        parts.append(
            '<p class="note">No monitor state given (or no run recorded yet): pass '
            "<code>--state-file</code> for the monitor's decisions.</p>"
        )
    parts.append("</section>")
    return "".join(parts)
