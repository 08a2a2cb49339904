"""kubeloop.cpus: the CPUs a process may use, capped by a container's CPU limit (cgroup v2 and v1
files as a kernel writes them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubeloop import cpus


def _v2(root: Path, text: str) -> Path:
    (root / "cpu.max").write_text(text)
    return root


def _v1(root: Path, quota: str, period: str = "100000") -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(period + "\n")
    return root


@pytest.mark.parametrize(
    ("make", "quota"),
    [
        (lambda root: _v2(root, "100000 100000\n"), 1),  # a 1-CPU pod
        (lambda root: _v2(root, "250000 100000\n"), 2),  # 2.5 CPUs: whole CPUs, rounded down
        (lambda root: _v2(root, "50000 100000\n"), 1),  # half a CPU: still one thread
        (lambda root: _v2(root, "max 100000\n"), None),  # no limit
        (lambda root: _v1(root, "300000"), 3),
        (lambda root: _v1(root, "-1"), None),
        (lambda root: root, None),  # no cgroup files at all
    ],
)
def test_cgroup_quota(tmp_path: Path, make: object, quota: int | None) -> None:
    assert cpus._cgroup_quota(make(tmp_path)) == quota  # type: ignore[operator]


def test_usable_cpus_is_capped_by_the_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpus, "_CGROUP", _v2(tmp_path, "100000 100000\n"))
    assert cpus.usable_cpus() == 1
    monkeypatch.setattr(cpus, "_CGROUP", tmp_path / "none")
    assert cpus.usable_cpus() == len(os.sched_getaffinity(0))
