"""Target and task resolution, validation, and :func:`build_dataset` / :func:`load_dataset`."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd

from kubeloop.bundle.schema import FeatureInfo, Schema, Task
from kubeloop.console import ProgressFn
from kubeloop.data._infer import (
    _factorized,
    _infer_column,
    _normalized,
    _parse_numbers,
    refuse_unsupported,
)
from kubeloop.data._labels import merge_label_spellings
from kubeloop.data._read import _frame_hash, read_for_training, release_arrow_memory
from kubeloop.errors import ConfigError, DataValidationError

_MAX_AUTO_CLASSES = 20


@dataclass(frozen=True)
class Dataset:
    """Validated features and labels, ready for splitting and feature prep."""

    X: pd.DataFrame
    y: np.ndarray
    schema: Schema
    notes: tuple[str, ...] = ()
    data_hash: str = ""


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
    normalize_labels: bool = False,
) -> Dataset:
    """Infer the schema of a table, validate it and separate features from the target.

    Args:
        frame: The table as read (e.g. by :func:`read_table`).
        target: Name of the label column.
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        min_rows: Fewest rows (with a target) accepted.
        data_hash: Hash of the source; computed from the frame's content when ``None``.
        normalize_labels: Merge text labels of the target that differ only in case or
            surrounding spaces (each group becomes its most frequent spelling) instead of
            refusing them.

    Returns:
        Features in schema order, labels (class codes or floats), the schema and notes.

    Raises:
        DataValidationError: The data cannot train a model (see :mod:`kubeloop.data`).
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
    for number, name in enumerate(columns):
        refuse_unsupported(
            name, frame.iloc[:, number], role="target" if name == target else "feature"
        )
    digest = data_hash if data_hash is not None else _frame_hash(frame)
    frame = frame.copy(deep=False)  # never modify the caller's frame
    frame.columns = pd.Index(columns, dtype=object)
    frame.index = pd.RangeIndex(len(frame))
    notes: list[str] = []

    values, numeric = _target_values(target, frame[target])
    if not numeric:
        labels, merged = merge_label_spellings(target, frame[target], normalize=normalize_labels)
        if merged:
            notes.extend(merged)
            values, numeric = _target_values(target, labels)
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
            data[name] = _owned(column.values, frame[name])
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
    # copy=False: one block per column, as inferred (the default consolidates them: a second
    # copy of every feature, the peak of a big load)
    X = pd.DataFrame(data, columns=[i.name for i in infos], copy=False)
    schema = Schema(features=tuple(infos), target=target, task=resolved, classes=classes)
    return Dataset(X=X, y=y, schema=schema, notes=tuple(notes), data_hash=digest)


def _owned(values: np.ndarray, source: pd.Series) -> np.ndarray:
    """``values``, copied where it is a view of the caller's column: the features are put
    together without a copy (``copy=False``), and they must not alias the caller's frame."""
    numeric = isinstance(source.dtype, np.dtype) and source.dtype.kind in "fiub"
    if numeric and np.shares_memory(values, source.to_numpy()):
        return values.copy()
    return values


def load_dataset(
    path: str | Path,
    *,
    target: str,
    task: Task | Literal["auto"] = "auto",
    min_rows: int = 50,
    normalize_labels: bool = False,
    progress: ProgressFn | None = None,
) -> Dataset:
    """Read a file and build a validated :class:`Dataset` from it (file read once).

    Args:
        path: Local path or fsspec URL of a CSV or Parquet file.
        target: Name of the label column.
        task: ``"auto"`` (see :mod:`kubeloop.data`), ``"classification"`` or ``"regression"``.
        min_rows: Fewest rows (with a target) accepted.
        normalize_labels: See :func:`build_dataset`.
        progress: Told how reading a big file goes (rows/s, time left).

    Returns:
        The dataset; ``data_hash`` is the sha256 of the file's bytes.

    Raises:
        DataValidationError: See :func:`build_dataset` and :func:`read_table`.
    """
    frame, digest = read_for_training(path, progress=progress)
    dataset = build_dataset(
        frame,
        target=target,
        task=task,
        min_rows=min_rows,
        data_hash=digest,
        normalize_labels=normalize_labels,
    )
    del frame
    release_arrow_memory()  # the text columns' Arrow buffers, kept by its allocator
    return dataset
