"""The search space, the seeded proposals, cross-validation folds and the CV choice (no Ray)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from kubeloop.errors import ConfigError
from kubeloop.pipelines.steps.evaluate import tuning_markdown
from kubeloop.training import TrainConfig, train_candidates
from kubeloop.training.crossval import cross_validate, fold_indices
from kubeloop.training.tuning import (
    GROW_POLICIES,
    PARAMS,
    SEARCH_SPACE,
    _draw,
    _perturb,
    _search_class,
)


def _inside(config: dict) -> None:
    """A point of the search space: every parameter in range; the tree's size is set by its
    policy's parameter (depth or leaves) and the other one is 0 (no limit)."""
    assert set(config) == set(PARAMS)
    policy = config["grow_policy"]
    assert policy in GROW_POLICIES
    size = "max_depth" if policy == "depthwise" else "max_leaves"
    for name, (low, high, scale) in SEARCH_SPACE.items():
        if name in ("max_depth", "max_leaves") and name != size:
            assert config[name] == 0, name
            continue
        assert low <= config[name] <= high, name
        if scale.startswith("int"):
            assert isinstance(config[name], int), name


def test_draws_and_perturbations_stay_in_the_space_and_follow_the_seed() -> None:
    rng = np.random.default_rng(4)
    draws = [_draw(rng) for _ in range(200)]
    for config in draws:
        _inside(config)
        neighbour = _perturb(config, rng)
        _inside(neighbour)
        assert neighbour["grow_policy"] == config["grow_policy"]
    again = np.random.default_rng(4)
    assert [_draw(again) for _ in range(5)] == draws[:5]
    assert [_draw(np.random.default_rng(5)) for _ in range(5)] != draws[:5]
    # Both tree shapes are drawn; learning rates are log-uniform: about as many below the log
    # midpoint of the range as above.
    assert 70 < sum(c["grow_policy"] == "lossguide" for c in draws) < 130
    low, high, _ = SEARCH_SPACE["learning_rate"]
    below = sum(c["learning_rate"] < (low * high) ** 0.5 for c in draws)
    assert 70 < below < 130


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"tune_budget": -1.0}, "tune_budget"),
        ({"tune_budget": float("nan")}, "tune_budget"),
        (
            {"tune_budget": 0.5},
            r"^The 'tune_budget' parameter of TrainConfig must be 0 \(off\) or a float in the "
            r"range \[10\.0, inf\)\. Got 0\.5 instead\.$",
        ),
        ({"tune_budget": float("inf")}, "tune_budget"),
        ({"tune_max_trials": -2}, "tune_max_trials"),
        (
            {"cv_folds": 1},
            r"'cv_folds' parameter of TrainConfig must be an int in the range \[2, inf\)",
        ),
    ],
)
def test_train_config_refuses_bad_tuning_settings(settings: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**settings)


def test_folds_are_stratified_and_cover_every_row_once() -> None:
    y = np.array([0] * 90 + [1] * 10)
    folds = fold_indices(y, task="classification", folds=5, seed=0)
    assert len(folds) == 5
    held = np.concatenate([rows for _, rows in folds])
    assert sorted(held.tolist()) == list(range(100))
    for train_rows, held_rows in folds:
        assert set(y[train_rows]) == {0, 1}
        assert (y[held_rows] == 1).sum() == 2
    # A class with 3 rows allows only 3 folds, so every training part still holds it.
    rare = np.array([0] * 50 + [1] * 3)
    assert len(fold_indices(rare, task="classification", folds=5, seed=0)) == 3


def test_cross_validate_averages_fold_scores() -> None:
    X = np.arange(40, dtype=float).reshape(-1, 1)
    y = 2.0 * X[:, 0]
    folds = fold_indices(y, task="regression", folds=4, seed=1)

    def off_by_one(train: tuple, held: tuple) -> tuple[np.ndarray, int]:
        return held[1] + 1.0, len(train[1])

    score, scores, learnt = cross_validate((X, y), off_by_one, task="regression", folds=folds)
    assert scores == [-1.0] * 4
    assert score == -1.0
    assert learnt == 30


