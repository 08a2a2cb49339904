"""The model formats of a bundle: XGBoost boosters and plain-JSON linear models.

Every model kubeloop trains is one of two files, neither of them a pickle:

- ``model.ubj`` — an XGBoost booster in XGBoost's own UBJSON format. The random-forest baseline is
  XGBoost's random-forest mode, so it is stored the same way (kind ``"random_forest"``).
- ``model.json`` — coefficients and intercepts of a linear/logistic/softmax regression, as plain
  JSON; prediction is a numpy dot product, no scikit-learn needed at serving time.

All models predict the same shapes: binary classification ``(n,)`` probabilities of
``classes[1]``; ``K > 2`` classes ``(n, K)`` probabilities; regression ``(n,)`` values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import xgboost

from kubeloop.bundle.schema import Task
from kubeloop.errors import BundleError, ConfigError, DataValidationError

__all__ = [
    "LINEAR_FILENAME",
    "PREDICT_CHUNK_ROWS",
    "SUPPORTED_OBJECTIVES",
    "XGBOOST_FILENAME",
    "LinearModel",
    "TabularModel",
    "XGBoostModel",
    "booster_floats",
    "load_model",
    "predict_in_chunks",
]

XGBOOST_FILENAME = "model.ubj"
LINEAR_FILENAME = "model.json"
_XGBOOST_KINDS = ("xgboost", "random_forest")
_LINEAR_FORMAT = 1
# The XGBoost objectives whose trees kubeloop walks itself (serving's compiled forest, TreeSHAP).
SUPPORTED_OBJECTIVES = ("binary:logistic", "multi:softprob", "reg:squarederror")


def booster_floats(text: str) -> list[float]:
    """``"[1E-1,2E-1]"`` or ``"1E-1"`` (how XGBoost writes ``base_score``) -> floats."""
    return [float(part) for part in text.strip().strip("[]").split(",") if part.strip()]


@runtime_checkable
class TabularModel(Protocol):
    """What every stage may rely on: predict, save, importance, and four attributes."""

    kind: str
    task: Task
    n_classes: int
    filename: str

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict probabilities (classification) or values (regression) for a float matrix."""
        ...

    def save(self, directory: Path) -> Path:
        """Write ``filename`` into ``directory`` and return its path."""
        ...

    def feature_importance(self, names: Sequence[str]) -> dict[str, float]:
        """Importance per output column name, non-negative and summing to 1 (or all 0)."""
        ...


def _normalized(names: Sequence[str], raw: np.ndarray) -> dict[str, float]:
    total = float(raw.sum())
    scaled = raw / total if total > 0 else raw
    return {name: float(value) for name, value in zip(names, scaled, strict=True)}


def _as_matrix(X: np.ndarray, n_features: int | None, *, keep_float32: bool = False) -> np.ndarray:
    as_is = keep_float32 and getattr(X, "dtype", None) == np.float32
    matrix = np.asarray(X, dtype=np.float32 if as_is else np.float64)
    if matrix.ndim != 2:
        raise DataValidationError(
            f"The model input must be a 2-D matrix (rows x features); got shape {matrix.shape}."
        )
    if n_features is not None and matrix.shape[1] != n_features:
        raise DataValidationError(
            f"The model expects {n_features} feature columns but the input has "
            f"{matrix.shape[1]}; transform the rows with the bundle's preprocessor first."
        )
    return matrix


