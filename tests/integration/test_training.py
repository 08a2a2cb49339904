"""kubeloop.training against a real Ray (2 Train workers, and Ray Train's local mode) on small
generated data."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from kubeloop.bundle.models import LinearModel, XGBoostModel
from kubeloop.errors import ConfigError, DataValidationError, TrainingError
from kubeloop.training import (
    CANDIDATE_NAMES,
    TrainConfig,
    ensure_ray,
    resolve_engine,
    shared_local_ray,
    train_candidates,
    train_xgboost_distributed,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROWS, FEATURES = 2400, 6
# Quick settings: a high learning rate so early stopping happens well before the round cap.
FAST = TrainConfig(
    workers=2,
    num_boost_round=300,
    early_stopping_rounds=10,
    learning_rate=0.3,
    min_child_weight=1.0,
    forest_trees=20,
)


def _data(task: str, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((ROWS, FEATURES))
    signal = 2.0 * X[:, 0] + X[:, 1] * X[:, 2] - np.abs(X[:, 3])
    noisy = signal + 0.5 * rng.standard_normal(ROWS)
    if task == "regression":
        return X, 10.0 * noisy
    if n_classes == 2:
        return X, (noisy > 0).astype(np.int64)
    return X, np.digitize(noisy, np.quantile(noisy, [1 / 3, 2 / 3])).astype(np.int64)


def _split(
    X: np.ndarray, y: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    cut = int(0.75 * len(y))
    return (X[:cut], y[:cut]), (X[cut:], y[cut:])


# task, n_classes, a score every candidate must beat on this easy data
TASKS = [("classification", 2, 0.85), ("classification", 3, -0.75), ("regression", 1, -12.0)]


@pytest.mark.parametrize(("task", "n_classes", "floor"), TASKS)
def test_candidates_are_all_trained_and_sensibly_scored(
    ray_session: None, task: str, n_classes: int, floor: float
) -> None:
    train, validation = _split(*_data(task, n_classes))
    lines: list[str] = []
    candidates = train_candidates(
        train,
        validation,
        task=task,
        n_classes=n_classes,
        config=FAST,  # type: ignore[arg-type]
        progress=lines.append,
    )
    assert [c.name for c in candidates] == list(CANDIDATE_NAMES)
    by_name = {c.name: c for c in candidates}
    for candidate in candidates:
        assert math.isfinite(candidate.validation_score)
        assert candidate.validation_score > floor, candidate.name
        assert candidate.model.task == task and candidate.model.n_classes == n_classes
        shape = (len(validation[1]), n_classes) if n_classes > 2 else (len(validation[1]),)
        assert candidate.model.predict(validation[0]).shape == shape
    assert isinstance(by_name["xgboost"].model, XGBoostModel)
    assert by_name["random_forest"].model.kind == "random_forest"
    assert isinstance(by_name["linear"].model, LinearModel)
    # The boosted model captures the interaction the linear model cannot.
    assert by_name["xgboost"].validation_score > by_name["linear"].validation_score
    # Early stopping on the validation split ended training well before the cap.
    assert 0 < by_name["xgboost"].params["rounds"] < FAST.num_boost_round
    assert by_name["xgboost"].params["workers"] == 2
    assert by_name["xgboost"].params["engine"] == "ray-train-workers"
    assert any("xgboost: validation score" in line for line in lines)
    assert any(line.startswith("engine: 2 Ray Train worker(s) x 1 CPU") for line in lines)


def test_binary_parameters_balance_the_classes(ray_session: None) -> None:
    X, y = _data("classification", 2)
    y = (X[:, 0] > 1.0).astype(np.int64)  # ~16 % positives
    train, validation = _split(X, y)
    (candidate,) = train_candidates(
        train,
        validation,
        task="classification",
        n_classes=2,
        config=TrainConfig(candidates=("linear",)),
    )
    assert candidate.validation_score > 0.95
    from kubeloop.training import xgboost_params

    params = xgboost_params("classification", 2, train[1], FAST)
    negatives, positives = np.bincount(train[1])
    assert params["scale_pos_weight"] == pytest.approx(negatives / positives)
    assert params["eval_metric"] == ["auc"] and params["objective"] == "binary:logistic"


def test_distributed_without_early_stopping_trains_every_round(ray_session: None) -> None:
    train, validation = _split(*_data("regression", 1))
    booster = train_xgboost_distributed(
        train,
        validation,
        params={"objective": "reg:squarederror", "max_depth": 3},
        num_boost_round=25,
        early_stopping_rounds=None,
        workers=2,
    )
    assert booster.num_boosted_rounds() == 25
    rmse = float(np.sqrt(np.mean((booster.inplace_predict(validation[0]) - validation[1]) ** 2)))
    assert rmse < 0.6 * float(np.std(validation[1]))


def test_failure_inside_a_worker_surfaces_as_training_error(ray_session: None) -> None:
    train, validation = _split(*_data("classification", 2))
    with pytest.raises(TrainingError, match=r"Ray workers failed: .*not_an_objective") as info:
        train_xgboost_distributed(
            train,
            validation,
            params={"objective": "not_an_objective"},
            num_boost_round=5,
            early_stopping_rounds=None,
            workers=2,
        )
    assert "[bt]" not in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, TrainingError) and str(again) == str(info.value)


def test_ensure_ray_keeps_the_running_instance(ray_session: None) -> None:
    import ray

    node = ray.get_runtime_context().get_node_id()
    ensure_ray(num_cpus=1)
    ensure_ray("127.0.0.1:1")  # would fail if it tried to connect anywhere
    assert ray.is_initialized() and ray.get_runtime_context().get_node_id() == node


def test_bad_requests_fail_before_ray_is_used() -> None:
    train, validation = _split(*_data("classification", 2))
    with pytest.raises(ConfigError, match="Unknown or no candidates \\['svm'\\]"):
        train_candidates(
            train,
            validation,
            task="classification",
            n_classes=2,
            config=TrainConfig(candidates=("svm",)),
        )
    with pytest.raises(DataValidationError, match=r"codes 0\.\.1 covering at least two classes"):
        train_candidates(
            (train[0], np.zeros(len(train[1]), dtype=np.int64)),
            validation,
            task="classification",
            n_classes=2,
        )
    with pytest.raises(ConfigError, match="cannot be split over 4 workers"):
        train_xgboost_distributed(
            (train[0][:3], train[1][:3]),
            validation,
            params={},
            num_boost_round=1,
            early_stopping_rounds=None,
            workers=4,
        )


# A fresh Python: trains with workers="auto" and no Ray cluster, then says whether Ray started.
_AUTO = """
import numpy as np, ray
from kubeloop.training import train_xgboost_distributed
rng = np.random.default_rng(0)
X = rng.standard_normal((600, 4)); y = (X[:, 0] > 0).astype(np.int64)
booster = train_xgboost_distributed((X[:400], y[:400]), (X[400:], y[400:]),
    params={"objective": "binary:logistic", "eval_metric": ["auc"]}, num_boost_round=50,
    early_stopping_rounds=5, progress=print)
