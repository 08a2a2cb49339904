"""The kubeloop model server: a KServe predictor for model bundles.

``kubeloop serve`` runs :func:`serve`; :class:`BundleModel` is the ``kserve.Model`` it
registers. Metrics live in :mod:`kubeloop.serving.metrics`. See ``docs/serving.md``.

The names below are imported on first use: the ``serve`` command sets up the process's imports
(:mod:`kubeloop.serving.imports`) before anything of KServe loads, which importing this package
must not do.
"""

from typing import TYPE_CHECKING

from kubeloop import lazy_exports

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


__getattr__ = lazy_exports(__name__, _HOMES)
