"""The Kubernetes client the cluster steps use (deploy, RayJob): one factory for both."""

from __future__ import annotations

from typing import Any

__all__ = ["custom_objects_api"]


def custom_objects_api(api: Any | None = None) -> Any:
    """``api`` when given (tests pass a fake), else a ``CustomObjectsApi`` for this cluster.

    The configuration is the pod's service account inside Kubernetes, else ``~/.kube/config``.
    """
    if api is not None:
        return api
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()