print("rounds", booster.num_boosted_rounds(), "ray initialized", ray.is_initialized())
"""


def test_auto_without_a_cluster_trains_in_process_without_starting_ray() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", _AUTO], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "engine: in this process (Ray Train local mode" in done.stdout
    assert "ray initialized False" in done.stdout  # no ray.init, no actors
    rounds = int(done.stdout.split("rounds ")[1].split()[0])
    assert 0 < rounds <= 50
    assert "Running in local mode" not in done.stderr  # Ray's own line is held back


def test_auto_on_a_ray_cluster_sizes_workers_to_it(
    ray_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    engine = resolve_engine("auto")
    # The test Ray is one node with 2 CPUs: one worker with both.
    assert (engine.workers, engine.cpus_per_worker) == (1, 2)
    assert "workers=auto on a Ray cluster" in engine.describe()
    lines: list[str] = []
    train, validation = _split(*_data("classification", 2))
    booster = train_xgboost_distributed(
        train,
        validation,
        params={"objective": "binary:logistic", "max_depth": 3},
        num_boost_round=10,
        early_stopping_rounds=None,
        progress=lines.append,
    )
    assert booster.num_boosted_rounds() == 10
    assert lines[0] == engine.describe()
    assert lines[1].startswith("the shard source on this node holds the 0.1 MB shuffled")
    assert [line.split(" on node ")[0] for line in lines[2:]] == ["worker 0/1"]  # where it ran


def test_consecutive_runs_share_one_local_ray(
    ray_session: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child run (a pipeline step) attaches to the Ray this process shares."""
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    node = ray.get_runtime_context().get_node_id()
    child = _AUTO.replace("progress=print)", "progress=print, workers=1)")
    with shared_local_ray(1) as address:
        assert address == os.environ["RAY_ADDRESS"] == ray.get_runtime_context().gcs_address
        done = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"the local Ray shared by consecutive runs ({address})" in done.stdout
    assert "ray initialized True" in done.stdout
    assert "Started a local Ray instance" not in done.stdout + done.stderr
    assert "RAY_ADDRESS" not in os.environ and ray.get_runtime_context().get_node_id() == node