def test_small_data_compares_by_cv_and_refits_on_train_plus_validation() -> None:
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(scale=0.1, size=300)
    train, validation = (X[:200], y[:200]), (X[200:], y[200:])
    config = TrainConfig(candidates=("linear",), cv_below_rows=1000)

    (candidate,) = train_candidates(
        train, validation, task="regression", n_classes=1, config=config
    )

    assert candidate.selection["method"] == "cross_validation"
    assert candidate.selection["rows"] == 300
    assert len(candidate.selection["fold_scores"]) == 5
    assert candidate.validation_score == pytest.approx(
        np.mean(candidate.selection["fold_scores"]), rel=1e-5
    )
    everything = Ridge(alpha=1e-3).fit(X, y).predict(X[:5])
    only_train = Ridge(alpha=1e-3).fit(*train).predict(X[:5])
    assert candidate.model.predict(X[:5]) == pytest.approx(everything)
    assert candidate.model.predict(X[:5]) != pytest.approx(only_train)
    # At or above the threshold the validation split decides, as before.
    (holdout,) = train_candidates(
        train,
        validation,
        task="regression",
        n_classes=1,
        config=TrainConfig(candidates=("linear",), cv_below_rows=300),
    )
    assert holdout.selection == {"method": "holdout", "rows": 100}


def test_tuning_markdown_lists_every_trial() -> None:
    tuning = {
        "trial_count": 2,
        "used_s": 9.5,
        "budget_s": 10.0,
        "chosen": True,
        "best_validation_score": 0.9,
        "default_validation_score": 0.85,
        "best_params": {"max_depth": 4},
        "best_rounds": 120,
        "trials": [
            {"number": 0, "score": 0.85, "rounds": 80, "seconds": 1.0, "stopped_early": False,
             "params": {"grow_policy": "depthwise", "max_depth": 5, "learning_rate": 0.05}},
            {"number": 1, "score": None, "rounds": 0, "seconds": 0.5, "stopped_early": True,
             "params": {"max_depth": 4, "learning_rate": 0.03}},
        ],
    }  # fmt: skip
    text = "\n".join(tuning_markdown(tuning))
    assert "2 trials in 9.5 s (budget 10 s)" in text
    assert "chosen: **yes**" in text
    assert (
        "| 0 | 0.8500 | 80 | 1.0 | no | grow_policy=depthwise, max_depth=5, learning_rate=0.05 |"
        in text
    )
    assert "| 1 | – | 0 | 0.5 | yes |" in text


START = [_draw(np.random.default_rng(100)), _draw(np.random.default_rng(101))]


def _proposals(seed: int, finish_order: list[int]) -> list[dict]:
    """Configurations the searcher proposes at concurrency 2, trials finishing in the order
    given (by pairs), trial i scoring -i (trial 0 best)."""
    searcher = _search_class()(START, seed, 2, math.inf)
    proposed: list[dict] = []
    for pair in range(0, len(finish_order), 2):
        while (config := searcher.suggest(f"t{len(proposed)}")) is not None:
            proposed.append(config)
        for i in finish_order[pair : pair + 2]:
            searcher.on_trial_complete(f"t{i}", {"score": -float(i)})
    return proposed


def test_proposals_follow_the_seed_not_the_finishing_order() -> None:
    first = _proposals(3, [0, 1, 2, 3, 4, 5])
    swapped = _proposals(3, [1, 0, 3, 2, 5, 4])
    # The fixed start comes first; then proposal i waits for trials 0 .. i - 2 to finish.
    assert [c["trial"] for c in first] == list(range(len(first)))
    assert first[:2] == [{**START[0], "trial": 0}, {**START[1], "trial": 1}]
    assert len(first) >= 6
    assert first == swapped
    for config in first:
        _inside({k: v for k, v in config.items() if k != "trial"})
    assert _proposals(4, [0, 1, 2, 3, 4, 5])[2:] != first[2:]


def test_no_proposal_after_the_deadline() -> None:
    """Past the search's deadline the searcher ends the search (Ray Tune then waits only for the
    running trials, which stop after their current round)."""
    from ray.tune.search import Searcher

    searcher = _search_class()(START, 3, 2, time.time() - 1)
    assert searcher.suggest("t0") == Searcher.FINISHED
