"""kubeloop: a closed loop for tabular models — train, gate, serve, watch, retrain."""

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

from kubeloop.errors import (
    BundleError,
    ConfigError,
    DataValidationError,
    KubeloopError,
    RegistryError,
    TrainingError,
)

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "ConfigError",
    "DataValidationError",
    "KubeloopError",
    "RegistryError",
    "TrainingError",
    "__version__",
    "lazy_exports",
]


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A package's ``__getattr__`` that imports each exported name on its first use.

    A package whose parts load heavy libraries (pandas, XGBoost, KServe) exports their names this
    way, so that importing one light submodule does not load them all.

    Args:
        package: The package's ``__name__``.
        homes: Exported name -> the submodule (relative to ``package``) that defines it.
    """

    def attribute(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        setattr(sys.modules[package], name, value)  # later uses skip this function
        return value

    return attribute
