"""SVG charts drawn from plain numbers: no plotting library, no script, no network.

Every chart is one ``<svg>`` element with ``role="img"``, a ``<title>`` and a ``<desc>`` (what a
screen reader announces), a ``viewBox`` so it scales to the page width, and colours from a
palette readable by people with the common colour-vision deficiencies (blue / orange). Each is a
valid SVG document on its own too.

Two users, one drawing: the HTML report (:mod:`kubeloop.report`, which also gives the numbers
behind each chart as a table) and the evaluation plots a bundle carries
(:func:`kubeloop.training.evaluation.write_plots`), both drawn from the numbers ``metrics.json``
keeps (:func:`curve`, :func:`residuals`, :func:`importance`, :func:`matrix`). Drawing them is a
few milliseconds of string building, so no step pays for importing a plotting library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape
from itertools import pairwise
from typing import Any

__all__ = [
    "CURVES",
    "LIVE",
    "REFERENCE",
    "bars",
    "curve",
    "hbars",
    "importance",
    "lines",
    "matrix",
    "number",
    "residuals",
]

REFERENCE = "#4e79a7"  # blue
LIVE = "#e15759"  # red-orange
ALERT = "#b42318"
MUTED = "#8a8f98"
_SERIES = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7")
_FONT = 'font-family="system-ui, sans-serif"'
# metrics.json curve key -> (title, x label, y label, score name)
CURVES = {
    "roc": ("ROC curve", "false positive rate", "true positive rate", "AUC"),
    "pr": ("Precision-recall curve", "recall", "precision", "AP"),
}


def number(value: float | None, digits: int = 3) -> str:
    """A compact human number: 3 significant digits, thousands separators, ``-`` for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _open(
    ident: str, title: str, desc: str, width: int, height: int, size: str = "", font: int = 12
) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}-t {ident}-d" class="chart{" " + size if size else ""}" '
        f'{_FONT} font-size="{font}">'
        f'<title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{escape(desc)}</desc>'
    )


def _text(x: float, y: float, text: str, **attrs: str | float) -> str:
    extra = " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" {extra}>{escape(text)}</text>'


def _short(label: str, limit: int) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _y_axis(left: float, top: float, bottom: float, right: float, top_value: float) -> str:
    """Horizontal grid lines with percentage ticks from 0 to ``top_value`` (a share)."""
    parts = []
    for i in range(5):
        value = top_value * i / 4
        y = bottom - (bottom - top) * i / 4
        parts.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e5e8"/>')
        parts.append(_text(left - 6, y + 4, f"{value * 100:g}%", text_anchor="end", fill="#555"))
    return "".join(parts)


