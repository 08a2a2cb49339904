"""The one rule for model names and version ids.

A model name becomes a directory in the registry (``<root>/<model>/versions/<version>/``), a path
segment of every endpoint (``/v2/models/{name}/infer``), a file name (the monitor's state file)
and a Prometheus label; a version id becomes a directory too. Every place a name enters kubeloop
(CLI flags, a bundle's manifest, the registry, the champion pointer, the Python API) checks it
with :func:`check_name`, so ``../../tmp/x``, ``.hidden``, ``a/b`` or an empty name are refused
the same way everywhere.
"""

from __future__ import annotations

import argparse
import re

from kubeloop.errors import ConfigError, KubeloopError

__all__ = ["NAME_RULE", "check_name", "is_valid_name", "model_name_arg", "shown"]

NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_SHOWN = 80  # characters of a refused value quoted back


def is_valid_name(value: object) -> bool:
    """Whether ``value`` is a string that follows :data:`NAME_RULE`."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(
    value: object, *, what: str = "model name", error: type[KubeloopError] = ConfigError
) -> str:
    """Return ``value`` when it follows :data:`NAME_RULE`, else raise ``error``.

    Args:
        value: The name as received (any type: manifests and pointers are JSON).
        what: What the value is, for the message (``"model name"``, ``"version"``, ...).
        error: The error class the caller's surface raises (``BundleError`` for a manifest,
            ``RegistryError`` for the registry, ``ConfigError`` for flags and settings).

    Raises:
        KubeloopError: ``error`` with a message naming the value and the rule.
    """
    if is_valid_name(value):
        assert isinstance(value, str)
        return value
    raise error(f"{what} {shown(value)} is not allowed; use {NAME_RULE}.")


def shown(value: object) -> str:
    """``repr(value)`` cut to a readable length (a refused value may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def model_name_arg(value: str) -> str:
    """``argparse`` type of every model-name flag: the same rule, reported as a usage error."""
    try:
        return check_name(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
