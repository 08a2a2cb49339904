"""The HTML report opened in real headless Chromium (Debian's ``chromium``, driven by Playwright).

Checked on both pages (``kubeloop monitor --report-html`` and ``kubeloop report``): no console
error, no network request but the page itself, no script, drifted features first, a table behind
every chart, no horizontal overflow on a phone, and non-blank screenshots at 1280 px and 390 px.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import Loop

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("KUBELOOP_CHROMIUM", "/usr/bin/chromium"))
# The flags of a browser that must not reach out (no background fetches, no QUIC probes).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SHIFTED = {
    "contract", "tenure_months", "monthly_charges", "total_charges", "payment_method",
    "support_calls", "data_usage_gb",
}  # fmt: skip


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A persistent Chromium context on a fresh, empty user-data-dir."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport=DESKTOP,
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class Opened:
    """A page loaded in Chromium and everything it did while loading."""

    page: Any
    url: str
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture(params=["report_page", "monitor_page"])
def opened(request: pytest.FixtureRequest, loop: Loop, browser: Any) -> Iterator[Opened]:
    path: Path = getattr(loop, request.param)
    page = browser.new_page()
    seen = Opened(page, path.resolve().as_uri())
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.set_viewport_size(DESKTOP)
    page.goto(seen.url, wait_until="load")
    try:
        yield seen
    finally:
        page.close()


def _variance_check(path: Path) -> float:
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 50, f"{path.name}: only {colours} colours (blank page?)"
    return float(pixels.std())


def test_loads_without_errors_or_network(opened: Opened) -> None:
    page = opened.page
    assert opened.errors == []
    assert [m for m in opened.console if m.startswith(("error", "warning"))] == []
    assert opened.requests == [opened.url], "the page must load nothing but itself"
    assert page.evaluate("document.scripts.length") == 0
    remote = page.evaluate(
        "[...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || "
        "e.getAttribute('href')).filter(v => /^(https?:)?\\/\\//.test(v))"
    )
    assert remote == []


def test_drifted_features_come_first(opened: Opened) -> None:
    page = opened.page
    listed = page.locator("#drifted-features li").all_inner_texts()
    assert listed, "the drifted traffic must show drifted features"
    classes = page.eval_on_selector_all(
        "#feature-distributions article.feature",
        "els => els.map(e => e.classList.contains('drifted'))",
    )
    names = page.eval_on_selector_all(
        "#feature-distributions article.feature", "els => els.map(e => e.dataset.feature)"
    )
    first_stable = classes.index(False)
    assert all(classes[:first_stable]) and not any(classes[first_stable:])
    assert first_stable == len(listed)
    assert [text.split(" (PSI")[0] for text in listed] == names[:first_stable]
    # generate_churn(covariate_shift=1) moves these (and only these) input distributions.
    assert set(names[:first_stable]) <= SHIFTED, names[:first_stable]
    rows = page.eval_on_selector_all("#drift tbody tr[data-feature]", "els => els.length")
    assert rows == len(names)


def test_content(opened: Opened, loop: Loop) -> None:
    page = opened.page
    assert loop.version in page.title()
    headings = page.locator("h2").all_inner_texts()
    assert headings[:4] == ["Drift", "Prediction distribution", "Model card", "History of the loop"]
    candidates = page.locator("#model-card table").nth(1).inner_text()
    assert "linear" in candidates and "random_forest" in candidates and "(chosen)" in candidates
    for chart in ("curve-roc", "curve-pr", "confusion", "importance", "psi", "versions"):
        assert page.locator(f"svg[aria-labelledby^='{chart}-t']").count() == 1, chart
    # The prediction distribution comes from the payload log, against the reference bins.
    assert page.locator("article.feature[data-feature='prediction'] svg").count() == 1
    history = page.locator("#history table").last.inner_text()
    assert history.count("no retrain") >= 1 and "drift share" in history
    # Every chart has a title and a data table (the accessible fallback).
    charts = page.eval_on_selector_all(
        "svg.chart",
        "els => els.map(s => [!!s.querySelector('title'), "
        "!!s.closest('figure').querySelector('details table')])",
    )
    assert charts and all(title and data for title, data in charts), charts


def test_screenshots_desktop_and_phone(opened: Opened, tmp_path: Path) -> None:
    page = opened.page
    desktop = tmp_path / "desktop.png"
    page.screenshot(path=str(desktop), full_page=True)
    assert _variance_check(desktop) > 20
    page.set_viewport_size(PHONE)
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{overflow}px of horizontal scrolling at phone width"
    phone = tmp_path / "phone.png"
    page.screenshot(path=str(phone))
    assert _variance_check(phone) > 20
    keep = os.environ.get("KUBELOOP_SCREENSHOTS")
    if keep:  # for a human to look at
        name = Path(opened.url).stem
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(desktop, Path(keep) / f"{name}-desktop.png")
        shutil.copy(phone, Path(keep) / f"{name}-phone.png")