def bars(
    ident: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float]]],
    *,
    title: str,
    desc: str,
) -> str:
    """Grouped vertical bars of shares (0..1) per label; ``series`` = (name, colour, values)."""
    width, height, left, top, bottom = 560, 260, 50, 30, 190
    right = width - 10
    peak = max((v for _, _, values in series for v in values), default=0.0)
    step = next((s for s in (0.01, 0.025, 0.05, 0.1, 0.125, 0.25) if 4 * s >= peak), 0.25)
    top_value = 4 * step
    slot = (right - left) / max(len(labels), 1)
    bar = slot * 0.8 / max(len(series), 1)
    parts = [
        _open(ident, title, desc, width, height, font=14),
        _y_axis(left, top, bottom, right, top_value),
    ]
    for i, label in enumerate(labels):
        x0 = left + slot * i + slot * 0.1
        for j, (name, colour, values) in enumerate(series):
            value = values[i]
            h = (bottom - top) * value / top_value
            parts.append(
                f'<rect x="{x0 + bar * j:.1f}" y="{bottom - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)} {escape(label)}: '
                f"{value * 100:.1f}%</title></rect>"
            )
        rotate = len(labels) > 8
        cx = left + slot * (i + 0.5)
        text = _short(label, 12 if rotate else max(4, int(slot / 8)))
        if rotate:
            parts.append(
                _text(
                    cx,
                    bottom + 12,
                    text,
                    text_anchor="end",
                    fill="#333",
                    transform=f"rotate(-35 {cx:.1f} {bottom + 12})",
                )
            )
        else:
            parts.append(_text(cx, bottom + 16, text, text_anchor="middle", fill="#333"))
    parts.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#888"/>')
    x = left
    for name, colour, _ in series:  # legend
        parts.append(f'<rect x="{x}" y="8" width="12" height="12" fill="{colour}"/>')
        parts.append(_text(x + 16, 18, name, fill="#333"))
        x += 28 + 8 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def hbars(
    ident: str,
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    desc: str,
    threshold: float | None = None,
    alert: Callable[[str, float], bool] = lambda _n, _v: False,
    fmt: Callable[[float], str] = number,
) -> str:
    """Horizontal bars (one per item, in the given order), optional threshold line."""
    row, left, width = 22, 200, 640
    height = 20 + row * max(len(items), 1) + 20
    right = width - 60
    peak = max([v for _, v in items if not math.isnan(v)] + [threshold or 0.0, 1e-9])
    scale = (right - left) / peak
    parts = [_open(ident, title, desc, width, height)]
    for i, (name, value) in enumerate(items):
        y = 14 + row * i
        shown = 0.0 if math.isnan(value) else value
        colour = ALERT if alert(name, value) else REFERENCE
        parts.append(_text(left - 8, y + 14, _short(name, 25), text_anchor="end", fill="#222"))
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{max(shown * scale, 1):.1f}" height="{row - 6}" '
            f'fill="{colour}"><title>{escape(name)}: {fmt(value)}</title></rect>'
        )
        parts.append(_text(left + shown * scale + 5, y + 14, fmt(value), fill="#222"))
    if threshold is not None:
        x = left + threshold * scale
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="6" y2="{height - 16}" stroke="{ALERT}" '
            'stroke-dasharray="4 3"/>'
        )
        parts.append(
            _text(x, height - 4, f"threshold {fmt(threshold)}", text_anchor="middle", fill=ALERT)
        )
    parts.append("</svg>")
    return "".join(parts)


def lines(
    ident: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    title: str,
    desc: str,
    x_label: str,
    y_label: str,
    diagonal: bool = False,
    x_range: tuple[float, float] = (0.0, 1.0),
    y_range: tuple[float, float] = (0.0, 1.0),
    x_fmt: Callable[[float], str] = number,
    points: bool = False,
) -> str:
    """Line chart (ROC, PR, a metric over time); ``points`` marks every point too."""
    width, height, left, top, bottom = 480, 330, 60, 14, 280
    right = width - 30
    (x0, x1), (y0, y1) = x_range, y_range
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(x: float) -> float:
        return left + (right - left) * (x - x0) / (x1 - x0)

    def py(y: float) -> float:
        return bottom - (bottom - top) * (y - y0) / (y1 - y0)

    parts = [_open(ident, title, desc, width, height, "medium")]
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        parts.append(
            f'<line x1="{left}" x2="{right}" y1="{py(yv):.1f}" y2="{py(yv):.1f}" stroke="#e3e5e8"/>'
        )
        parts.append(_text(left - 6, py(yv) + 4, number(yv), text_anchor="end", fill="#555"))
        parts.append(_text(px(xv), bottom + 16, x_fmt(xv), text_anchor="middle", fill="#555"))
    parts.append(_text((left + right) / 2, height - 4, x_label, text_anchor="middle", fill="#333"))
    parts.append(
        _text(
            14,
            (top + bottom) / 2,
            y_label,
            text_anchor="middle",
            fill="#333",
            transform=f"rotate(-90 14 {(top + bottom) / 2:.1f})",
        )
    )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
        'fill="none" stroke="#888"/>'
    )
    if diagonal:
        parts.append(
            f'<line x1="{px(x0)}" y1="{py(y0)}" x2="{px(x1)}" y2="{py(y1)}" '
            f'stroke="{MUTED}" stroke-dasharray="4 3"/>'
        )
    for k, (name, xs, ys) in enumerate(series):
        colour = _SERIES[k % len(_SERIES)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(name)}</title></polyline>"
        )
        if points:
            parts.extend(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>'
                for x, y in zip(xs, ys, strict=True)
            )
        parts.append(
            f'<rect x="{left + 10}" y="{top + 8 + 16 * k}" width="12" height="4" fill="{colour}"/>'
        )
        parts.append(_text(left + 26, top + 14 + 16 * k, name, fill="#333"))
    parts.append("</svg>")
    return "".join(parts)


