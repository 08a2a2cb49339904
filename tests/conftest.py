"""Shared fixtures: one Ray instance per test run, the shared real datasets, generated data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The real datasets live beside the project (never inside it); tests that need them skip
# with this reason on a fresh clone.
SHARED_DATASETS = Path(
    os.environ.get("KUBELOOP_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)
TELCO = SHARED_DATASETS / "telco_customer_churn.csv"
HOUSING = SHARED_DATASETS / "california_housing.csv"


def _dataset(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"shared dataset {path.name} not found at {path.parent} (not part of the repo)")
    return path


@pytest.fixture(scope="session")
def telco_csv() -> Path:
    """Path of the IBM Telco churn CSV (skips when ../shared/datasets is absent)."""
    return _dataset(TELCO)


@pytest.fixture(scope="session")
def housing_csv() -> Path:
    """Path of the California housing CSV (skips when ../shared/datasets is absent)."""
    return _dataset(HOUSING)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start Ray once for the whole test run (2 CPUs, no dashboard) and stop it at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
