"""The one error hierarchy of kubeloop.

Every error kubeloop raises on purpose derives from :class:`KubeloopError`; each subclass also
inherits the matching builtin so callers can catch ``ValueError`` etc. Messages name the thing
and the fix. All classes take a single message argument so they survive pickling across Ray
workers and KFP subprocesses.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConfigError",
    "DataValidationError",
    "KubeloopError",
    "RegistryError",
    "TrainingError",
]


class KubeloopError(Exception):
    """Root of every error kubeloop raises on purpose."""


class DataValidationError(KubeloopError, ValueError):
    """Training or scoring data is unusable (missing target, one class, unreadable file...)."""


class BundleError(KubeloopError, ValueError):
    """A model bundle is incomplete, tampered with, or holds something forbidden (pickle)."""


class ConfigError(KubeloopError, ValueError):
    """A setting, flag or values file is wrong."""


class RegistryError(KubeloopError, RuntimeError):
    """The model registry cannot do what was asked (no champion, version exists, ...)."""


class TrainingError(KubeloopError, RuntimeError):
    """Training failed for a reason that is not the data's fault (Ray, XGBoost)."""
