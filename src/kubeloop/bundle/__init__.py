"""The model bundle: the contract between every stage of the loop.

Its parts: :mod:`kubeloop.bundle.schema` (the inputs and target, no pandas),
:mod:`kubeloop.bundle.models` (the model formats: XGBoost and the linear baseline),
:mod:`kubeloop.bundle.profile` (the training data's reference profile, what drift is measured
against), :mod:`kubeloop.bundle.explain` (exact per-feature contributions of a model) and the
bundle directory itself (``_directory``: write atomically, load and verify).

The directory's names are imported on first use, so that importing :mod:`kubeloop.bundle.schema`
(as a model server does) loads nothing else.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubeloop.bundle._directory import (
        BUNDLE_FORMAT,
        MANIFEST,
        Bundle,
        load_bundle,
        verify_bundle,
        write_bundle,
    )

__all__ = ["BUNDLE_FORMAT", "MANIFEST", "Bundle", "load_bundle", "verify_bundle", "write_bundle"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}._directory"), name)
    globals()[name] = value
    return value
