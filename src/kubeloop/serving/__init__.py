"""The kubeloop model server: a KServe predictor for model bundles.

``kubeloop serve`` runs :func:`serve`; :class:`BundleModel` is the ``kserve.Model`` it
registers. Metrics live in :mod:`kubeloop.serving.metrics`. See ``docs/serving.md``.

The names below are imported on first use: the ``serve`` command sets up the process's imports
(:mod:`kubeloop.serving.imports`) before anything of KServe loads, which importing this package
must not do.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubeloop.serving.model import BundleModel, Served
    from kubeloop.serving.server import (
        DEFAULT_MAX_REQUEST_BYTES,
        ServeOptions,
        build_model,
        serve,
    )

_HOMES = {
    "BundleModel": "model",
    "Served": "model",
    "DEFAULT_MAX_REQUEST_BYTES": "server",
    "ServeOptions": "server",
    "build_model": "server",
    "serve": "server",
}

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "BundleModel",
    "ServeOptions",
    "Served",
    "build_model",
    "serve",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
