"""kubeloop: a closed loop for tabular models — train, gate, serve, watch, retrain."""

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
]