class XGBoostModel:
    """An XGBoost booster (gradient boosting or random-forest mode) saved as ``model.ubj``.

    Args:
        booster: The trained booster; it should already be cut to its best iteration.
        kind: ``"xgboost"`` or ``"random_forest"``.
        task: ``"classification"`` or ``"regression"``.
        n_classes: Number of classes (1 for regression).
    """

    filename = XGBOOST_FILENAME

    def __init__(
        self, booster: xgboost.Booster, *, kind: str = "xgboost", task: Task, n_classes: int
    ) -> None:
        if kind not in _XGBOOST_KINDS:
            raise ConfigError(f"XGBoostModel kind must be one of {_XGBOOST_KINDS}, not {kind!r}.")
        self.booster = booster
        self.kind = kind
        self.task: Task = task
        self.n_classes = n_classes

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict with ``Booster.inplace_predict`` (no DMatrix copy).

        Args:
            X: Float matrix ``(n, features)`` in the preprocessor's output column order
                (float32 is read as is: XGBoost predicts in float32).

        Returns:
            ``(n,)`` probabilities of the positive class, ``(n, K)`` class probabilities or
            ``(n,)`` regression values.
        """
        matrix = _as_matrix(X, self.booster.num_features(), keep_float32=True)
        out = np.asarray(self.booster.inplace_predict(matrix), dtype=np.float64)
        if self.task == "classification" and self.n_classes > 2:
            # XGBoost computes in float32; renormalize so each row sums to 1 in float64.
            proba = out.reshape(matrix.shape[0], self.n_classes)
            return np.asarray(proba / proba.sum(axis=1, keepdims=True))
        return out.reshape(matrix.shape[0])

    def save(self, directory: Path) -> Path:
        """Write the booster as ``model.ubj`` (XGBoost's UBJSON format) into ``directory``."""
        path = Path(directory) / self.filename
        self.booster.save_model(str(path))
        return path

    @classmethod
    def load(cls, directory: Path, *, kind: str, task: Task, n_classes: int) -> XGBoostModel:
        """Read ``model.ubj`` from ``directory``.

        Raises:
            BundleError: The file is missing or is not an XGBoost model.
        """
        path = Path(directory) / XGBOOST_FILENAME
        if not path.is_file():
            raise BundleError(f"Model file {path} is missing; the bundle is incomplete.")
        with path.open("rb") as handle:
            head = handle.read(1)
        # UBJSON models are one object; checking first also keeps pickles away from XGBoost,
        # whose own error for them is not even decodable text.
        if head != b"{":
            raise BundleError(
                f"{path} is not a readable XGBoost model: it is not UBJSON (first byte {head!r})."
            )
        raw = path.read_bytes()
        try:
            _check_ubjson(raw)
        except ValueError as exc:
            raise BundleError(f"{path} is not a readable XGBoost model: {exc}") from None
        booster = xgboost.Booster()
        try:
            booster.load_model(bytearray(raw))
        except (xgboost.core.XGBoostError, UnicodeDecodeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{path} is not a readable XGBoost model: {reason}") from None
        return cls(booster, kind=kind, task=task, n_classes=n_classes)

    def feature_importance(self, names: Sequence[str]) -> dict[str, float]:
        """Total gain per feature, normalized to sum 1, keyed by output column name."""
        if len(names) != self.booster.num_features():
            raise ValueError(
                f"{len(names)} names given for a model with {self.booster.num_features()} features."
            )
        scores = self.booster.get_score(importance_type="total_gain")
        raw = np.zeros(len(names))
        for key, value in scores.items():
            # Without feature names XGBoost keys features as "f<index>".
            index = int(key[1:]) if key.startswith("f") and key[1:].isdigit() else names.index(key)
            raw[index] = float(value)  # type: ignore[arg-type]
        return _normalized(names, raw)


class LinearModel:
    """A linear model kept as plain numbers: ``link(X @ coef.T + intercept)``.

    Args:
        coef: ``(1, F)`` for regression and binary classification, ``(K, F)`` for K classes.
        intercept: ``(1,)`` or ``(K,)``.
        task: ``"classification"`` or ``"regression"``.
        n_classes: Number of classes (1 for regression).
    """

    kind = "linear"
    filename = LINEAR_FILENAME

    def __init__(
        self, coef: np.ndarray, intercept: np.ndarray, *, task: Task, n_classes: int
    ) -> None:
        self.coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        self.intercept = np.atleast_1d(np.asarray(intercept, dtype=np.float64))
        self.task: Task = task
        self.n_classes = n_classes
        rows = n_classes if task == "classification" and n_classes > 2 else 1
        if self.coef.shape[0] != rows or self.intercept.shape != (rows,):
            raise ConfigError(
                f"A {task} model with {n_classes} classes needs coef ({rows}, F) and intercept "
                f"({rows},); got {self.coef.shape} and {self.intercept.shape}."
            )

    @property
    def link(self) -> str:
        """``"logistic"`` (binary), ``"softmax"`` (multiclass) or ``"identity"`` (regression)."""
        if self.task == "regression":
            return "identity"
        return "softmax" if self.n_classes > 2 else "logistic"

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict with one dot product and the link function (shapes as XGBoostModel)."""
        z = _as_matrix(X, self.coef.shape[1]) @ self.coef.T + self.intercept
        if self.link == "identity":
            return np.asarray(z[:, 0])
        if self.link == "logistic":
            return np.asarray(1.0 / (1.0 + np.exp(-z[:, 0])))
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def to_dict(self) -> dict[str, Any]:
        """The ``model.json`` content."""
        return {
            "format": _LINEAR_FORMAT,
            "kind": self.kind,
            "task": self.task,
            "n_classes": self.n_classes,
            "link": self.link,
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
        }

    def save(self, directory: Path) -> Path:
        """Write the coefficients as plain JSON ``model.json`` into ``directory``."""
        path = Path(directory) / self.filename
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path, *, task: Task, n_classes: int) -> LinearModel:
        """Read ``model.json`` from ``directory``.

        Raises:
            BundleError: The file is missing, not JSON, or describes another task.
        """
        path = Path(directory) / LINEAR_FILENAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(f"Model file {path} is missing; the bundle is incomplete.") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"{path} is not a valid linear model file: {exc}") from None
        if not isinstance(data, dict):
            raise BundleError(f"{path} is not a valid linear model file: not a JSON object.")
        if data.get("task") != task or data.get("n_classes") != n_classes:
            raise BundleError(
                f"{path} holds a {data.get('task')} model with {data.get('n_classes')} classes "
                f"but the bundle declares {task} with {n_classes}."
            )
        try:
            model = cls(
                np.asarray(data["coef"], dtype=np.float64),
                np.asarray(data["intercept"], dtype=np.float64),
                task=task,
                n_classes=n_classes,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{path} is not a valid linear model file: {exc}") from None
        return model

    def feature_importance(self, names: Sequence[str]) -> dict[str, float]:
        """Mean absolute coefficient per feature (inputs are standardized), normalized to sum 1."""
        if len(names) != self.coef.shape[1]:
            raise ValueError(f"{len(names)} names given for a model with {self.coef.shape[1]}.")
        return _normalized(names, np.abs(self.coef).mean(axis=0))


def load_model(directory: Path, *, kind: str, task: Task, n_classes: int) -> TabularModel:
    """Load the model file of a bundle directory.

    Args:
        directory: The bundle directory holding ``model.ubj`` or ``model.json``.
        kind: ``"xgboost"``, ``"random_forest"`` or ``"linear"`` (from the manifest).
        task: ``"classification"`` or ``"regression"``.
        n_classes: Number of classes (1 for regression).

    Returns:
        The model.

    Raises:
        BundleError: Unknown kind, or the model file is missing or unreadable.
    """
    if kind in _XGBOOST_KINDS:
        return XGBoostModel.load(directory, kind=kind, task=task, n_classes=n_classes)
    if kind == "linear":
        return LinearModel.load(directory, task=task, n_classes=n_classes)
    raise BundleError(
        f"Unknown model kind {kind!r}; expected one of {(*_XGBOOST_KINDS, 'linear')}."
    )


# UBJSON value markers with a fixed payload size (bytes after the marker).
_UBJSON_FIXED = {"Z": 0, "N": 0, "T": 0, "F": 0, "i": 1, "U": 1, "C": 1, "I": 2, "l": 4, "d": 4}
_UBJSON_FIXED |= {"L": 8, "D": 8}
_UBJSON_INTS = {"i", "U", "I", "l", "L"}  # big-endian; all signed but "U"
_UBJSON_MAX_DEPTH = 64


def _check_ubjson(data: bytes) -> None:
    """Walk UBJSON ``data`` without decoding it; raise ``ValueError`` unless it is exactly one
    complete value.

    XGBoost reads past the end of a truncated UBJSON buffer (seen as a segmentation fault), so a
    model file is checked here before XGBoost sees it.
    """
    end = _ubjson_value(memoryview(data), 0, None, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes follow the model object")


def _ubjson_take(data: memoryview, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise ValueError(f"it ends inside a value at byte {len(data)} (the file is truncated)")
    return pos + size


def _ubjson_int(data: memoryview, pos: int) -> tuple[int, int]:
    """A length or count: an integer value with its own marker."""
    marker = chr(data[_ubjson_take(data, pos, 1) - 1])
    if marker not in _UBJSON_INTS:
        raise ValueError(f"byte {pos} holds {marker!r} where a length was expected")
    start = pos + 1
    end = _ubjson_take(data, start, _UBJSON_FIXED[marker])
    value = int.from_bytes(data[start:end], "big", signed=marker != "U")
    if value < 0:
        raise ValueError(f"byte {pos} holds a negative length")
    return value, end


def _ubjson_value(data: memoryview, pos: int, marker: str | None, depth: int) -> int:
    """The position after the value at ``pos`` (``marker``: its type, fixed by the container)."""
    if marker is None:
        marker = chr(data[_ubjson_take(data, pos, 1) - 1])
        pos += 1
    if marker in _UBJSON_FIXED:
        return _ubjson_take(data, pos, _UBJSON_FIXED[marker])
    if marker in "SH":
        length, pos = _ubjson_int(data, pos)
        return _ubjson_take(data, pos, length)
    if marker not in "[{":
        raise ValueError(f"byte {pos - 1} holds {marker!r}, which is not a UBJSON value")
    if depth >= _UBJSON_MAX_DEPTH:
        raise ValueError(f"it nests deeper than {_UBJSON_MAX_DEPTH} containers")
    is_object = marker == "{"
    typed = count = None
    if pos < len(data) and chr(data[pos]) == "$":
        typed = chr(data[_ubjson_take(data, pos + 1, 1) - 1])
        pos += 2
        if pos >= len(data) or chr(data[pos]) != "#":
            raise ValueError(f"byte {pos}: a typed container must give its count")
    if pos < len(data) and chr(data[pos]) == "#":
        count, pos = _ubjson_int(data, pos + 1)
    if count is not None and typed in _UBJSON_FIXED and not is_object:
        return _ubjson_take(data, pos, count * _UBJSON_FIXED[typed])  # a packed array
    seen = 0
    while count is None or seen < count:
        if count is None:
            closing = chr(data[_ubjson_take(data, pos, 1) - 1])
            if closing == ("}" if is_object else "]"):
                return pos + 1
        if is_object:
            length, pos = _ubjson_int(data, pos)
            pos = _ubjson_take(data, pos, length)
        pos = _ubjson_value(data, pos, typed, depth + 1)
        seen += 1
    return pos


# Rows :func:`predict_in_chunks` predicts at a time.
PREDICT_CHUNK_ROWS = 262_144


def predict_in_chunks(model: TabularModel, X: np.ndarray) -> np.ndarray:
    """``model.predict(X)``, :data:`PREDICT_CHUNK_ROWS` rows at a time: a linear model computes
    in float64, and a float64 copy of a whole float32 training matrix would be the biggest thing
    alive while a model is scored."""
    if len(X) <= PREDICT_CHUNK_ROWS:
        return model.predict(X)
    return np.concatenate(
        [model.predict(X[i : i + PREDICT_CHUNK_ROWS]) for i in range(0, len(X), PREDICT_CHUNK_ROWS)]
    )
