"""The schema: a model's inputs and target (``schema.json``), and the one rule for categories.

Part of the bundle contract. Needs no pandas: a model server loads it to check requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from kubeloop.errors import BundleError

__all__ = [
    "OTHER_CATEGORY",
    "SCHEMA_FORMAT",
    "ColumnKind",
    "FeatureInfo",
    "Schema",
    "Task",
    "normalize_category",
]

Task = Literal["classification", "regression"]
ColumnKind = Literal["numeric", "categorical", "binary", "datetime"]

SCHEMA_FORMAT = 2
"""Written when a feature is a ``datetime`` or has the :data:`OTHER_CATEGORY`; schemas without
either are written as format 1, which older kubeloop versions read (both are read here)."""
OTHER_CATEGORY = "__other__"
"""The category that stands for every value outside a feature's kept categories (the rare ones
at training, and any value unseen there): see ``kubeloop.data``'s category cap."""
_PANDAS_MISSING = ("NAType", "NaTType")


def normalize_category(value: Any) -> str | None:
    """Return the one string form of a categorical value used everywhere in kubeloop.

    ``None``/NaN/NA -> ``None``; whole-number floats -> their integer text (``1.0`` -> ``"1"``);
    anything else -> ``str(value).strip()``; an empty result -> ``None``.

    Args:
        value: Any scalar read from a table or a request.

    Returns:
        The normalized string, or ``None`` for a missing value.
    """
    if value is None:
        return None
    kind = type(value)
    # pandas' missing values (``pd.NA``, ``pd.NaT``), known by their types' names: pandas is not
    # imported for this (the schema and this rule serve requests without pandas).
    if kind.__name__ in _PANDAS_MISSING and kind.__module__.startswith("pandas."):
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if math.isfinite(value) and float(value).is_integer():
            return str(int(value))
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class FeatureInfo:
    """One model input column as observed in the training data."""

    name: str
    kind: ColumnKind
    categories: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    date_format: str | None = None  # datetime: its text format besides ISO 8601 (bundle.dates)

    @property
    def is_numeric(self) -> bool:
        """Whether the feature is numeric (binary and categorical features are one-hot encoded;
        a datetime feature becomes calendar features)."""
        return self.kind == "numeric"

    @property
    def is_categorical(self) -> bool:
        """Whether the feature is categorical or binary (one-hot encoded)."""
        return self.kind in ("categorical", "binary")

    @property
    def has_other(self) -> bool:
        """Whether values outside the categories count as :data:`OTHER_CATEGORY`."""
        return OTHER_CATEGORY in self.categories

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form used in ``schema.json``."""
        data = {
            "name": self.name,
            "kind": self.kind,
            "categories": list(self.categories),
            "minimum": self.minimum,
            "maximum": self.maximum,
        }
        if self.kind == "datetime":
            data["date_format"] = self.date_format
        return data


@dataclass(frozen=True)
class Schema:
    """Input features in model order, the target and the task (the content of ``schema.json``)."""

    features: tuple[FeatureInfo, ...]
    target: str
    task: Task
    classes: tuple[str, ...] = ()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """All feature names in model input order."""
        return tuple(f.name for f in self.features)

    @property
    def numeric_features(self) -> tuple[str, ...]:
        """Names of the numeric features, in model order."""
        return tuple(f.name for f in self.features if f.is_numeric)

    @property
    def categorical_features(self) -> tuple[str, ...]:
        """Names of the categorical and binary features, in model order."""
        return tuple(f.name for f in self.features if f.is_categorical)

    @property
    def datetime_features(self) -> tuple[str, ...]:
        """Names of the datetime features, in model order."""
        return tuple(f.name for f in self.features if f.kind == "datetime")

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form written as ``schema.json``."""
        new = any(f.kind == "datetime" or f.has_other for f in self.features)
        return {
            "format": SCHEMA_FORMAT if new else 1,
            "target": self.target,
            "task": self.task,
            "classes": list(self.classes),
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        """Rebuild a schema from :meth:`to_dict` output.

        Raises:
            BundleError: The dictionary is not a valid schema.
        """
        try:
            if data.get("format", 1) not in (1, SCHEMA_FORMAT):
                raise BundleError(
                    f"schema.json: format {data.get('format')!r} is newer than this kubeloop "
                    f"reads (1 to {SCHEMA_FORMAT}); upgrade kubeloop."
                )
            task = data["task"]
            if task not in get_args(Task):
                raise BundleError(f"schema.json: task {task!r} is not one of {get_args(Task)}.")
            features = []
            for item in data["features"]:
                kind = item["kind"]
                if kind not in get_args(ColumnKind):
                    raise BundleError(
                        f"schema.json: feature {item['name']!r} has kind {kind!r}, "
                        f"expected one of {get_args(ColumnKind)}."
                    )
                features.append(
                    FeatureInfo(
                        name=str(item["name"]),
                        kind=kind,
                        categories=tuple(str(c) for c in item.get("categories") or ()),
                        minimum=_optional_float(item.get("minimum")),
                        maximum=_optional_float(item.get("maximum")),
                        date_format=item.get("date_format"),
                    )
                )
            return cls(
                features=tuple(features),
                target=str(data["target"]),
                task=task,
                classes=tuple(str(c) for c in data.get("classes") or ()),
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(
                f"schema.json is malformed ({type(exc).__name__}: {exc}); "
                "rebuild the bundle with `kubeloop train`."
            ) from exc


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
