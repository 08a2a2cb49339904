"""How many CPUs this process may use: what sizes every pool of threads and workers.

``os.cpu_count()`` counts the machine's cores: in a 1-CPU pod on a 64-core node that is 64
threads fighting over one CPU. The count here is the process's CPU affinity, capped by the
container's CPU limit (the cgroup CPU quota, v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), as
XGBoost counts them itself.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["usable_cpus"]

_CGROUP = Path("/sys/fs/cgroup")


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_quota(_CGROUP)
    if quota is not None:
        cores = min(cores or 1, quota)
    return max(1, cores or 1)


def _cgroup_quota(root: Path) -> int | None:
    """Whole CPUs of the cgroup quota under ``root`` (rounded down, at least 1), ``None``
    without a quota."""
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = (root / "cpu.max").read_text(encoding="ascii").split()
        return None if quota == "max" else max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: a quota of -1 is none
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text(encoding="ascii"))
        return None if quota_us <= 0 or period_us <= 0 else max(1, quota_us // period_us)
    except (OSError, ValueError):
        return None
