"""Candidates: distributed XGBoost and two baselines, all scored on the validation split.

Every candidate sees the same already-transformed features (the preprocessor's output matrix),
so their validation scores compare models, not feature pipelines.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost

from kubeloop.data import Task
from kubeloop.errors import ConfigError, DataValidationError, TrainingError
from kubeloop.evaluation import validation_score
from kubeloop.models import LinearModel, TabularModel, XGBoostModel
from kubeloop.training.distributed import train_xgboost_distributed
from kubeloop.training.engine import AUTO, Workers, parse_workers, resolve_engine

__all__ = ["CANDIDATE_NAMES", "Candidate", "TrainConfig", "train_candidates", "xgboost_params"]

CANDIDATE_NAMES = ("xgboost", "linear", "random_forest")

Progress = Callable[[str], None]
Matrix = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TrainConfig:
    """How candidates are trained. Defaults are tuned for small/medium tabular data.

    Attributes:
        workers: How XGBoost trains: ``"auto"`` (in this process unless a Ray cluster is
            configured, then Ray Train workers sized to it), ``0`` (in this process) or a Ray
            Train worker count (one CPU each); see :mod:`kubeloop.training.engine`.
        seed: Seed of every random choice (XGBoost sampling, the forest).
        num_boost_round: Upper bound of boosting rounds; early stopping usually ends sooner.
        early_stopping_rounds: Rounds without validation improvement before stopping.
        max_depth: Depth of the boosted trees.
        learning_rate: Shrinkage of each boosting round.
        min_child_weight: Minimum hessian sum in a leaf (regularizes small leaves).
        subsample: Row fraction per boosted tree.
        colsample_bytree: Column fraction per boosted tree.
        forest_trees: Trees of the random-forest baseline.
        forest_max_depth: Depth of the random-forest trees.
        ray_address: Ray cluster address; ``None`` honours ``RAY_ADDRESS``.
        candidates: Which candidates to train, in this order.
    """

    workers: Workers = AUTO
    seed: int = 0
    num_boost_round: int = 2000
    early_stopping_rounds: int = 50
    max_depth: int = 5
    learning_rate: float = 0.05
    min_child_weight: float = 10.0
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    forest_trees: int = 200
    forest_max_depth: int = 12
    ray_address: str | None = None
    candidates: tuple[str, ...] = CANDIDATE_NAMES

    def __post_init__(self) -> None:
        # "AUTO", "2" (a pipeline parameter) -> "auto", 2; anything else is a ConfigError.
        object.__setattr__(self, "workers", parse_workers(self.workers))


@dataclass(frozen=True)
class Candidate:
    """One trained model and its validation score (higher is better)."""

    name: str
    model: TabularModel
    validation_score: float
    params: dict[str, Any] = field(default_factory=dict)


def _objective(task: Task, n_classes: int, y: np.ndarray) -> dict[str, Any]:
    if task == "regression":
        return {"objective": "reg:squarederror", "eval_metric": ["rmse"]}
    if n_classes > 2:
        return {"objective": "multi:softprob", "num_class": n_classes, "eval_metric": ["mlogloss"]}
    positives = float(np.count_nonzero(y == 1))
    negatives = float(len(y) - positives)
    return {
        "objective": "binary:logistic",
        "eval_metric": ["auc"],
        "scale_pos_weight": negatives / positives,
    }


def xgboost_params(
    task: Task, n_classes: int, y: np.ndarray, config: TrainConfig
) -> dict[str, Any]:
    """The boosted-tree parameters for a task (objective, metric, class balance, config).

    Args:
        task: ``"classification"`` or ``"regression"``.
        n_classes: Number of classes (1 for regression).
        y: Training labels (binary: used for ``scale_pos_weight = negatives / positives``).
        config: The training configuration.

    Returns:
        Parameters for ``xgboost.train``.
    """
    return {
        **_objective(task, n_classes, y),
        "tree_method": "hist",
        "max_depth": config.max_depth,
        "learning_rate": config.learning_rate,
        "min_child_weight": config.min_child_weight,
        "subsample": config.subsample,
        "colsample_bytree": config.colsample_bytree,
        "seed": config.seed,
    }


def _train_xgboost(
    train: Matrix,
    validation: Matrix,
    task: Task,
    n_classes: int,
    config: TrainConfig,
    say: Progress,
) -> tuple[TabularModel, dict[str, Any]]:
    params = xgboost_params(task, n_classes, train[1], config)
    engine = resolve_engine(config.workers, config.ray_address)
    booster = train_xgboost_distributed(
        train,
        validation,
        params=params,
        num_boost_round=config.num_boost_round,
        early_stopping_rounds=config.early_stopping_rounds,
        workers=engine,
        progress=say,
    )
    info = {
        **params,
        "workers": engine.workers,
        "engine": "in-process" if engine.in_process else "ray-train-workers",
        "rounds": booster.num_boosted_rounds(),
    }
    return XGBoostModel(booster, kind="xgboost", task=task, n_classes=n_classes), info


def _train_linear(
    train: Matrix,
    validation: Matrix,
    task: Task,
    n_classes: int,
    config: TrainConfig,
    say: Progress,
) -> tuple[TabularModel, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression, Ridge

    X, y = train
    if task == "regression":
        # A whisper of ridge keeps the one-hot columns (collinear with the intercept) stable.
        reg = Ridge(alpha=1e-3).fit(X, y)
        model = LinearModel(
            np.atleast_2d(reg.coef_), np.atleast_1d(reg.intercept_), task=task, n_classes=1
        )
        return model, {"estimator": "Ridge", "alpha": 1e-3}
    clf = LogisticRegression(C=1.0, max_iter=2000, random_state=config.seed).fit(X, y)
    if list(clf.classes_) != list(range(n_classes)):
        raise DataValidationError(
            f"The training labels hold classes {list(clf.classes_)} but {n_classes} classes "
            "were declared; every class must appear in the training split."
        )
    model = LinearModel(clf.coef_, clf.intercept_, task=task, n_classes=n_classes)
    return model, {"estimator": "LogisticRegression", "C": 1.0}


def _train_random_forest(
    train: Matrix,
    validation: Matrix,
    task: Task,
    n_classes: int,
    config: TrainConfig,
    say: Progress,
) -> tuple[TabularModel, dict[str, Any]]:
    # XGBoost's random-forest mode: one round of many parallel, row/column-sampled trees with
    # no shrinkage. Single-process on purpose: it is a baseline, and one round needs no Ray.
    params = {
        **_objective(task, n_classes, train[1]),
        "tree_method": "hist",
        "num_parallel_tree": config.forest_trees,
        "max_depth": config.forest_max_depth,
        "subsample": 0.632,
        "colsample_bynode": 0.6,
        "learning_rate": 1.0,
        "reg_lambda": 1e-5,
        "min_child_weight": 2.0,
        "seed": config.seed,
        "nthread": os.cpu_count() or 1,
    }
    dtrain = xgboost.QuantileDMatrix(train[0], label=train[1])
    booster = xgboost.train(params, dtrain, num_boost_round=1)
    model = XGBoostModel(booster, kind="random_forest", task=task, n_classes=n_classes)
    return model, params


_TRAINERS = {
    "xgboost": _train_xgboost,
    "linear": _train_linear,
    "random_forest": _train_random_forest,
}


def _check_inputs(train: Matrix, validation: Matrix, task: Task, n_classes: int) -> None:
    for part, (X, y) in (("train", train), ("validation", validation)):
        if X.ndim != 2 or len(X) != len(y) or len(y) == 0:
            raise DataValidationError(
                f"The {part} split must be a non-empty matrix with one label per row; got X "
                f"{X.shape} and y {np.shape(y)}."
            )
    if task == "classification":
        if n_classes < 2:
            raise DataValidationError(f"Classification needs at least 2 classes, not {n_classes}.")
        labels = np.unique(train[1])
        if labels.min() < 0 or labels.max() >= n_classes or len(labels) < 2:
            raise DataValidationError(
                f"Training labels must be codes 0..{n_classes - 1} covering at least two "
                f"classes; found {labels.tolist()[:10]}."
            )


def train_candidates(
    train: Matrix,
    validation: Matrix,
    *,
    task: Task,
    n_classes: int,
    config: TrainConfig = TrainConfig(),
    progress: Progress | None = None,
) -> list[Candidate]:
    """Train every configured candidate and score it on the validation split.

    Args:
        train: ``(matrix, y)`` after the preprocessor (classification: int codes).
        validation: ``(matrix, y)`` used for XGBoost's early stopping and for every score.
        task: ``"classification"`` or ``"regression"``.
        n_classes: Number of classes (1 for regression).
        config: Which candidates and how.
        progress: Called with one human line per step.

    Returns:
        The candidates in ``config.candidates`` order; ``validation_score`` is ROC AUC (binary),
        minus log loss (multiclass) or minus RMSE (regression).

    Raises:
        ConfigError: Unknown candidate name.
        DataValidationError: Inconsistent matrices or labels.
        TrainingError: Ray or XGBoost failed.
    """
    unknown = [name for name in config.candidates if name not in _TRAINERS]
    if unknown or not config.candidates:
        raise ConfigError(
            f"Unknown or no candidates {unknown or list(config.candidates)}; choose from "
            f"{list(CANDIDATE_NAMES)}."
        )
    _check_inputs(train, validation, task, n_classes)
    say = progress or (lambda _line: None)
    candidates = []
    for name in config.candidates:
        say(f"training {name} on {len(train[1]):,} rows x {train[0].shape[1]} features")
        try:
            model, params = _TRAINERS[name](train, validation, task, n_classes, config, say)
        except xgboost.core.XGBoostError as exc:
            raise TrainingError(f"XGBoost failed training the {name} candidate: {exc}") from None
        score = validation_score(task, validation[1], model.predict(validation[0]))
        if not math.isfinite(score):
            raise TrainingError(f"The {name} candidate scored {score} on validation.")
        say(f"{name}: validation score {score:.5f}")
        candidates.append(Candidate(name, model, score, params))
    return candidates
