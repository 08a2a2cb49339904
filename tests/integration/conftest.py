"""Everything under tests/integration starts real components (Ray, kfp.local, model servers,
Prometheus): each of its tests carries the ``integration`` mark, so ``make unit`` (``-m "not
integration"``) leaves them out."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
