"""Kept for :mod:`kubeloop.batch`, which imports :class:`RequestError` from here; the decoder
lives in :mod:`kubeloop.serving.codec` (import it from there)."""

from kubeloop.serving.codec import RequestError

__all__ = ["RequestError"]
