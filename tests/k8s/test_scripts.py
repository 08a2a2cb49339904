"""The kind scripts pass shellcheck and use only the pinned versions."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.k8s import k8s_helpers as h
from tests.tools import tool

SCRIPTS = sorted((h.ROOT / "hack").glob("kind-*.sh"))


def test_the_kind_scripts_exist() -> None:
    assert {p.name for p in SCRIPTS} == {"kind-lib.sh", "kind-up.sh", "kind-e2e.sh", "kind-down.sh"}


def test_shellcheck_passes() -> None:
    result = subprocess.run(
        [tool("shellcheck"), "--external-sources", "--severity=style", *map(str, SCRIPTS)],
        cwd=h.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_catches_a_bug(tmp_path: Path) -> None:
    script = tmp_path / "bad.sh"
    script.write_text("#!/usr/bin/env bash\nrm -rf $DIR/*\n")
    result = subprocess.run(
        [tool("shellcheck"), str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_scripts_are_strict_and_take_versions_from_versions_env() -> None:
    for script in SCRIPTS:
        text = script.read_text()
        if script.name != "kind-lib.sh":
            assert "set -euo pipefail" in text, script.name
        # Every --version comes from versions.env, never a literal.
        for match in re.finditer(r"--version\s+(\S+)", text):
            assert match.group(1).startswith('"${'), (script.name, match.group(0))
