"""The kubeloop model server: a KServe predictor for model bundles.

``kubeloop serve`` runs :func:`serve`; :class:`BundleModel` is the ``kserve.Model`` it
registers. Metrics live in :mod:`kubeloop.serving.metrics`. See ``docs/serving.md``.
"""

from kubeloop.serving.model import BundleModel, Served
from kubeloop.serving.server import DEFAULT_MAX_REQUEST_BYTES, ServeOptions, build_model, serve

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "BundleModel",
    "ServeOptions",
    "Served",
    "build_model",
    "serve",
]
