"""Load, infer, validate and split tabular training data.

The rules are deliberately simple so a user can predict them:

* **Reading**: ``.csv`` (also ``.csv.gz``/``.csv.bz2``/``.csv.zip``/``.csv.xz``) or ``.parquet``/
  ``.pq``, chosen by suffix; local paths or fsspec URLs (``s3://...``).
* **Text that holds numbers**: a text column where at least 95 % of the non-blank values parse as
  numbers is read as numbers; the rest (blanks included) become missing and a note says how many.
* **Kinds**: a column with exactly two distinct non-missing values is ``binary`` (values as
  strings, ``0``/``1`` -> ``"0"``/``"1"``); other numeric columns are ``numeric``; other text
  columns are ``categorical``.
* **Dropped with a note**: constant columns (one distinct value) and id-like columns: text unique
  per row (e.g. ``customerID``), or whole numbers unique per row that are a shuffled or increasing
  row counter (consecutive values, or strictly increasing in file order).
* **Errors** (:class:`~kubeloop.errors.DataValidationError`): missing target (close names are
  suggested), one class, too few rows, all-null columns, no features left, unreadable file.
* **Task**: classification when the target has at most 20 distinct values that are text, booleans
  or whole numbers; otherwise regression. Rows with a missing target are dropped with a note.

Nothing in this module writes anything.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import pandas as pd

from kubeloop.errors import BundleError, ConfigError, DataValidationError

__all__ = [
    "ColumnKind",
    "Dataset",
    "FeatureInfo",
    "Part",
    "Schema",
    "Splits",
    "Task",
    "build_dataset",
    "load_dataset",
    "normalize_category",
    "read_table",
    "split_dataset",
]

Task = Literal["classification", "regression"]
ColumnKind = Literal["numeric", "categorical", "binary"]

SCHEMA_FORMAT = 1
_MAX_AUTO_CLASSES = 20
_NUMERIC_TEXT_SHARE = 0.95
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def normalize_category(value: Any) -> str | None:
    """Return the one string form of a categorical value used everywhere in kubeloop.

    ``None``/NaN/NA -> ``None``; whole-number floats -> their integer text (``1.0`` -> ``"1"``);
    anything else -> ``str(value).strip()``; an empty result -> ``None``.

    Args:
        value: Any scalar read from a table or a request.

    Returns:
        The normalized string, or ``None`` for a missing value.
    """
    if value is None or value is pd.NA or value is pd.NaT:
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

    @property
    def is_numeric(self) -> bool:
        """Whether the feature is numeric (binary and categorical features are one-hot encoded)."""
        return self.kind == "numeric"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form used in ``schema.json``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "categories": list(self.categories),
            "minimum": self.minimum,
            "maximum": self.maximum,
        }


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
        return tuple(f.name for f in self.features if not f.is_numeric)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form written as ``schema.json``."""
        return {
            "format": SCHEMA_FORMAT,
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


@dataclass(frozen=True)
class Dataset:
    """Validated features and labels, ready for splitting and feature prep."""

    X: pd.DataFrame
    y: np.ndarray
    schema: Schema
    notes: tuple[str, ...] = ()
    data_hash: str = ""


@dataclass(frozen=True)
class Part:
    """One split: features in schema order and labels."""

    X: pd.DataFrame
    y: np.ndarray


@dataclass(frozen=True)
class Splits:
    """Train, validation and test parts of one :class:`Dataset`."""

    train: Part
    validation: Part
    test: Part
    schema: Schema


# --------------------------------------------------------------------------- reading


def _suffix_format(path: str) -> Literal["csv", "parquet"]:
    lower = path.lower().rstrip("/")
    if lower.endswith(_CSV_SUFFIXES):
        return "csv"
    if lower.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise DataValidationError(
        f"Cannot read '{path}': unknown file format. Use a .csv or .parquet file "
        "(the format is chosen by the file name's suffix)."
    )


def _read_bytes(path: str) -> bytes:
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "rb") as handle:
                return cast(bytes, handle.read())
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise DataValidationError(
            f"Cannot read '{path}': the file does not exist. Check the path (--data)."
        ) from exc
    except IsADirectoryError as exc:
        raise DataValidationError(
            f"Cannot read '{path}': it is a directory. Point to one .csv or .parquet file."
        ) from exc
    except (OSError, ImportError, ValueError) as exc:
        raise DataValidationError(
            f"Cannot read '{path}': {exc}. Check the path and the access rights."
        ) from exc


