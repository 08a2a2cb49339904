"""Held-out metrics and plots of a model (the ``evaluate`` stage).

Predictions follow :class:`kubeloop.bundle.models.TabularModel.predict`: binary classification gives
the probability of ``classes[1]`` with shape ``(n,)``; more classes give an ``(n, K)`` probability
matrix; regression gives values ``(n,)``. Labels are integer codes into ``schema.classes``.

Every metric comes back as a plain Python ``float`` (or a list of lists of ``int`` for the
confusion matrix) so ``json.dumps`` accepts the result as is. A metric that is undefined on the
given labels (ROC AUC when the labels hold one class only) is ``None`` rather than NaN, because
NaN is not valid JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as _skm

from kubeloop import charts
from kubeloop.bundle.schema import Task
from kubeloop.errors import DataValidationError

__all__ = ["curve_points", "evaluate", "validation_score", "write_plots"]

_IMPORTANCE_TOP = 20
_CONFUSION = "Confusion matrix (test split)"
_IMPORTANCE_TITLES = {
    "importance": "Feature importance per model input",
    "global_importance": "Mean |contribution| per input feature, test split",
}


def _labels_and_probabilities(
    y_true: np.ndarray, prediction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes; return integer labels and an ``(n, K)`` probability matrix (K >= 2)."""
    y = np.asarray(y_true)
    p = np.asarray(prediction, dtype=np.float64)
    if y.ndim != 1 or len(y) == 0:
        raise DataValidationError(
            f"y_true must be a non-empty 1-D array of class codes; got shape {y.shape}."
        )
    if p.shape[0] != len(y):
        raise DataValidationError(
            f"prediction has {p.shape[0]} rows but y_true has {len(y)}; pass one prediction per "
            "row of the evaluation data."
        )
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    elif p.ndim != 2 or p.shape[1] < 2:
        raise DataValidationError(
            f"classification prediction must have shape (n,) or (n, K>=2); got {p.shape}."
        )
    if not np.all(np.isfinite(p)):
        raise DataValidationError(
            "prediction holds NaN or infinite probabilities; check the model."
        )
    labels = y.astype(np.int64)
    if labels.min() < 0 or labels.max() >= p.shape[1]:
        raise DataValidationError(
            f"y_true holds class codes outside 0..{p.shape[1] - 1}; encode labels with the "
            "schema's classes."
        )
    return labels, p