def matrix(ident: str, rows: Sequence[Sequence[float]], names: Sequence[str], *, title: str) -> str:
    """A confusion matrix as a heat map: rows = true class, columns = predicted class."""
    n = max(len(rows), 1)
    cell = max(36, min(90, 320 // n))
    left, top = 110, 40
    width, height = left + cell * n + 16, top + cell * n + 30
    peak = max((v for r in rows for v in r), default=1) or 1
    desc = "; ".join(
        f"true {names[i]} predicted {names[j]}: {number(v)}"
        for i, r in enumerate(rows)
        for j, v in enumerate(r)
    )
    parts = [_open(ident, title, desc, width, height, "small")]
    parts.append(_text(left + cell * n / 2, 14, "predicted", text_anchor="middle", fill="#333"))
    for j, name in enumerate(names):
        parts.append(
            _text(
                left + cell * (j + 0.5),
                top - 8,
                _short(name, 10),
                text_anchor="middle",
                fill="#333",
            )
        )
    for i, row in enumerate(rows):
        y = top + cell * i
        parts.append(
            _text(
                left - 8,
                y + cell / 2 + 4,
                f"true {_short(names[i], 10)}",
                text_anchor="end",
                fill="#333",
            )
        )
        for j, value in enumerate(row):
            share = value / peak
            fill = f"rgba(78,121,167,{0.08 + 0.92 * share:.2f})"
            ink = "#fff" if share > 0.55 else "#111"
            x = left + cell * j
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{fill}"/>'
            )
            parts.append(
                _text(
                    x + cell / 2,
                    y + cell / 2 + 4,
                    number(value),
                    text_anchor="middle",
                    fill=ink,
                    font_weight="600",
                )
            )
    parts.append("</svg>")
    return "".join(parts)


def curve(key: str, series: Sequence[Mapping[str, Any]]) -> str:
    """ROC (``key="roc"``) or precision-recall (``"pr"``) curves of the test split.

    Args:
        key: ``"roc"`` or ``"pr"``.
        series: ``metrics.json``'s ``curves[key]``: one ``{"name", "x", "y", "score"}`` per curve.
    """
    title, x_label, y_label, score = CURVES[key]
    named = [(f"{s['name']} ({score} {s['score']:.3f})", s["x"], s["y"]) for s in series]
    return lines(
        f"curve-{key}",
        named,
        title=title,
        x_label=x_label,
        y_label=y_label,
        diagonal=key == "roc",
        desc=f"{title} on the test split: " + ", ".join(n for n, _, _ in named),
    )


def residuals(edges: Sequence[float], counts: Sequence[int]) -> str:
    """The histogram of test-split residuals (true - predicted): ``curves["residuals"]``."""
    total = max(sum(counts), 1)
    return bars(
        "residuals",
        [number((a + b) / 2) for a, b in pairwise(edges)],
        [("test rows", REFERENCE, [c / total for c in counts])],
        title="Residuals (true - predicted)",
        desc="Histogram of test-split residuals",
    )


def importance(ident: str, items: Sequence[tuple[str, float]], *, title: str, what: str) -> str:
    """Importance shares (0..1), the largest first, as horizontal bars labelled in percent."""
    return hbars(
        ident,
        items,
        title=title,
        fmt=lambda v: f"{v * 100:.1f}%",
        desc=f"Share of the model's importance per {what}: " + ", ".join(n for n, _ in items),
    )
