"""The project images: multi-stage, pinned slim bases, non-root, no build tools at run time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.k8s import k8s_helpers as h

DOCKERFILES = [h.ROOT / "components" / "Dockerfile", h.ROOT / "serving" / "Dockerfile"]
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|cmake|git|curl|wget)\b")


def _stages(path: Path) -> list[list[str]]:
    """Instructions of each stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_rules(path: Path) -> None:
    stages = _stages(path)
    assert len(stages) >= 2, "multi-stage: build in one stage, run from a clean one"
    for stage in stages:
        base = stage[0].split()[1]
        assert re.search(r":\d+\.\d+\.\d+[-\w.]*(@sha256:[a-f0-9]{64})?$", base), base
        assert "slim" in base or "distroless" in base, base
    final = stages[-1]
    users = [i.split()[1] for i in final if i.upper().startswith("USER ")]
    assert users and re.fullmatch(r"\d{5,}(:\d+)?", users[-1]), "numeric non-root USER"
    runs = " ".join(i for i in final if i.upper().startswith("RUN "))
    installs = re.findall(r"apt-get install[^&;]*", runs)
    assert not any(BUILD_TOOLS.search(i) for i in installs), installs
    assert "pip install" not in runs, "install in the build stage, copy the result"


def test_build_context_excludes_local_state() -> None:
    # A whitelist: everything is excluded, then only what the images install comes back.
    ignore = [
        line.strip()
        for line in (h.ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    assert {"!pyproject.toml", "!src/"} <= set(ignore)
    assert not any(p.startswith(("!.venv", "!.git", "!tests")) for p in ignore)