def _regression_arrays(y_true: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    if y.ndim != 1 or len(y) == 0 or p.shape != y.shape:
        raise DataValidationError(
            f"regression y_true and prediction must be 1-D arrays of the same non-zero length; "
            f"got shapes {y.shape} and {p.shape}."
        )
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        raise DataValidationError("regression y_true or prediction holds NaN or infinite values.")
    return y, p


def _predicted_labels(p: np.ndarray, threshold: float) -> np.ndarray:
    """Binary: ``classes[1]`` when its probability is >= threshold; otherwise the argmax."""
    if p.shape[1] == 2:
        return (p[:, 1] >= threshold).astype(np.int64)
    return np.argmax(p, axis=1).astype(np.int64)


def _one_vs_rest(y: np.ndarray, p: np.ndarray, score: Any) -> float | None:
    """Macro average of ``score(y == k, p[:, k])`` over the classes present in ``y``."""
    values = [
        float(score(y == k, p[:, k])) for k in range(p.shape[1]) if 0 < int(np.sum(y == k)) < len(y)
    ]
    return float(np.mean(values)) if values else None


def evaluate(
    task: Task,
    y_true: np.ndarray,
    prediction: np.ndarray,
    *,
    classes: Sequence[str] = (),
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Compute the held-out metrics of one model.

    Args:
        task: ``"classification"`` or ``"regression"``.
        y_true: Class codes (classification) or target values (regression).
        prediction: What ``TabularModel.predict`` returned for the same rows.
        classes: Class names; only their number is checked (it must match the prediction).
        threshold: Binary only: probability of ``classes[1]`` at or above which a row is
            predicted positive. Multiclass predicts the most probable class.

    Returns:
        Classification: ``accuracy``, ``precision``, ``recall``, ``f1``, ``roc_auc``,
        ``pr_auc`` (average precision), ``log_loss``, ``confusion_matrix`` (rows = true class,
        columns = predicted), ``threshold``. Binary uses ``classes[1]`` as the positive class;
        multiclass gives macro averages and one-vs-rest ROC AUC. Regression: ``rmse``, ``mae``,
        ``r2``.

    Raises:
        DataValidationError: shapes disagree, values are not finite, or codes are out of range.
    """
    if task == "regression":
        y, p = _regression_arrays(y_true, prediction)
        return {
            "rmse": float(np.sqrt(_skm.mean_squared_error(y, p))),
            "mae": float(_skm.mean_absolute_error(y, p)),
            "r2": float(_skm.r2_score(y, p)) if len(y) > 1 else None,
        }
    labels, p = _labels_and_probabilities(y_true, prediction)
    n_classes = p.shape[1]
    if classes and len(classes) != n_classes:
        raise DataValidationError(
            f"{len(classes)} class names given but the prediction covers {n_classes} classes."
        )
    codes = list(range(n_classes))
    predicted = _predicted_labels(p, threshold)
    if n_classes == 2:
        both = 0 < int(labels.sum()) < len(labels)
        scores: dict[str, Any] = {
            "precision": _skm.precision_score(labels, predicted, zero_division=0),
            "recall": _skm.recall_score(labels, predicted, zero_division=0),
            "f1": _skm.f1_score(labels, predicted, zero_division=0),
            "roc_auc": _skm.roc_auc_score(labels, p[:, 1]) if both else None,
            "pr_auc": _skm.average_precision_score(labels, p[:, 1]) if both else None,
        }
    else:
        macro = {"labels": codes, "average": "macro", "zero_division": 0}
        scores = {
            "precision": _skm.precision_score(labels, predicted, **macro),
            "recall": _skm.recall_score(labels, predicted, **macro),
            "f1": _skm.f1_score(labels, predicted, **macro),
            "roc_auc": _one_vs_rest(labels, p, _skm.roc_auc_score),
            "pr_auc": _one_vs_rest(labels, p, _skm.average_precision_score),
        }
    result: dict[str, Any] = {"accuracy": float(_skm.accuracy_score(labels, predicted))}
    result.update({k: None if v is None else float(v) for k, v in scores.items()})
    result["log_loss"] = float(_skm.log_loss(labels, p, labels=codes))
    result["confusion_matrix"] = [
        [int(c) for c in row] for row in _skm.confusion_matrix(labels, predicted, labels=codes)
    ]
    result["threshold"] = float(threshold) if n_classes == 2 else None
    return result


def validation_score(task: Task, y_true: np.ndarray, prediction: np.ndarray) -> float:
    """The one number candidates are ranked by; higher is better.

    ROC AUC for binary classification, minus log loss for multiclass, minus RMSE for regression.

    Raises:
        DataValidationError: binary labels hold a single class (ROC AUC is undefined).
    """
    if task == "regression":
        y, p = _regression_arrays(y_true, prediction)
        return -float(np.sqrt(_skm.mean_squared_error(y, p)))
    labels, probs = _labels_and_probabilities(y_true, prediction)
    if probs.shape[1] > 2:
        return -float(_skm.log_loss(labels, probs, labels=list(range(probs.shape[1]))))
    if not 0 < int(labels.sum()) < len(labels):
        raise DataValidationError(
            "the validation labels hold a single class, so ROC AUC is undefined; use more rows "
            "or a larger validation fraction."
        )
    return float(_skm.roc_auc_score(labels, probs[:, 1]))


def _curve_series(
    labels: np.ndarray, probs: np.ndarray, names: list[str], *, roc: bool
) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """``(class name, x, y, AUC or AP)`` of the positive class, or of each class (OvR)."""
    series = []
    ks = [1] if probs.shape[1] == 2 else list(range(probs.shape[1]))
    for k in ks:
        truth = labels == k
        if not 0 < int(truth.sum()) < len(truth):
            continue  # a curve needs both outcomes
        if roc:
            x, y, _ = _skm.roc_curve(truth, probs[:, k])
            score = _skm.roc_auc_score(truth, probs[:, k])
        else:
            y, x, _ = _skm.precision_recall_curve(truth, probs[:, k])
            score = _skm.average_precision_score(truth, probs[:, k])
        series.append((names[k], x, y, float(score)))
    return series


def _thin(values: np.ndarray, keep: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values[keep]]


def curve_points(
    task: Task,
    y_true: np.ndarray,
    prediction: np.ndarray,
    *,
    classes: Sequence[str] = (),
    points: int = 60,
) -> dict[str, Any]:
    """The data behind the evaluation plots, small enough for ``metrics.json``.

    Classification: ``{"roc": [...], "pr": [...]}``, one ``{"name", "x", "y", "score"}`` series
    per curve (the positive class, or each class one-vs-rest), thinned to about ``points``
    points. Regression: ``{"residuals": {"edges": [...], "counts": [...]}}`` (20 bins of
    true - predicted). The HTML report draws its charts from these.
    """
    if task == "regression":
        y, p = _regression_arrays(y_true, prediction)
        residual = y - p
        low, high = float(residual.min()), float(residual.max())
        pad = max(high - low, abs(high), 1.0) * 1e-6  # near-constant residuals: still 20 bins
        counts, edges = np.histogram(residual, bins=20, range=(low - pad, high + pad))
        return {"residuals": {"edges": [float(e) for e in edges], "counts": counts.tolist()}}
    labels, probs = _labels_and_probabilities(y_true, prediction)
    names = list(classes) or [str(k) for k in range(probs.shape[1])]
    result: dict[str, Any] = {}
    for key, roc in (("roc", True), ("pr", False)):
        result[key] = []
        for name, x, y, score in _curve_series(labels, probs, names, roc=roc):
            keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), points)).astype(int))
            result[key].append(
                {"name": name, "x": _thin(x, keep), "y": _thin(y, keep), "score": score}
            )
    return result


def write_plots(
    directory: Path,
    *,
    task: Task,
    y_true: np.ndarray,
    prediction: np.ndarray,
    importance: Mapping[str, float],
    classes: Sequence[str] = (),
    contributions: Mapping[str, float] | None = None,
) -> list[Path]:
    """Write the evaluation plots as SVG files into ``directory`` (created if missing).

    Classification: ``roc.svg``, ``pr.svg`` (one-vs-rest curves when there are more than two
    classes) and ``confusion.svg`` (at threshold 0.5 / the most probable class); regression:
    ``residuals.svg``; always ``importance.svg`` (the top 20 model inputs); with
    ``contributions`` (mean absolute contribution per input feature),
    ``global_importance.svg``. Drawn by :mod:`kubeloop.charts` from the numbers ``metrics.json``
    keeps (:func:`curve_points`), the same drawings as the HTML report's: a few milliseconds,
    no plotting library.

    Returns:
        The paths written, in the order above.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    curves = curve_points(task, y_true, prediction, classes=classes)
    drawn: list[tuple[str, str]] = []
    if task == "regression":
        residuals = curves["residuals"]
        drawn.append(("residuals", charts.residuals(residuals["edges"], residuals["counts"])))
    else:
        labels, probs = _labels_and_probabilities(y_true, prediction)
        names = list(classes) or [str(k) for k in range(probs.shape[1])]
        drawn += [(key, charts.curve(key, curves[key])) for key in charts.CURVES]
        predicted = _predicted_labels(probs, 0.5)
        matrix = _skm.confusion_matrix(labels, predicted, labels=list(range(probs.shape[1])))
        drawn.append(
            ("confusion", charts.matrix("confusion", matrix.tolist(), names, title=_CONFUSION))
        )
    drawn.append(("importance", _importance_chart("importance", importance, "model input")))
    if contributions is not None:
        drawn.append(
            ("global_importance", _importance_chart("global_importance", contributions, "feature"))
        )
    written = []
    for name, svg in drawn:
        path = directory / f"{name}.svg"
        path.write_text(svg, encoding="utf-8")
        written.append(path)
    return written


def _importance_chart(ident: str, scores: Mapping[str, float], what: str) -> str:
    """The top scores as shares of all scores' total (gains or mean |contributions|)."""
    top = sorted(scores.items(), key=lambda kv: (-float(kv[1]), kv[0]))[:_IMPORTANCE_TOP]
    total = sum(max(float(v), 0.0) for v in scores.values()) or 1.0
    shares = [(name, max(float(value), 0.0) / total) for name, value in top]
    title = _IMPORTANCE_TITLES[ident] + f" (top {len(top)})"
    return charts.importance(ident, shares, title=title, what=what)
