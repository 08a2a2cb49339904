"""Per-column inference: kind, coercion of numbers stored as text, id-like and constant drops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from kubeloop.bundle.dates import column_seconds, detect_format
from kubeloop.bundle.schema import OTHER_CATEGORY, ColumnKind, FeatureInfo, normalize_category
from kubeloop.errors import DataValidationError
from kubeloop.names import shown

_NUMERIC_TEXT_SHARE = 0.95
MAX_CATEGORIES = 100
"""A categorical feature keeps at most this many categories, the most frequent first ..."""
MIN_CATEGORY_COUNT = 5
"""... each seen in at least this many rows; the other values become ``__other__``."""
ID_DISTINCT_SHARE = 0.5
"""A text column with at least this share of distinct values among its present ones is an id
(an order number, an e-mail): its values repeat less than twice on average, too rarely to learn
from."""
# pandas.api.types.infer_dtype answers that hold plain scalars only (no list, dict or bytes)
_SCALAR_KINDS = frozenset(
    {"string", "empty", "floating", "integer", "mixed-integer-float", "boolean", "decimal"}
)
_UNSUPPORTED: tuple[tuple[tuple[type, ...], str, str], ...] = (
    ((list, tuple, set, frozenset, np.ndarray), "lists", "spread it over one column per element"),
    ((dict,), "structs (records of fields)", "spread it over one column per field"),
    ((bytes, bytearray, memoryview), "binary data", "decode it to text"),
)


@dataclass
class _Column:
    """What inference decided for one feature column."""

    info: FeatureInfo | None  # None = dropped
    values: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    empty: bool = False  # every value missing or blank


def _normalize_uniques(uniques: Any) -> np.ndarray:
    """:func:`normalize_category` of each distinct value, vectorised when all are text."""
    values = np.asarray(uniques, dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        stripped = pd.Series(values, dtype=object).str.strip().to_numpy(dtype=object)
        stripped[stripped == ""] = None
        return stripped
    return np.array([normalize_category(u) for u in values], dtype=object)


def _factorized(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes and normalized distinct values; the table ends with ``None`` for code -1."""
    # Normalizing each distinct value once (not each row) keeps a million-row column fast.
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    table = np.append(_normalize_uniques(uniques), np.array([None], dtype=object))
    return codes, table


def _normalized(series: pd.Series) -> np.ndarray:
    """Object array of normalized strings/None, one per row."""
    codes, table = _factorized(series)
    return cast(np.ndarray, table[codes])  # code -1 picks the trailing None


