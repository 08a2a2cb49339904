"""The registry stage: bundle versions with a ``champion`` pointer, and experiment tracking.

:mod:`kubeloop.registry` is the store itself (local disk or object storage, no MLflow);
:mod:`kubeloop.registry.tracking` logs runs to MLflow and moves its ``champion`` alias.
"""

from kubeloop.registry._store import (
    Registry,
    default_registry_root,
    kubeloop_home,
    read_champion,
)

__all__ = ["Registry", "default_registry_root", "kubeloop_home", "read_champion"]
