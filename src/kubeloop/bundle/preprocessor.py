"""The fitted feature transform as plain data: the content of ``preprocessor.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kubeloop.bundle.dates import CALENDAR_PARTS
from kubeloop.bundle.schema import OTHER_CATEGORY
from kubeloop.errors import BundleError

SPEC_FORMAT = 2
"""Written when the spec has a datetime step or an :data:`OTHER_CATEGORY`; other specs are
written as format 1 (what older kubeloop versions read). Both are read."""
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
class DatetimeStep:
    """Calendar features of one datetime feature (:func:`kubeloop.bundle.dates.calendar_features`),
    each imputed and standardised like a numeric feature: ``parts[i].name`` is the part."""

    name: str
    date_format: str | None
    parts: tuple[NumericStep, ...]

    @property
    def part_names(self) -> tuple[str, ...]:
        """The calendar parts, in output order."""
        return tuple(p.name for p in self.parts)


@dataclass(frozen=True)
class PreprocessorSpec:
    """The fitted feature transform as plain data: the content of ``preprocessor.json``.

    Output columns: numerics, then the calendar parts of each datetime feature, then one-hot.
    """

    numeric: tuple[NumericStep, ...]
    categorical: tuple[CategoricalStep, ...]
    output_columns: tuple[str, ...]
    datetime: tuple[DatetimeStep, ...] = ()

    def __post_init__(self) -> None:
        steps: list[NumericStep | DatetimeStep | CategoricalStep] = [
            *self.numeric,
            *self.datetime,
            *self.categorical,
        ]
        names = [s.name for s in steps]
        if not names or len(set(names)) != len(names):
            raise BundleError(f"Preprocessor spec needs distinct features, got {names}; {_FIX}.")
        for date in self.datetime:
            own = date.part_names
            if not own or not set(own) <= set(CALENDAR_PARTS) or len(set(own)) != len(own):
                raise BundleError(
                    f"Preprocessor spec: datetime feature {date.name!r} has parts {own}; "
                    f"they must be distinct names from {CALENDAR_PARTS}; {_FIX}."
                )
        parts = [p for d in self.datetime for p in d.parts]
        for step in (*self.numeric, *parts):
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
        expected = _output_columns(self.numeric, self.categorical, self.datetime)
        if self.output_columns != expected:
            raise BundleError(f"Preprocessor spec: output_columns do not match its steps; {_FIX}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready content of ``preprocessor.json``."""
        new = bool(self.datetime) or any(OTHER_CATEGORY in s.categories for s in self.categorical)
        data: dict[str, Any] = {
            "format": SPEC_FORMAT if new else 1,
            "numeric": [_numeric_dict(s) for s in self.numeric],
            "categorical": [
                {"name": s.name, "fill": s.fill, "categories": list(s.categories)}
                for s in self.categorical
            ],
            "output_columns": list(self.output_columns),
        }
        if self.datetime:
            data["datetime"] = [
                {
                    "name": s.name,
                    "date_format": s.date_format,
                    "parts": [_numeric_dict(p) for p in s.parts],
                }
                for s in self.datetime
            ]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessorSpec:
        """Rebuild a spec from :meth:`to_dict` output.

        Raises:
            BundleError: the data is not a preprocessor spec of a supported format.
        """
        if data.get("format") not in (1, SPEC_FORMAT):
            raise BundleError(
                f"Preprocessor spec format {data.get('format')!r} is not supported "
                f"(expected 1 to {SPEC_FORMAT}); {_FIX}."
            )
        try:
            numeric = tuple(_numeric_step(s) for s in data["numeric"])
            datetime = tuple(
                DatetimeStep(
                    str(s["name"]),
                    None if s.get("date_format") is None else str(s["date_format"]),
                    tuple(_numeric_step(p) for p in s["parts"]),
                )
                for s in data.get("datetime", ())
            )
            categorical = tuple(
                CategoricalStep(str(s["name"]), str(s["fill"]), tuple(map(str, s["categories"])))
                for s in data["categorical"]
            )
            output_columns = tuple(map(str, data["output_columns"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"Preprocessor spec is malformed ({exc!r}); {_FIX}.") from None
        return cls(
            numeric=numeric,
            categorical=categorical,
            output_columns=output_columns,
            datetime=datetime,
        )


def _numeric_dict(step: NumericStep) -> dict[str, Any]:
    return {"name": step.name, "median": step.median, "mean": step.mean, "scale": step.scale}


def _numeric_step(data: Mapping[str, Any]) -> NumericStep:
    return NumericStep(
        str(data["name"]), float(data["median"]), float(data["mean"]), float(data["scale"])
    )


def _output_columns(
    numeric: Sequence[NumericStep],
    categorical: Sequence[CategoricalStep],
    datetime: Sequence[DatetimeStep] = (),
) -> tuple[str, ...]:
    calendar = (_part_name(s.name, p) for s in datetime for p in s.part_names)
    one_hot = (_one_hot_name(s.name, c) for s in categorical for c in s.categories)
    return (*(s.name for s in numeric), *calendar, *one_hot)


def _part_name(feature: str, part: str) -> str:
    """Output column of a calendar part: the feature's name for its value, else ``name.part``."""
    return feature if part == "value" else f"{feature}.{part}"


def _one_hot_name(feature: str, category: object) -> str:
    # Module-level (not a lambda) so the fitted OneHotEncoder stays picklable for Ray/KFP.
    return f"{feature}={category}"
