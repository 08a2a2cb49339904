"""Small data used well: candidates compared by k-fold cross-validation, then refit on all rows.

Below :data:`CV_BELOW_ROWS` training + validation rows (the default of
``TrainConfig.cv_below_rows``) one validation split is a few hundred rows or fewer, and the
choice between candidates on it is mostly noise (a 442-row regression leaves 88 validation
rows). There, every candidate is trained on ``k - 1`` folds of train + validation and scored on
the remaining fold, ``k`` times (stratified for classification); the best mean score wins. Every
candidate is then refit on train + validation — XGBoost with the mean of its folds'
early-stopping rounds, through Ray Train as usual — before the test evaluation.

Fold models are single-process (``xgboost.train``, scikit-learn): on data this small, starting
Ray Train workers per fold would cost far more than training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from kubeloop.bundle.models import XGBoostModel
from kubeloop.bundle.schema import Task
from kubeloop.cpus import usable_cpus
from kubeloop.training.evaluation import validation_score
from kubeloop.training.tuning import fit_booster

__all__ = ["CV_BELOW_ROWS", "CV_FOLDS", "cross_validate", "fold_indices"]

CV_BELOW_ROWS = 2000
CV_FOLDS = 5

Matrix = tuple[np.ndarray, np.ndarray]
# (train, held-out) -> the held-out prediction and what the fit learnt (XGBoost: its rounds).
FoldFit = Callable[[Matrix, Matrix], tuple[np.ndarray, int]]


def fold_indices(
    y: np.ndarray, *, task: Task, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train rows, held-out rows)`` per fold; stratified for classification.

    Classification uses at most as many folds as the rarest class has rows (at least 2), so
    every fold's training part holds every class.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if task == "classification":
        rarest = int(np.bincount(np.asarray(y, dtype=int)).min(initial=len(y)))
        k = max(2, min(folds, rarest))
        splitter: Any = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=min(folds, len(y)), shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def cross_validate(
    data: Matrix,
    fit: FoldFit,
    *,
    task: Task,
    folds: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[float, list[float], int]:
    """Mean validation score of ``fit`` over ``folds`` (higher is better).

    Returns:
        The mean score, every fold's score, and the mean of what ``fit`` returned beside its
        prediction (rounded; XGBoost: the early-stopping rounds).
    """
    X, y = data
    scores, learnt = [], []
    for train_rows, held_rows in folds:
        prediction, rounds = fit((X[train_rows], y[train_rows]), (X[held_rows], y[held_rows]))
        scores.append(validation_score(task, y[held_rows], prediction))
        learnt.append(rounds)
    return float(np.mean(scores)), scores, max(1, round(float(np.mean(learnt))))


def xgboost_fold_fit(
    params: Mapping[str, Any], *, task: Task, n_classes: int, num_boost_round: int, patience: int
) -> FoldFit:
    """A :data:`FoldFit` for XGBoost: early stopping on the held-out fold, all local threads."""

    def fit(train: Matrix, held: Matrix) -> tuple[np.ndarray, int]:
        data = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in (*train, *held))
        booster = fit_booster(
            data,  # type: ignore[arg-type]
            {**params, "nthread": usable_cpus()},
            num_boost_round=num_boost_round,
            early_stopping_rounds=patience,
        )
        model = XGBoostModel(booster, kind="xgboost", task=task, n_classes=n_classes)
        return model.predict(held[0]), booster.num_boosted_rounds()

    return fit


def finite(score: float) -> bool:
    """Whether a cross-validated score can rank candidates."""
    return math.isfinite(score)
