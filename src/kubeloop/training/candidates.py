"""Candidates: distributed XGBoost and two baselines, all scored on the validation split.

Every candidate sees the same already-transformed features (the preprocessor's output matrix),
so their validation scores compare models, not feature pipelines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import xgboost

from kubeloop.bundle.models import LinearModel, TabularModel, XGBoostModel, predict_in_chunks
from kubeloop.bundle.schema import Task
from kubeloop.console import quiet
from kubeloop.cpus import usable_cpus
from kubeloop.errors import (
    ConfigError,
    DataValidationError,
    TrainingError,
    check_range,
    in_range,
    interval_text,
    parameter_error,
)
from kubeloop.training.crossval import (
    CV_BELOW_ROWS,
    CV_FOLDS,
    cross_validate,
    fold_indices,
    xgboost_fold_fit,
)
from kubeloop.training.distributed import train_xgboost_distributed
from kubeloop.training.engine import AUTO, Workers, parse_workers, resolve_engine
from kubeloop.training.evaluation import validation_score
from kubeloop.training.tuning import PARAMS, TuneResult, tune_xgboost

__all__ = [
    "BASELINES",
    "BASELINE_ROWS",
    "CANDIDATE_NAMES",
    "TUNED",
    "Candidate",
    "TrainConfig",
    "baseline_sample",
    "train_candidates",
    "xgboost_params",
]

CANDIDATE_NAMES = ("xgboost", "linear", "random_forest")
BASELINES = ("linear", "random_forest")  # trained on a sample above TrainConfig.baseline_rows
# Training rows above which the baselines train on a seeded sample of this many rows. The
# random forest (200 trees of depth 12, one round) costs about as much as XGBoost's few hundred
# depth-5 rounds on the same rows (measured on the generated churn table: 47 s against 48 s on
# 1.2M training rows); on a 100,000-row sample it costs a fraction of XGBoost on any table of
# more than about 200,000 training rows, and the linear model's validation score stays within
# noise of the full fit (30 inputs: 100,000 rows pin its coefficients down).
BASELINE_ROWS = 100_000
TUNED = "xgboost_tuned"  # the searched XGBoost, a candidate beside the default one
# Below this, Ray Tune's start-up leaves no time for a trial.
MIN_TUNE_BUDGET_S = 10.0
_OWNER = "TrainConfig"

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
        tune_budget: Seconds of wall clock for a hyperparameter search of XGBoost (Ray Tune +
            ASHA); its best configuration becomes the extra candidate ``xgboost_tuned``.
            0 turns the search off.
        tune_max_trials: Stop the search after this many trials (0: as many as the budget
            allows); with a cap inside the budget the search is fully reproducible.
        cv_below_rows: Below this many training + validation rows, candidates are compared by
            k-fold cross-validation on train + validation and the chosen one is refit on both.
        cv_folds: Folds of that cross-validation.
        baseline_rows: Above this many training rows the baselines (:data:`BASELINES`) train
            on a seeded sample of this many rows (XGBoost always trains on every row, and
            every candidate is scored on the whole validation part); 0: never sample.
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
    tune_budget: float = 0.0
    tune_max_trials: int = 0
    cv_below_rows: int = CV_BELOW_ROWS
    cv_folds: int = CV_FOLDS
    baseline_rows: int = BASELINE_ROWS

    def __post_init__(self) -> None:
        # "AUTO", "2" (a pipeline parameter) -> "auto", 2; anything else is a ConfigError.
        object.__setattr__(self, "workers", parse_workers(self.workers))
        budget = self.tune_budget  # 0: off; else long enough for a search, and finite
        if budget != 0 and not (in_range(budget, low=MIN_TUNE_BUDGET_S) and math.isfinite(budget)):
            expected = f"0 (off) or {interval_text(float, MIN_TUNE_BUDGET_S, None)}"
            raise parameter_error("tune_budget", budget, owner=_OWNER, expected=expected)
        check_range("tune_max_trials", self.tune_max_trials, kind=int, low=0, owner=_OWNER)
        check_range("cv_below_rows", self.cv_below_rows, kind=int, low=0, owner=_OWNER)
        check_range("cv_folds", self.cv_folds, kind=int, low=2, owner=_OWNER)
        check_range("baseline_rows", self.baseline_rows, kind=int, low=0, owner=_OWNER)


@dataclass(frozen=True)
class Candidate:
    """One trained model and its validation score (higher is better).

    ``selection`` says how the score was measured (``{"method": "holdout"}`` or the
    cross-validation's folds and scores); ``tuning`` is the search's record
    (:meth:`TuneResult.summary`) on the tuned candidate; ``trained_on`` the rows the model was
    fit on: ``{"rows": n, "of": total, "sampled": bool}``.
    """

    name: str
    model: TabularModel
    validation_score: float
    params: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None
    trained_on: dict[str, Any] = field(default_factory=dict)


def baseline_sample(rows: int, limit: int, seed: int) -> np.ndarray | None:
    """The training rows a baseline is fit on: ``None`` (all of them) up to ``limit`` rows
    (or when ``limit`` is 0), else ``limit`` rows drawn without replacement with ``seed``,
    in their original order."""
    if limit == 0 or rows <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))


def _trained_on(rows: int, sample: np.ndarray | None) -> dict[str, Any]:
    used = rows if sample is None else len(sample)
    return {"rows": used, "of": rows, "sampled": sample is not None}


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
    return _fit_xgboost(
        train,
        validation,
        params,
        task,
        n_classes,
        config,
        say,
        rounds=config.num_boost_round,
        patience=config.early_stopping_rounds,
    )


def _fit_xgboost(
    train: Matrix,
    validation: Matrix,
    params: dict[str, Any],
    task: Task,
    n_classes: int,
    config: TrainConfig,
    say: Progress,
    *,
    rounds: int,
    patience: int | None,
) -> tuple[TabularModel, dict[str, Any]]:
    """XGBoost on the engine the configuration chooses (:func:`resolve_engine`)."""
    engine = resolve_engine(config.workers, config.ray_address)
    placement: dict[str, Any] = {}  # where Ray Train's workers ran (none in this process)
    booster = train_xgboost_distributed(
        train,
        validation,
        params=params,
        num_boost_round=rounds,
        early_stopping_rounds=patience,
        workers=engine,
        progress=say,
        placement=placement,
    )
    info = {
        **params,
        "workers": engine.workers,
        "engine": "in-process" if engine.in_process else "ray-train-workers",
        "rounds": booster.num_boosted_rounds(),
        **({"ray": placement} if placement else {}),
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

    X, y = np.asarray(train[0], dtype=np.float64), train[1]  # float64, as it always fit
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
        "nthread": usable_cpus(),
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
    tuning = None
    if config.tune_budget > 0 and "xgboost" in config.candidates:
        params = xgboost_params(task, n_classes, train[1], config)
        tuning = _tune(train, validation, params, config, say)
    rows = len(train[1]) + len(validation[1])
    if rows < config.cv_below_rows:
        return _cross_validated(train, validation, task, n_classes, config, tuning, say)
    holdout = {"method": "holdout", "rows": len(validation[1])}
    candidates = []
    for name in config.candidates:
        sample = None
        if name in BASELINES:
            sample = baseline_sample(len(train[1]), config.baseline_rows, config.seed)
        part = train if sample is None else (train[0][sample], train[1][sample])
        trained_on = _trained_on(len(train[1]), sample)
        shown = f"{len(part[1]):,}" + ("" if sample is None else f" of {len(train[1]):,}")
        say(f"training {name} on {shown} rows x {train[0].shape[1]} features")
        started = time.monotonic()
        try:
            model, params = _TRAINERS[name](part, validation, task, n_classes, config, say)
        except xgboost.core.XGBoostError as exc:
            raise TrainingError(f"XGBoost failed training the {name} candidate: {exc}") from None
        seconds = time.monotonic() - started
        say(f"{name}: trained on {shown} rows in {seconds:.1f} s")
        scored = _scored(name, model, params, validation, task, holdout, say)
        candidates.append(replace(scored, trained_on=trained_on))
    if tuning is not None and tuning.booster is not None:
        model = XGBoostModel(tuning.booster, kind="xgboost", task=task, n_classes=n_classes)
        params = {**_tuned_params(task, n_classes, train[1], config, tuning), "tuned": True}
        scored = _scored(TUNED, model, params, validation, task, holdout, say)
        candidates.append(replace(scored, trained_on=_trained_on(len(train[1]), None)))
    return _with_tuning(candidates, tuning)


def _with_tuning(candidates: list[Candidate], tuning: TuneResult | None) -> list[Candidate]:
    """Attach the search's record to the tuned candidate (the default one if none came out)."""
    if tuning is None:
        return candidates
    names = [c.name for c in candidates]
    owner = TUNED if TUNED in names else "xgboost"
    return [replace(c, tuning=tuning.summary()) if c.name == owner else c for c in candidates]


def _scored(
    name: str,
    model: TabularModel,
    params: dict[str, Any],
    validation: Matrix,
    task: Task,
    selection: dict[str, Any],
    say: Progress,
) -> Candidate:
    score = validation_score(task, validation[1], predict_in_chunks(model, validation[0]))
    if not math.isfinite(score):
        raise TrainingError(f"The {name} candidate scored {score} on validation.")
    say(f"{name}: validation score {score:.5f}")
    return Candidate(name, model, score, params, selection)


def _default_point(config: TrainConfig) -> dict[str, Any]:
    """The configuration's XGBoost parameters as a point of the search space."""
    return {
        "grow_policy": "depthwise",  # XGBoost's own defaults, which the default candidate uses
        "max_depth": config.max_depth,
        "max_leaves": 0,
        "learning_rate": config.learning_rate,
        "min_child_weight": config.min_child_weight,
        "subsample": config.subsample,
        "colsample_bytree": config.colsample_bytree,
        "reg_alpha": 0.0,
        "reg_lambda": 1.0,
    }


def _tune(
    train: Matrix, validation: Matrix, params: dict[str, Any], config: TrainConfig, say: Progress
) -> TuneResult:
    """The search from the default candidate's parameters (``params``)."""
    base = {k: v for k, v in params.items() if k not in PARAMS and k != "seed"}
    return tune_xgboost(
        train,
        validation,
        base_params=base,
        default=_default_point(config),
        budget_s=config.tune_budget,
        seed=config.seed,
        num_boost_round=config.num_boost_round,
        early_stopping_rounds=config.early_stopping_rounds,
        max_trials=config.tune_max_trials,
        ray_address=config.ray_address,
        progress=say,
    )


def _tuned_params(
    task: Task, n_classes: int, y: np.ndarray, config: TrainConfig, tuning: TuneResult
) -> dict[str, Any]:
    return {
        **xgboost_params(task, n_classes, y, config),
        **tuning.best_params,
        "rounds": tuning.best_rounds,
    }


def _cross_validated(
    train: Matrix,
    validation: Matrix,
    task: Task,
    n_classes: int,
    config: TrainConfig,
    tuning: TuneResult | None,
    say: Progress,
) -> list[Candidate]:
    """Score every candidate by k-fold CV on train + validation, then refit each on all rows."""
    data = (np.concatenate([train[0], validation[0]]), np.concatenate([train[1], validation[1]]))
    folds = fold_indices(data[1], task=task, folds=config.cv_folds, seed=config.seed)
    say(
        f"{len(data[1])} training + validation rows (< {config.cv_below_rows}): candidates are "
        f"compared by {len(folds)}-fold cross-validation and refit on all of them"
    )
    searched = tuning is not None and tuning.booster is not None
    names = [*config.candidates, *([TUNED] if searched else [])]
    candidates = []
    for name in names:
        boosted = name in ("xgboost", TUNED)
        if boosted:
            params = (
                _tuned_params(task, n_classes, data[1], config, tuning)
                if tuning is not None and name == TUNED
                else xgboost_params(task, n_classes, data[1], config)
            )
            fit = xgboost_fold_fit(
                {k: v for k, v in params.items() if k != "rounds"},
                task=task,
                n_classes=n_classes,
                num_boost_round=config.num_boost_round,
                patience=config.early_stopping_rounds,
            )
        else:
            fit = _baseline_fold_fit(name, task, n_classes, config)
        try:
            score, scores, rounds = cross_validate(data, fit, task=task, folds=folds)
            if boosted:
                model, info = _refit_xgboost(data, params, rounds, task, n_classes, config, say)
                info.update({"tuned": True} if name == TUNED else {})
            else:
                model, info = _TRAINERS[name](data, data, task, n_classes, config, say)
        except xgboost.core.XGBoostError as exc:
            raise TrainingError(f"XGBoost failed training the {name} candidate: {exc}") from None
        if not math.isfinite(score):
            raise TrainingError(f"The {name} candidate scored {score} in cross-validation.")
        say(f"{name}: cross-validated score {score:.5f} (refit on {len(data[1])} rows)")
        selection = {
            "method": "cross_validation",
            "folds": len(folds),
            "rows": len(data[1]),
            "fold_scores": [round(s, 6) for s in scores],
        }
        trained_on = _trained_on(len(data[1]), None)
        candidates.append(Candidate(name, model, score, info, selection, trained_on=trained_on))
    return _with_tuning(candidates, tuning)


def _baseline_fold_fit(
    name: str, task: Task, n_classes: int, config: TrainConfig
) -> Callable[[Matrix, Matrix], tuple[np.ndarray, int]]:
    def fit(part: Matrix, held: Matrix) -> tuple[np.ndarray, int]:
        model, _ = _TRAINERS[name](part, held, task, n_classes, config, quiet)
        return model.predict(held[0]), 0

    return fit


def _refit_xgboost(
    data: Matrix,
    params: dict[str, Any],
    rounds: int,
    task: Task,
    n_classes: int,
    config: TrainConfig,
    say: Progress,
) -> tuple[TabularModel, dict[str, Any]]:
    """XGBoost on every row, for the rounds cross-validation found."""
    fixed = {k: v for k, v in params.items() if k not in ("rounds", "tuned")}
    return _fit_xgboost(
        data, data, fixed, task, n_classes, config, say, rounds=rounds, patience=None
    )