def _parse_numbers(table: np.ndarray) -> np.ndarray:
    """Float per normalized distinct value (NaN where it is not a number)."""
    present = table[table != None]  # noqa: E711 -- elementwise on an object array
    sample = pd.to_numeric(pd.Series(present[:1000], dtype=object), errors="coerce")
    if len(present) > 1000 and sample.notna().mean() < 0.5:  # clearly text: skip the full parse
        return np.full(len(table), np.nan)
    return cast(
        np.ndarray,
        pd.to_numeric(pd.Series(table, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        ),
    )


def _as_numbers(
    name: str, series: pd.Series, codes: np.ndarray, table: np.ndarray, notes: list[str]
) -> np.ndarray | None:
    """Numbers of a text column when >= 95 % of its non-blank values parse, else ``None``."""
    parsed = _parse_numbers(table)
    present_per_unique = table != None  # noqa: E711
    present = present_per_unique[codes]
    numbers = parsed[codes]  # code -1 -> the trailing None -> NaN
    if not present.any() or (~np.isnan(numbers[present])).mean() < _NUMERIC_TEXT_SHARE:
        return None
    lost = int((codes >= 0).sum() - (~np.isnan(numbers)).sum())
    if lost:
        example = series.iloc[int(np.flatnonzero((codes >= 0) & np.isnan(numbers))[0])]
        notes.append(
            f"Column '{name}' has {lost} values that are not numbers (e.g. {example!r}); "
            "they were read as missing."
        )
    else:
        notes.append(f"Column '{name}' holds numbers stored as text; it was read as numbers.")
    return numbers


def _is_id_like_numbers(values: np.ndarray, distinct: np.ndarray) -> bool:
    """Whole numbers, one per row, forming a row counter (consecutive or increasing in order)."""
    if len(distinct) != len(values) or len(values) <= 2:
        return False  # NaN rows or repeats: a measurement, not an id
    if not np.all(distinct == np.round(distinct)):
        return False
    consecutive = distinct[-1] - distinct[0] == len(values) - 1
    return bool(consecutive or np.all(np.diff(values) > 0))


def refuse_unsupported(name: str, series: pd.Series, *, role: str) -> None:
    """Refuse a column holding lists, structs or binary values (Parquet ``list``, ``struct``,
    ``map`` and ``binary`` columns arrive as such Python objects).

    Raises:
        DataValidationError: naming the column, what it holds, an example and the fix.
    """
    if not pd.api.types.is_object_dtype(series):
        return
    if pd.api.types.infer_dtype(series, skipna=True) in _SCALAR_KINDS:
        return
    for value in series.dropna():  # only mixed columns get here; the first offender stops it
        for types, what, fix in _UNSUPPORTED:
            if isinstance(value, types):
                raise DataValidationError(
                    f"Column '{name}' holds {what} (e.g. {shown(value)}), which kubeloop cannot "
                    f"use as a {role}; {fix}, or drop the column."
                )


def _infer_numeric(name: str, values: np.ndarray, notes: list[str]) -> _Column:
    infinite = np.isinf(values)
    if infinite.any():
        values = np.where(infinite, np.nan, values)
        notes.append(
            f"Column '{name}' has {int(infinite.sum())} infinite values; they were read as missing."
        )
    distinct = np.unique(values[~np.isnan(values)])
    if len(distinct) == 1:
        notes.append(f"Column '{name}' has one value only ({distinct[0]:g}); it was dropped.")
        return _Column(None, notes=notes)
    if len(distinct) == 2:
        labels = np.array([normalize_category(v) for v in distinct] + [None], dtype=object)
        index = np.where(np.isnan(values), 2, (values == distinct[1]).astype(np.intp))
        cats = tuple(sorted(str(label) for label in labels[:2]))
        return _Column(FeatureInfo(name, "binary", categories=cats), labels[index], notes)
    if _is_id_like_numbers(values, distinct):
        notes.append(f"Column '{name}' looks like a row id (unique whole numbers); it was dropped.")
        return _Column(None, notes=notes)
    info = FeatureInfo(name, "numeric", minimum=float(distinct[0]), maximum=float(distinct[-1]))
    return _Column(info, values.astype(np.float64, copy=False), notes)


def _infer_datetime(
    name: str, seconds: np.ndarray, date_format: str | None, notes: list[str]
) -> _Column:
    present = seconds[~np.isnan(seconds)]
    if not present.size:
        return _Column(None, empty=True)
    low, high = float(present.min()), float(present.max())
    if low == high:
        notes.append(f"Column '{name}' has one date only; it was dropped.")
        return _Column(None, notes=notes)
    info = FeatureInfo(name, "datetime", minimum=low, maximum=high, date_format=date_format)
    return _Column(info, seconds, notes)


def _as_dates(
    name: str, series: pd.Series, codes: np.ndarray, table: np.ndarray, notes: list[str]
) -> _Column | None:
    """A text column whose values are dates or times (:func:`detect_format`), else ``None``."""
    present = [t for t in table[:-1].tolist() if t is not None]
    is_date, date_format = detect_format(present)
    if not is_date:
        return None
    per_value, bad_value = column_seconds(table[:-1].tolist(), date_format)
    seconds = np.append(per_value, np.nan)[codes]
    bad = np.append(bad_value, False)[codes]
    shown_format = "ISO 8601" if date_format is None else repr(date_format)
    if bad.any():
        example = series.iloc[int(np.flatnonzero(bad)[0])]
        notes.append(
            f"Column '{name}' holds dates ({shown_format}) but {int(bad.sum())} values are not "
            f"dates (e.g. {example!r}); they were read as missing."
        )
    else:
        notes.append(f"Column '{name}' holds dates as text ({shown_format}); read as dates.")
    return _infer_datetime(name, seconds, date_format, notes)


def _capped(name: str, codes: np.ndarray, table: np.ndarray, notes: list[str]) -> np.ndarray:
    """``table`` with the values outside the kept categories (:data:`MAX_CATEGORIES` most
    frequent, each in at least :data:`MIN_CATEGORY_COUNT` rows) replaced by ``__other__``."""
    counts: dict[str, int] = {}
    per_code = np.bincount(codes[codes >= 0], minlength=len(table) - 1)
    for value, count in zip(table[:-1].tolist(), per_code.tolist(), strict=True):
        if value is not None:
            counts[value] = counts.get(value, 0) + count
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    kept = {v for v, c in ranked[:MAX_CATEGORIES] if c >= MIN_CATEGORY_COUNT}
    if len(kept) == len(counts):
        return table
    folded = {v: c for v, c in counts.items() if v not in kept}
    notes.append(
        f"Column '{name}' has {len(counts)} categories; {len(folded)} of them (in "
        f"{sum(folded.values())} rows) are rarer than the {MAX_CATEGORIES} most frequent or "
        f"seen in fewer than {MIN_CATEGORY_COUNT} rows and became '{OTHER_CATEGORY}'."
    )
    capped = table.copy()
    capped[[v is not None and v not in kept for v in table.tolist()]] = OTHER_CATEGORY
    return capped


def _infer_column(name: str, series: pd.Series) -> _Column:
    """Decide one feature column's kind (or that it is dropped); ``empty`` when all-null."""
    notes: list[str] = []
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(values).all():
            return _Column(None, empty=True)
        return _infer_numeric(name, values, notes)
    if pd.api.types.is_datetime64_any_dtype(series):
        if getattr(series.dt, "tz", None) is not None:
            series = series.dt.tz_localize(None)  # the local wall-clock time (bundle.dates)
        seconds, _ = column_seconds(series.to_numpy(dtype="datetime64[ns]"))
        return _infer_datetime(name, seconds, None, notes)
    if not (
        pd.api.types.is_object_dtype(series)
        or pd.api.types.is_string_dtype(series)
        or pd.api.types.is_bool_dtype(series)
        or isinstance(series.dtype, pd.CategoricalDtype)
    ):
        raise DataValidationError(
            f"Column '{name}' has type {series.dtype}, which kubeloop cannot use as a feature; "
            "convert it to numbers or text, or drop it."
        )
    codes, table = _factorized(series)
    distinct = set(table[:-1].tolist()) - {None}
    if not distinct:
        return _Column(None, empty=True)
    if not pd.api.types.is_bool_dtype(series):
        numbers = _as_numbers(name, series, codes, table, notes)
        if numbers is not None:
            return _infer_numeric(name, numbers, notes)
        dates = _as_dates(name, series, codes, table, notes)
        if dates is not None:
            return dates
    if len(distinct) == 1:
        notes.append(f"Column '{name}' has one value only ({distinct.pop()!r}); it was dropped.")
        return _Column(None, notes=notes)
    present_value = table != None  # noqa: E711 -- elementwise; the trailing None is code -1
    present = int(present_value[codes].sum())
    if len(distinct) > 2 and len(distinct) >= ID_DISTINCT_SHARE * present:
        share = (
            "a different value in every row"
            if len(distinct) == present
            else (f"{len(distinct)} distinct values in {present} rows")
        )
        notes.append(f"Column '{name}' looks like an id ({share}); dropped.")
        return _Column(None, notes=notes)
    if len(distinct) > 2:
        table = _capped(name, codes, table, notes)
        distinct = set(table[:-1].tolist()) - {None}
        if distinct == {OTHER_CATEGORY}:
            notes[-1] += " No category is left; the column was dropped."
            return _Column(None, notes=notes)
    kind: ColumnKind = "binary" if len(distinct) == 2 else "categorical"
    info = FeatureInfo(name, kind, categories=tuple(sorted(distinct)))
    return _Column(info, table[codes], notes)
