"""The server's payload log, delayed labels, and performance drift.

The payload log (``kubeloop serve --payload-log FILE``) is JSON Lines, one columnar record per
sampled request (see :mod:`kubeloop.serving._payload_log`). :func:`read_payload_log` flattens it
to one row per predicted row, with ``request_id``, ``row`` (position inside the request), ``ts``,
``version`` (the version that answered), the input features, and ``prediction`` (the
positive-class probability for binary classification, the top-class probability for multiclass,
the value for regression) -- the same quantity the reference profile's ``prediction`` bins
describe. Shadow records (a candidate's scores of requests the champion answered, ``"shadow":
true``) are skipped unless asked for.

Labels arrive later in a CSV or JSON Lines file with ``request_id``, optional ``row`` (default 0)
and ``label``; :func:`performance_drop` joins them and compares the live metric with the
bundle's test metric: ROC AUC points lost for classification, relative RMSE increase for
regression.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubeloop.bundle import Bundle
from kubeloop.bundle.schema import normalize_category
from kubeloop.errors import DataValidationError
from kubeloop.training.evaluation import evaluate

__all__ = ["Performance", "performance_drop", "read_labels", "read_payload_log"]


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    for candidate in (path.with_name(path.name + ".1"), path):  # rotated part first (older)
        if not candidate.is_file():
            continue
        with candidate.open("r", encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a concurrent write
    return records


def _prediction(outputs: dict[str, Any], rows: int) -> np.ndarray:
    if "prediction" in outputs:
        values = np.asarray(outputs["prediction"], dtype=np.float64)
    elif "probability" in outputs:
        values = np.asarray(outputs["probability"], dtype=np.float64)
        if values.ndim == 2:
            values = values.max(axis=1)
    else:
        values = np.full(rows, np.nan)
    return values.reshape(-1)


def read_payload_log(
    path: Path,
    *,
    model: str | None = None,
    version: str | None = None,
    since: float | None = None,
    shadow: bool = False,
) -> pd.DataFrame:
    """One row per predicted row of the payload log (and its rotated ``.1`` part).

    Args:
        path: The payload log file.
        model: Keep only this model's records.
        version: Keep only records of this version.
        since: Keep only records at or after this Unix time.
        shadow: Include the shadow records (a candidate's scores of requests the champion
            answered, ``"shadow": true``) and add a boolean ``shadow`` column; by default only
            the answers clients got are read.

    Returns:
        A frame with ``request_id``, ``row``, ``ts`` (Unix seconds), ``version``,
        ``prediction`` and one column per logged feature (and ``shadow`` when asked); empty
        when nothing matches.
    """
    # One frame at the end from plain column lists: a frame per record costs about a
    # millisecond, and a day of payload log holds many thousands of records.
    fixed: dict[str, list[Any]] = {name: [] for name in _FIXED}
    features: dict[str, list[Any]] = {}
    predictions: list[np.ndarray] = []
    flags: list[bool] = []
    total = 0
    for record in _records(Path(path)):
        if model is not None and record.get("model") != model:
            continue
        is_shadow = bool(record.get("shadow", False))
        if is_shadow and not shadow:
            continue
        if version is not None and record.get("version") != version:
            continue
        ts = _timestamp(record["ts"])
        if since is not None and ts < since:
            continue
        rows = int(record.get("rows", 0))
        for name, values in record["inputs"].items():
            column = features.setdefault(name, [None] * total)
            column.extend(list(values)[:rows] + [None] * (rows - len(values)))
        total += rows
        for column in features.values():  # a feature this record did not log: missing
            column.extend([None] * (total - len(column)))
        fixed["request_id"].extend([str(record.get("request_id"))] * rows)
        fixed["row"].extend(range(rows))
        fixed["ts"].extend([ts] * rows)
        fixed["version"].extend([record.get("version")] * rows)
        predictions.append(_prediction(record.get("outputs", {}), rows))
        flags.extend([is_shadow] * rows)
    columns = [*_FIXED, "prediction", *(["shadow"] if shadow else [])]
    if total == 0:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(
        {
            **fixed,
            **features,
            "prediction": np.concatenate(predictions),
            **({"shadow": flags} if shadow else {}),
        }
    )
    frame["row"] = frame["row"].astype(np.int64)
    return frame


_FIXED = ("request_id", "row", "ts", "version")


def _timestamp(text: str) -> float:
    """Unix seconds of the log's ISO-8601 time stamps (``...Z`` or with an offset)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return float(pd.Timestamp(text).timestamp())
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def read_labels(path: Path) -> pd.DataFrame:
    """Delayed labels: ``request_id``, ``row`` (0 when absent), ``label`` (CSV or JSON Lines).

    Raises:
        DataValidationError: The file lacks ``request_id`` or ``label``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    frame = pd.read_json(path, lines=True) if suffix in {".jsonl", ".json"} else pd.read_csv(path)
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"Labels file {path} lacks the column(s) {missing}; it needs request_id, label and "
            "optionally row (the position of the row inside its request)."
        )
    if "row" not in frame.columns:
        frame["row"] = 0
    frame["request_id"] = frame["request_id"].astype(str)
    frame["row"] = frame["row"].astype(np.int64)
    return frame[["request_id", "row", "label"]]


@dataclass(frozen=True)
class Performance:
    """Live performance of the served model on labelled traffic.

    Attributes:
        metric: ``roc_auc`` or ``rmse``.
        reference: The bundle's test value of that metric.
        current: The value on the labelled live rows.
        drop: How much worse (AUC points lost; relative RMSE increase); positive = worse.
        rows: Labelled rows used.
    """

    metric: str
    reference: float
    current: float
    drop: float
    rows: int


def performance_drop(
    bundle: Bundle, payload: pd.DataFrame, labels: pd.DataFrame, *, min_rows: int = 50
) -> Performance | None:
    """Join labels with the payload log and compare with the bundle's test metric.

    Returns:
        ``None`` when fewer than ``min_rows`` labelled rows join, or the task has no
        comparable metric (multiclass AUC is compared too, one-vs-rest).
    """
    if payload.empty or labels.empty:
        return None
    joined = payload.merge(labels, on=["request_id", "row"], how="inner")
    joined = joined[~joined["prediction"].isna()]
    if len(joined) < min_rows:
        return None
    schema = bundle.schema
    if schema.task == "regression":
        y = pd.to_numeric(joined["label"], errors="coerce").to_numpy(np.float64)
        keep = ~np.isnan(y)
        current = float(np.sqrt(np.mean((joined["prediction"].to_numpy()[keep] - y[keep]) ** 2)))
        reference = float(bundle.metrics["rmse"])
        return Performance(
            "rmse", reference, current, (current - reference) / reference, int(keep.sum())
        )
    if len(schema.classes) != 2:
        return None  # the payload log keeps only the top-class probability for multiclass
    index = {name: i for i, name in enumerate(schema.classes)}
    codes = np.array([index.get(normalize_category(v) or "", -1) for v in joined["label"]])
    keep = codes >= 0
    if keep.sum() < min_rows or len(np.unique(codes[keep])) < 2:
        return None
    metrics = evaluate(
        "classification", codes[keep], joined["prediction"].to_numpy()[keep], classes=schema.classes
    )
    current, reference = float(metrics["roc_auc"]), float(bundle.metrics["roc_auc"])
    return Performance("roc_auc", reference, current, reference - current, int(keep.sum()))
