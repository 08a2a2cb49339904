"""Shared fixtures: one Ray instance per test run, the shared real datasets, generated data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The real datasets live beside the project (never inside it), in ../shared/datasets, which every
# machine of this project (and CI) has; KUBELOOP_DATASETS points elsewhere. A missing dataset
# fails the tests that need it: a skip would hide that they never ran.
SHARED_DATASETS = Path(
    os.environ.get("KUBELOOP_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)
TELCO = SHARED_DATASETS / "telco_customer_churn.csv"
HOUSING = SHARED_DATASETS / "california_housing.csv"


def _dataset(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(
            f"shared dataset {path.name} not found at {path.parent} (not part of the repo): put "
            "shared/datasets beside the repository or set KUBELOOP_DATASETS to its folder",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def telco_csv() -> Path:
    """Path of the IBM Telco churn CSV (fails when it is absent)."""
    return _dataset(TELCO)


@pytest.fixture(scope="session")
def housing_csv() -> Path:
    """Path of the California housing CSV (fails when it is absent)."""
    return _dataset(HOUSING)


# On a loaded 2-core machine Ray's node can take longer than its default 60 s to register.
os.environ.setdefault("RAY_raylet_start_wait_time_s", "300")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start Ray once for the whole test run (2 CPUs, no dashboard) and stop it at the end."""
    import ray

    from kubeloop.training import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def churn_frame() -> Any:
    """2,000 rows of generated churn-like data (target ``churned``)."""
    from kubeloop.data.synth import generate_churn

    return generate_churn(2000, seed=7)


@pytest.fixture(scope="session")
def churn_bundle(tmp_path_factory: pytest.TempPathFactory, churn_frame: Any) -> Path:
    """A bundle trained once per test run on generated churn data (read-only: do not modify).

    XGBoost trains in this process (``workers=0``: no Ray needed)."""
    from kubeloop.training import TrainConfig
    from kubeloop.training.workflow import run_training

    out = tmp_path_factory.mktemp("bundles") / "churn"
    config = TrainConfig(workers=0, num_boost_round=60, early_stopping_rounds=10)
    run_training(churn_frame, target="churned", out=out, config=config, name="churn")
    return out


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Name the test order's seed at the end (``-q`` hides pytest-randomly's header)."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(
            f"test order: pytest-randomly seed {seed} (again: PYTEST_ARGS=--randomly-seed={seed})"
        )
