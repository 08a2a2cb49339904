"""The model bundle: the contract between every stage of the loop.

Its parts: :mod:`kubeloop.bundle.schema` (the inputs and target, no pandas),
:mod:`kubeloop.bundle.models` (the model formats: XGBoost and the linear baseline),
:mod:`kubeloop.bundle.profile` (the training data's reference profile, what drift is measured
against), :mod:`kubeloop.bundle.explain` (exact per-feature contributions of a model) and the
bundle directory itself (``_directory``: write atomically, load and verify).

The directory's names are imported on first use, so that importing :mod:`kubeloop.bundle.schema`
(as a model server does) loads nothing else.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from kubeloop import lazy_exports

if TYPE_CHECKING:
    from kubeloop.bundle._directory import (
        BUNDLE_FORMAT,
        MANIFEST,
        Bundle,
        load_bundle,
        verify_bundle,
        write_bundle,
    )

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "PLOT_TYPES",
    "Bundle",
    "load_bundle",
    "plot_files",
    "verify_bundle",
    "write_bundle",
]


# Plot files a bundle may carry, by suffix, with their media types. kubeloop writes SVG (drawn
# from metrics.json's numbers by :mod:`kubeloop.charts`); bundles of earlier versions hold PNG.
PLOT_TYPES = {".svg": "image/svg+xml", ".png": "image/png"}
_DIRECTORY = ("BUNDLE_FORMAT", "MANIFEST", "Bundle", "load_bundle", "verify_bundle", "write_bundle")


def plot_files(directory: Path) -> list[Path]:
    """The plots of a bundle directory (:data:`PLOT_TYPES`), sorted by name."""
    return sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in PLOT_TYPES)


__getattr__ = lazy_exports(__name__, dict.fromkeys(_DIRECTORY, "_directory"))