def _parse(raw: bytes, path: str) -> pd.DataFrame:
    fmt = _suffix_format(path)
    if not raw:
        raise DataValidationError(f"Cannot read '{path}': the file is empty.")
    try:
        if fmt == "csv":
            compression = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz"}.get(
                Path(path).suffix.lower()
            )
            frame = pd.read_csv(io.BytesIO(raw), compression=compression, low_memory=False)
        else:
            frame = pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # parsers raise many types (ArrowInvalid, ParserError, ...)
        raise DataValidationError(
            f"Cannot read '{path}' as {fmt.upper()}: {type(exc).__name__}: {exc}. "
            f"Check that the file really is {fmt.upper()} and not damaged."
        ) from exc
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataValidationError(
            f"Cannot use '{path}': it has no data rows. Provide a file with a header and rows."
        )
    return frame


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (by suffix) into a DataFrame.

    Args:
        path: Local path or fsspec URL (``s3://bucket/key.parquet``).

    Returns:
        The table as read, with no inference applied.

    Raises:
        DataValidationError: Missing, empty, unreadable or unknown-format file.
    """
    text = str(path)
    _suffix_format(text)
    return _parse(_read_bytes(text), text)


def load_dataset(
    path: str | Path,
    *,
    target: str,
    task: Task | Literal["auto"] = "auto",
    min_rows: int = 50,
) -> Dataset:
    """Read a file and build a validated :class:`Dataset` from it (file read once).

    Args:
        path: Local path or fsspec URL of a CSV or Parquet file.
        target: Name of the label column.
        task: ``"auto"`` (see module docs), ``"classification"`` or ``"regression"``.
        min_rows: Fewest rows (with a target) accepted.

    Returns:
        The dataset; ``data_hash`` is the sha256 of the file's bytes.

    Raises:
        DataValidationError: See :func:`build_dataset` and :func:`read_table`.
    """
    text = str(path)
    _suffix_format(text)
    raw = _read_bytes(text)
    frame = _parse(raw, text)
    return build_dataset(
        frame,
        target=target,
        task=task,
        min_rows=min_rows,
        data_hash=hashlib.sha256(raw).hexdigest(),
    )


# --------------------------------------------------------------------------- inference


@dataclass
class _Column:
    """What inference decided for one feature column."""

    info: FeatureInfo | None  # None = dropped
    values: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    empty: bool = False  # every value missing or blank


def _frame_hash(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    try:
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    except (TypeError, ValueError):  # unhashable cells (lists, dicts): fall back to text
        digest.update(frame.to_csv(index=False).encode())
    return digest.hexdigest()


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


def _infer_column(name: str, series: pd.Series) -> _Column:
    """Decide one feature column's kind (or that it is dropped); ``empty`` when all-null."""
    notes: list[str] = []
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(values).all():
            return _Column(None, empty=True)
        return _infer_numeric(name, values, notes)
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
    if len(distinct) == 1:
        notes.append(f"Column '{name}' has one value only ({distinct.pop()!r}); it was dropped.")
        return _Column(None, notes=notes)
    if len(distinct) == len(codes) > 2:
        notes.append(f"Column '{name}' looks like an id (a different value in every row); dropped.")
        return _Column(None, notes=notes)
    kind: ColumnKind = "binary" if len(distinct) == 2 else "categorical"
    info = FeatureInfo(name, kind, categories=tuple(sorted(distinct)))
    return _Column(info, table[codes], notes)


def _missing_target(target: str, columns: Sequence[str]) -> DataValidationError:
    close = difflib.get_close_matches(target, columns, n=3, cutoff=0.6)
    lowered = [c for c in columns if c.lower() == target.lower() and c not in close]
    hint = close + lowered
    suggestion = f" Did you mean {', '.join(repr(c) for c in hint)}?" if hint else ""
    shown = ", ".join(repr(c) for c in columns[:30]) + (" ..." if len(columns) > 30 else "")
    return DataValidationError(
        f"Target column '{target}' is not in the data.{suggestion} "
        f"Columns available: {shown}. Pass the right name with --target."
    )


def _target_values(target: str, series: pd.Series) -> tuple[np.ndarray, bool]:
    """The target as floats (numeric) or normalized strings, and whether it is numeric."""
    if pd.api.types.is_bool_dtype(series):
        return _normalized(series), False
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.where(np.isinf(values), np.nan, values), True
    codes, table = _factorized(series)
    parsed = _parse_numbers(table)
    present = table != None  # noqa: E711
    if present.any() and not np.isnan(parsed[present]).any():
        return parsed[codes], True
    return table[codes], False


def _resolve_task(
    target: str, values: np.ndarray, numeric: bool, task: str, notes: list[str]
) -> Task:
    if task not in ("auto", *get_args(Task)):
        raise ConfigError(
            f"task={task!r} is not valid; use 'auto', 'classification' or 'regression'."
        )
    distinct = np.unique(values) if numeric else np.array(sorted(pd.unique(values)), dtype=object)
    if task == "regression":
        if not numeric:
            raise DataValidationError(
                f"Target '{target}' is not numeric (e.g. {values[0]!r}); regression needs numbers. "
                "Use task 'classification' or 'auto'."
            )
        return "regression"
    if task == "classification":
        return "classification"
    whole = not numeric or bool(np.all(distinct == np.round(distinct)))
    if whole and len(distinct) <= _MAX_AUTO_CLASSES:
        notes.append(
            f"Task: classification (target '{target}' has {len(distinct)} distinct values)."
        )
        return "classification"
    if not numeric:
        raise DataValidationError(
            f"Target '{target}' has {len(distinct)} distinct text values, more than the "
            f"{_MAX_AUTO_CLASSES} that auto-detection treats as classes. Pass task "
            "'classification' if they are classes, or use a numeric target for regression."
        )
    notes.append(f"Task: regression (target '{target}' is numeric with {len(distinct)} values).")
    return "regression"


def build_dataset(
    frame: pd.DataFrame,
    *,
    target: str,
    task: Task | Literal["auto"] = "auto",
    min_rows: int = 50,
    data_hash: str | None = None,
) -> Dataset:
    """Infer the schema of a table, validate it and separate features from the target.

    Args:
        frame: The table as read (e.g. by :func:`read_table`).
        target: Name of the label column.
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        min_rows: Fewest rows (with a target) accepted.
        data_hash: Hash of the source; computed from the frame's content when ``None``.

    Returns:
        Features in schema order, labels (class codes or floats), the schema and notes.

    Raises:
        DataValidationError: The data cannot train a model (see module docs).
        ConfigError: ``task`` is not one of the accepted values.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataValidationError(f"Expected a pandas DataFrame, got {type(frame).__name__}.")
    columns = [str(c) for c in frame.columns]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataValidationError(
            f"Column names {duplicated} appear more than once; give every column a unique name."
        )
    if target not in columns:
        raise _missing_target(target, columns)
    digest = data_hash if data_hash is not None else _frame_hash(frame)
    frame = frame.copy(deep=False)  # never modify the caller's frame
    frame.columns = pd.Index(columns, dtype=object)
    frame.index = pd.RangeIndex(len(frame))
    notes: list[str] = []

    values, numeric = _target_values(target, frame[target])
    missing = np.isnan(values) if numeric else (values == None)  # noqa: E711
    if missing.all():
        raise DataValidationError(
            f"Target column '{target}' has no values (all {len(frame)} are missing); "
            "check that it is the right column."
        )
    if missing.any():
        notes.append(f"{int(missing.sum())} rows with a missing target '{target}' were dropped.")
        keep = ~missing
        frame = frame.loc[keep].reset_index(drop=True)
        values = values[keep]
    if len(frame) < min_rows:
        raise DataValidationError(
            f"The data has {len(frame)} rows with a target; at least {min_rows} are needed. "
            "Provide more rows."
        )
    resolved = _resolve_task(target, values, numeric, task, notes)

    classes: tuple[str, ...] = ()
    if resolved == "classification":
        codes, table = _factorized(pd.Series(values))
        classes = tuple(sorted(set(table[:-1].tolist())))
        if len(classes) < 2:
            raise DataValidationError(
                f"Target '{target}' has one class only ({classes[0]!r} in {len(codes)} rows); "
                "classification needs at least two classes."
            )
        position = {label: i for i, label in enumerate(classes)}
        y = np.array([position[label] for label in table[:-1]], dtype=np.int64)[codes]
    else:
        y = values.astype(np.float64)
        if np.unique(y).size < 2:
            raise DataValidationError(
                f"Target '{target}' has one value only ({y[0]:g}); there is nothing to learn."
            )

    infos: list[FeatureInfo] = []
    data: dict[str, np.ndarray] = {}
    empty: list[str] = []
    for name in (c for c in columns if c != target):
        column = _infer_column(name, frame[name])
        notes.extend(column.notes)
        if column.empty:
            empty.append(name)
        elif column.info is not None and column.values is not None:
            infos.append(column.info)
            data[name] = column.values
    if empty:
        names = ", ".join(f"'{c}'" for c in empty)
        raise DataValidationError(
            f"Column {names} has no values (all {len(frame)} rows are missing or blank); "
            "drop it from the data."
        )
    if not infos:
        raise DataValidationError(
            f"No feature columns are left besides the target '{target}' (all were dropped as "
            "ids or constants, see the notes). Provide columns the model can learn from."
        )
    X = pd.DataFrame(data, columns=[i.name for i in infos])
    schema = Schema(features=tuple(infos), target=target, task=resolved, classes=classes)
    return Dataset(X=X, y=y, schema=schema, notes=tuple(notes), data_hash=digest)


# --------------------------------------------------------------------------- splitting


def split_dataset(
    ds: Dataset,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
) -> Splits:
    """Split a dataset into train / validation / test parts, deterministically.

    Fractions are of the whole dataset (defaults: 60 / 20 / 20). Classification splits are
    stratified by class. Rows keep their original order inside each part.

    Args:
        ds: The dataset to split.
        seed: Random seed; the same seed gives the same parts.
        test_fraction: Share of rows in the test part.
        validation_fraction: Share of rows in the validation part.

    Returns:
        The three parts and the schema.

    Raises:
        ConfigError: Fractions outside (0, 1) or summing to 1 or more.
        DataValidationError: A class has too few rows to appear in every part.
    """
    from sklearn.model_selection import train_test_split

    if not (0 < test_fraction < 1 and 0 < validation_fraction < 1):
        raise ConfigError("test_fraction and validation_fraction must each be between 0 and 1.")
    if test_fraction + validation_fraction >= 1:
        raise ConfigError("test_fraction + validation_fraction must be below 1 (rows to train).")
    index = np.arange(len(ds.y))
    stratify = ds.schema.task == "classification"
    if stratify:
        smallest = min(test_fraction, validation_fraction, 1 - test_fraction - validation_fraction)
        needed = max(3, math.ceil(1 / smallest))
        counts = np.bincount(ds.y, minlength=len(ds.schema.classes))
        rare = [(ds.schema.classes[i], int(n)) for i, n in enumerate(counts) if n < needed]
        if rare:
            shown = ", ".join(f"{c!r} ({n} rows)" for c, n in rare)
            raise DataValidationError(
                f"Target '{ds.schema.target}' has classes with too few rows to split: {shown}; "
                f"each class needs at least {needed} rows. Add rows or merge rare classes."
            )
    try:
        rest, test = train_test_split(
            index, test_size=test_fraction, random_state=seed, stratify=ds.y if stratify else None
        )
        train, validation = train_test_split(
            rest,
            test_size=validation_fraction / (1 - test_fraction),
            random_state=seed,
            stratify=ds.y[rest] if stratify else None,
        )
    except ValueError as exc:
        raise DataValidationError(
            f"Cannot split {len(index)} rows into train/validation/test: {exc}. "
            "Add rows or change the fractions."
        ) from exc

    def part(rows: np.ndarray) -> Part:
        rows = np.sort(rows)
        return Part(X=ds.X.iloc[rows].reset_index(drop=True), y=ds.y[rows])

    return Splits(part(train), part(validation), part(test), ds.schema)
