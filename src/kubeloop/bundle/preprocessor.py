"""The fitted feature transform as plain data: the content of ``preprocessor.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kubeloop.errors import BundleError

SPEC_FORMAT = 1
_FIX = "re-create the bundle with `kubeloop train`"


@dataclass(frozen=True)
class NumericStep:
    """Median imputation then standardisation ``(x - mean) / scale`` of one numeric feature."""

    name: str
    median: float
    mean: float
    scale: float


@dataclass(frozen=True)
class CategoricalStep:
    """Most-frequent imputation (``fill``) then one-hot encoding over ``categories``."""

    name: str
    fill: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class PreprocessorSpec:
    """The fitted feature transform as plain data: the content of ``preprocessor.json``."""

    numeric: tuple[NumericStep, ...]
    categorical: tuple[CategoricalStep, ...]
    output_columns: tuple[str, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.numeric] + [s.name for s in self.categorical]
        if not names or len(set(names)) != len(names):
            raise BundleError(f"Preprocessor spec needs distinct features, got {names}; {_FIX}.")
        for step in self.numeric:
            values = (step.median, step.mean, step.scale)
            if not all(np.isfinite(values)) or step.scale <= 0:
                raise BundleError(
                    f"Preprocessor spec: numeric feature {step.name!r} has median/mean/scale "
                    f"{values}; they must be finite and the scale positive; {_FIX}."
                )
        for cat in self.categorical:
            if cat.fill not in cat.categories or len(set(cat.categories)) != len(cat.categories):
                raise BundleError(
                    f"Preprocessor spec: categorical feature {cat.name!r} needs distinct "
                    f"categories that include its fill value {cat.fill!r}; {_FIX}."
                )
        if self.output_columns != _output_columns(self.numeric, self.categorical):
            raise BundleError(f"Preprocessor spec: output_columns do not match its steps; {_FIX}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready content of ``preprocessor.json``."""
        return {
            "format": SPEC_FORMAT,
            "numeric": [
                {"name": s.name, "median": s.median, "mean": s.mean, "scale": s.scale}
                for s in self.numeric
            ],
            "categorical": [
                {"name": s.name, "fill": s.fill, "categories": list(s.categories)}
                for s in self.categorical
            ],
            "output_columns": list(self.output_columns),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessorSpec:
        """Rebuild a spec from :meth:`to_dict` output.

        Raises:
            BundleError: the data is not a preprocessor spec of a supported format.
        """
        if data.get("format") != SPEC_FORMAT:
            raise BundleError(
                f"Preprocessor spec format {data.get('format')!r} is not supported "
                f"(expected {SPEC_FORMAT}); {_FIX}."
            )
        try:
            numeric = tuple(
                NumericStep(str(s["name"]), float(s["median"]), float(s["mean"]), float(s["scale"]))
                for s in data["numeric"]
            )
            categorical = tuple(
                CategoricalStep(str(s["name"]), str(s["fill"]), tuple(map(str, s["categories"])))
                for s in data["categorical"]
            )
            output_columns = tuple(map(str, data["output_columns"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"Preprocessor spec is malformed ({exc!r}); {_FIX}.") from None
        return cls(numeric=numeric, categorical=categorical, output_columns=output_columns)


def _output_columns(
    numeric: Sequence[NumericStep], categorical: Sequence[CategoricalStep]
) -> tuple[str, ...]:
    one_hot = (_one_hot_name(s.name, c) for s in categorical for c in s.categories)
    return (*(s.name for s in numeric), *one_hot)


def _one_hot_name(feature: str, category: object) -> str:
    # Module-level (not a lambda) so the fitted OneHotEncoder stays picklable for Ray/KFP.
    return f"{feature}={category}"
