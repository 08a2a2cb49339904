"""The container image every pipeline step runs in; the RayJob's pods run the same image."""

from __future__ import annotations

import os

__all__ = ["DEFAULT_IMAGE", "component_image"]

DEFAULT_IMAGE = "ghcr.io/kubeloop/kubeloop-components:0.1.0"


def component_image() -> str:
    """``$KUBELOOP_IMAGE`` or :data:`DEFAULT_IMAGE`."""
    return os.environ.get("KUBELOOP_IMAGE") or DEFAULT_IMAGE
