"""Hyperparameter search for the XGBoost candidate under a wall-clock budget (Ray Tune + ASHA).

Search quality on a small machine comes from three choices rather than from many trials:

1. **The default configuration is trial 0**, and the tuned model is only a *candidate*: it is
   chosen only if it beats the untuned XGBoost on the validation score, so tuning never makes
   the bundle worse than the default on validation.
2. **Priors, then local refinement.** After the default come a few diverse configurations that
   are good on most tabular data (deep-and-slow, shallow, heavily regularised); then each trial
   is, with equal odds, a draw from the prior ranges (log-uniform learning rate 0.01–0.3, depth
   3–10, log-uniform regularisation...) or a perturbation of the best trial so far. The sequence
   is drawn from ``numpy.random.default_rng(seed)`` and the results, so the same seed and the
   same completed trials give the same configurations.
3. **ASHA in units of learning progress.** Every trial uses early stopping on the validation
   split; it reports its best validation score every ``ceil(2.5 / learning_rate)`` rounds, so
   ASHA compares trials at equal ``rounds x learning_rate`` — a slow learner is not cut for
   being slow at a fixed round count.

Trials train single-threaded XGBoost, one trial per Ray CPU at a time, on Ray workers, on the
local Ray or the Ray cluster :func:`~kubeloop.training.distributed.ensure_ray` connects to, on
any of its nodes; the matrices go into the object store once. The budget is kept by the search
itself: at its deadline the searcher proposes no more trials and each running trial stops after
its current round (Ray Tune's own, forcible time limit is only a backstop). A trial that
finishes, or stops at the deadline, hands its model to a small actor on the driver's node
(:class:`_ModelInbox`, which keeps the best one), so the best trial is the result whichever node
ran it (no refit); only when the best score is none (every trial cut short by ASHA) is the best
configuration refit as a Ray task with its trial's rounds. Each trial's record names the node it
ran on.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost

from kubeloop.cpus import usable_cpus
from kubeloop.errors import ConfigError, TrainingError
from kubeloop.training.engine import ensure_ray, ray_logs_held

__all__ = [
    "GROW_POLICIES",
    "PARAMS",
    "SEARCH_SPACE",
    "TuneResult",
    "fit_booster",
    "tune_xgboost",
    "xgboost_point",
]

Matrix = tuple[np.ndarray, np.ndarray]
Progress = Callable[[str], None]

# Prior ranges of the numeric parameters: (low, high, scale). "log" draws log-uniformly, "int"
# uniformly over integers. The tree's shape is one more, categorical choice (GROW_POLICIES):
# "depthwise" trees are limited by `max_depth` (then `max_leaves` is 0), "lossguide" trees grow
# best-first up to `max_leaves` leaves at any depth (then `max_depth` is 0).
SEARCH_SPACE: dict[str, tuple[float, float, str]] = {
    "max_depth": (1, 10, "int"),
    "max_leaves": (8, 64, "int-log"),
    "learning_rate": (0.015, 0.3, "log"),
    "min_child_weight": (0.5, 50.0, "log"),
    "subsample": (0.5, 1.0, "linear"),
    "colsample_bytree": (0.3, 1.0, "linear"),
    "reg_alpha": (1e-3, 10.0, "log"),
    "reg_lambda": (0.1, 50.0, "log"),
}
GROW_POLICIES = ("depthwise", "lossguide")
# The parameter that sizes each policy's trees; the other one is 0 (no limit).
_SIZE = {"depthwise": "max_depth", "lossguide": "max_leaves"}
# Every searched parameter: the keys of a point of the search space.
PARAMS = ("grow_policy", *SEARCH_SPACE)
Point = dict[str, Any]


def _point(
    policy: str, size: int, lr: float, mcw: float, sub: float, col: float, alpha: float, lam: float
) -> Point:
    shape = (
        {"max_depth": size, "max_leaves": 0}
        if policy == "depthwise"
        else {"max_depth": 0, "max_leaves": size}
    )
    return {
        "grow_policy": policy,
        **shape,
        "learning_rate": lr,
        "min_child_weight": mcw,
        "subsample": sub,
        "colsample_bytree": col,
        "reg_alpha": alpha,
        "reg_lambda": lam,
    }


# Tried right after the default configuration, in this order: configurations that are good on
# most tabular data, measured on the shared California housing and Telco churn tables (neither
# tuned for one of them alone): best-first trees of 64 leaves at a low learning rate (on
# California the best single configuration measured: test RMSE 43,874 against the default's
# 44,953), shallow strongly regularised trees (the best on Telco), a faster best-first variant,
# shallow regularised trees, a low-rate variant of the default, stumps (an additive model), and
# deeper subsampled trees.
_PRIORS: tuple[Point, ...] = (
    _point("lossguide", 64, 0.02, 2.0, 0.7, 0.55, 1e-3, 6.0),
    _point("depthwise", 2, 0.05, 20.0, 0.8, 0.5, 1e-3, 10.0),
    _point("lossguide", 63, 0.03, 3.0, 0.7, 0.6, 1e-3, 10.0),
    _point("depthwise", 3, 0.03, 10.0, 0.8, 0.5, 1.0, 10.0),
    _point("depthwise", 5, 0.02, 5.0, 0.8, 0.7, 1e-3, 3.0),
    _point("depthwise", 1, 0.1, 5.0, 0.8, 0.8, 1e-3, 1.0),
    _point("depthwise", 8, 0.03, 10.0, 0.7, 0.6, 1e-3, 5.0),
)  # fmt: skip
# The space is bounded for the model's later costs too: serving walks trees x depth, and the
# bundle's global importance (TreeSHAP) costs trees x leaves x depth^2 per row. Measured on
# California: a 1,815-round model of 128-leaf trees (learning rate 0.012) explained its 4,128
# test rows in 256 s, 17x the default model's time.
# ASHA: rungs every `_RUNG_PROGRESS` units of rounds x learning rate, first rung after
# `_GRACE` units, a third of the trials go on at each rung.
_RUNG_PROGRESS = 2.5
_GRACE = 4
_REDUCTION = 3
_MIN_SEARCH_S = 1.0
# After the priors: a fresh draw from the priors with this probability, else a perturbation of
# one of the `_TOP` best trials so far.
_EXPLORE = 0.3
_TOP = 3
# Of the budget, what the search itself may not use: at the search's deadline the searcher
# proposes nothing more and every running trial stops after its current round, saves its model
# and reports; Ray Tune then stops its trial actors and returns, and the best model is loaded.
# Ray Tune waits up to 5 s for its actors to stop (`TuneController._cleanup_trials`) before it
# kills them (measured on the idle 2-core machine: Ray Tune returned 2.1-6.1 s after the
# deadline; with a 3.5 s reserve, a 20 s search in CI used 23.2 s).
# The larger of a fixed reserve and a share of the budget; with the 10 % the budget may be
# overrun, it covers that wait at any budget allowed (MIN_TUNE_BUDGET_S).
_RESERVE_S = 6.0
_RESERVE_SHARE = 0.06
# Ray Tune's own time budget is only a backstop behind the search's deadline (a trial still
# building its matrices when the deadline passes cannot stop itself): it forcibly stops trials.
_BACKSTOP_SHARE = 0.25


@dataclass(frozen=True)
class TuneResult:
    """What a search did and found.

    Attributes:
        budget_s: The wall-clock budget asked for.
        used_s: Wall-clock seconds the search and the refit took.
        trials: One record per trial: ``number``, ``params``, ``score`` (best validation score
            reached, higher is better), ``rounds``, ``seconds``, ``stopped_early`` (by ASHA or the
            budget), ``node`` (the Ray node id it ran on).
        best_params: The best trial's parameters (:data:`PARAMS`).
        best_rounds: Boosting rounds of the best trial (its early-stopping point).
        best_score: The best trial's validation score.
        default_score: Trial 0's (the default configuration's) validation score.
        booster: The best trial's model (or its configuration refit with ``best_rounds``
            rounds when that trial was cut short); ``None`` when no trial reported a score
            within the budget (then ``best_*`` hold the default's parameters and no score).
        best_trial: The best trial's number (``None`` without one).
        refit: Whether ``booster`` is a refit rather than the trial's own model.
    """

    budget_s: float
    used_s: float
    trials: tuple[dict[str, Any], ...]
    best_params: dict[str, Any]
    best_rounds: int
    best_score: float | None
    default_score: float | None
    booster: xgboost.Booster | None = field(repr=False)
    best_trial: int | None = None
    refit: bool = False

    def summary(self) -> dict[str, Any]:
        """The JSON-able record kept in ``metrics.json`` (everything but the booster)."""
        return {
            "budget_s": self.budget_s,
            "used_s": round(self.used_s, 2),
            "trial_count": len(self.trials),
            "stopped_early": sum(1 for t in self.trials if t["stopped_early"]),
            "best_params": dict(self.best_params),
            "best_rounds": self.best_rounds,
            "best_validation_score": self.best_score,
            "default_validation_score": self.default_score,
            "best_trial": self.best_trial,
            "refit": self.refit,
            "trials": [dict(t) for t in self.trials],
        }


def _value(name: str, rng: np.random.Generator) -> float:
    low, high, scale = SEARCH_SPACE[name]
    if scale == "int":
        return int(rng.integers(int(low), int(high) + 1))
    if scale == "int-log":
        return round(math.exp(rng.uniform(math.log(low), math.log(high))))
    if scale == "log":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def _draw(rng: np.random.Generator) -> Point:
    """A configuration drawn from the priors (either tree shape with equal odds)."""
    policy = GROW_POLICIES[int(rng.integers(len(GROW_POLICIES)))]
    config: Point = {"grow_policy": policy}
    for name in SEARCH_SPACE:
        config[name] = _value(name, rng)
    other = _SIZE["lossguide" if policy == "depthwise" else "depthwise"]
    config[other] = 0
    return config


def _perturb(best: Mapping[str, Any], rng: np.random.Generator) -> Point:
    """A neighbour of ``best``: log-normal steps for scales, +-1 depth (+-30% leaves),
    +-0.08 for fractions; the tree shape is kept."""
    config: Point = {"grow_policy": best["grow_policy"]}
    size = _SIZE[str(best["grow_policy"])]
    for name, (low, high, scale) in SEARCH_SPACE.items():
        value = float(best[name])
        if name in _SIZE.values() and name != size:
            config[name] = 0
            continue
        if scale == "int":
            value += int(rng.integers(-1, 2))
        elif scale in ("log", "int-log"):
            value *= math.exp(rng.normal(0.0, 0.3 if scale == "int-log" else 0.4))
        else:
            value += rng.normal(0.0, 0.08)
        value = min(max(value, low), high)
        config[name] = round(value) if scale.startswith("int") else float(value)
    return config


def xgboost_point(point: Mapping[str, Any]) -> dict[str, Any]:
    """The XGBoost parameters of a point of the search space."""
    return {k: point[k] for k in PARAMS}


def _search_class() -> type:
    """The Ray Tune searcher (built lazily: importing Ray Tune is slow)."""
    from ray.tune.search import Searcher

    class PriorSearch(Searcher):
        """Default, then priors, then prior draws and perturbations of the best, seeded.

        Proposal ``i`` (after the fixed start) waits until trials ``0 .. i - concurrency`` have
        finished and looks only at those, so the sequence of configurations does not depend on
        which concurrent trial happens to finish first.
        """

        def __init__(
            self, start: list[Point], seed: int, concurrency: int, deadline: float
        ) -> None:
            super().__init__(metric="score", mode="max")
            self._deadline = deadline
            self._start = list(start)
            self._rng = np.random.default_rng(seed)
            self._lag = concurrency
            self._index: dict[str, int] = {}
            self._configs: list[Point] = []
            self._scores: dict[int, float] = {}

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            if time.time() >= self._deadline:
                return Searcher.FINISHED  # type: ignore[return-value]  # no new trial after the deadline
            i = len(self._configs)
            if i < len(self._start):
                config = self._start[i]
            else:
                seen = range(i - self._lag + 1)
                if any(j not in self._scores for j in seen):
                    return None  # Ray Tune asks again when a trial finishes
                scored = sorted(
                    (j for j in seen if math.isfinite(self._scores[j])),
                    key=lambda j: (-self._scores[j], j),
                )
                if not scored or self._rng.random() < _EXPLORE:
                    config = _draw(self._rng)
                else:
                    parent = scored[int(self._rng.integers(min(_TOP, len(scored))))]
                    config = _perturb(self._configs[parent], self._rng)
            self._index[trial_id] = i
            self._configs.append(config)
            return {**config, "trial": i}

        def on_trial_complete(
            self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
        ) -> None:
            i = self._index.get(trial_id)
            if i is None:
                return
            score = float((result or {}).get("score", math.nan)) if not error else math.nan
            self._scores[i] = score

    return PriorSearch


def _report_every(learning_rate: float) -> int:
    return max(1, math.ceil(_RUNG_PROGRESS / learning_rate))


def fit_booster(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    params: Mapping[str, Any],
    *,
    num_boost_round: int,
    early_stopping_rounds: int | None,
    callbacks: list[xgboost.callback.TrainingCallback] | None = None,
) -> xgboost.Booster:
    """Single-process ``xgboost.train``; with early stopping, cut to the best iteration.

    Args:
        data: ``(X, y, X_valid, y_valid)``; the validation pair serves early stopping.
        params: XGBoost parameters (``nthread`` included).
        num_boost_round: Most rounds.
        early_stopping_rounds: Patience on the validation split; ``None`` trains every round.
        callbacks: More XGBoost callbacks (the trial's reporter).
    """
    X, y, X_valid, y_valid = data
    dtrain = xgboost.QuantileDMatrix(X, label=y, nthread=int(params.get("nthread", 1)))
    evals = [(xgboost.QuantileDMatrix(X_valid, label=y_valid, ref=dtrain), "validation")]
    booster = xgboost.train(
        dict(params),
        dtrain,
        num_boost_round=num_boost_round,
        evals=evals if early_stopping_rounds is not None else [],
        early_stopping_rounds=early_stopping_rounds,
        callbacks=callbacks,
        verbose_eval=False,
    )
    if early_stopping_rounds is not None:
        booster = booster[: booster.best_iteration + 1]
    return booster


def _sign(params: Mapping[str, Any]) -> float:
    """+1 when the last eval metric grows with quality (AUC), else -1 (RMSE, log loss)."""
    metrics = params.get("eval_metric", [])
    last = metrics[-1] if isinstance(metrics, list) and metrics else str(metrics)
    return 1.0 if str(last).endswith("auc") else -1.0


class _ModelInbox:
    """Ray actor (0 CPUs, on the driver's node): the finished trials hand it their models, from
    whichever node ran them; it keeps the one with the best score."""

    def __init__(self) -> None:
        self.best: tuple[float, int, bytes] | None = None

    def offer(self, score: float, number: int, model: bytes) -> None:
        if self.best is None or score > self.best[0]:
            self.best = (score, number, model)

    def take(self) -> tuple[float, int, bytes] | None:
        return self.best


def _trial(config: dict[str, Any], data: Any = None, settings: Any = None) -> None:
    """One Ray Tune trial: train with early stopping, report the best score as it improves."""
    import ray
    from ray import tune

    params = {**settings["base"], **xgboost_point(config)}
    sign = _sign(params)
    every = _report_every(float(config["learning_rate"]))

    class Reporter(xgboost.callback.TrainingCallback):
        """Keeps the best validation score; reports it every ``every`` rounds; stops training
        at the search's deadline (``settings["deadline"]``, wall-clock seconds since the epoch:
        trials run in other processes, on a cluster on other machines)."""

        best, best_rounds, cut = -math.inf, 0, False

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            value = sign * float(next(iter(evals_log["validation"].values()))[-1])
            if value > self.best:
                self.best, self.best_rounds = value, epoch + 1
            if (epoch + 1) % every == 0:
                tune.report(
                    {
                        "score": self.best,
                        "rounds": self.best_rounds,
                        "finished": False,
                        "node": ray.get_runtime_context().get_node_id(),
                    }
                )
            self.cut = time.time() >= settings["deadline"]
            return self.cut

    reporter = Reporter()
    booster = fit_booster(
        data,
        params,
        num_boost_round=settings["num_boost_round"],
        # A slow learner's validation score wanders longer before it improves again: patience
        # is at least one report interval (rounds x learning rate = _RUNG_PROGRESS).
        early_stopping_rounds=max(settings["early_stopping_rounds"], every),
        callbacks=[reporter],
    )
    # The model (cut to its best round) goes to the driver's node, so the best one needs no
    # refit; a trial stopped by ASHA leaves none.
    model = bytes(booster.save_raw(raw_format="ubj"))
    ray.get(settings["inbox"].offer.remote(reporter.best, int(config["trial"]), model))
    tune.report(
        {
            "score": reporter.best,
            "rounds": reporter.best_rounds,
            "finished": not reporter.cut,
            "node": ray.get_runtime_context().get_node_id(),
        }
    )


def tune_xgboost(
    train: Matrix,
    validation: Matrix,
    *,
    base_params: Mapping[str, Any],
    default: Mapping[str, Any],
    budget_s: float,
    seed: int,
    num_boost_round: int,
    early_stopping_rounds: int,
    max_trials: int = 0,
    concurrency: int = 0,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> TuneResult:
    """Search XGBoost parameters for ``budget_s`` seconds of wall clock.

    Args:
        train: ``(X, y)`` the trials train on.
        validation: ``(X, y)`` for early stopping, ASHA and the choice.
        base_params: Fixed XGBoost parameters (objective, eval metric, tree method...); the
            last ``eval_metric`` is the score (AUC: higher is better; others: lower).
        default: The default configuration (:data:`PARAMS`), trial 0.
        budget_s: Wall-clock seconds for starting (or reaching) Ray, the search and collecting
            its result.
        seed: Seeds the sequence of configurations and XGBoost's sampling.
        num_boost_round: Most rounds of any trial (early stopping usually ends sooner).
        early_stopping_rounds: Least patience of every trial on the validation split.
        max_trials: Stop after this many trials (0: as many as the budget allows).
        concurrency: Trials at once (0: one per Ray CPU). The configurations proposed are the
            same at any concurrency; with 1, ASHA's decisions and so the whole search are
            reproducible too.
        ray_address: A Ray cluster; ``None`` honours ``RAY_ADDRESS``, else the trials run on
            the local Ray this process already uses, or one started here (see
            :func:`~kubeloop.training.engine.ensure_ray`).
        progress: Called with one human line per step.

    Returns:
        The trials, the best configuration and its booster.

    Raises:
        ConfigError: ``budget_s`` is not positive or ``default`` misses a searched parameter.
        TrainingError: Ray or Ray Tune failed.
    """
    say = progress or (lambda _line: None)
    if not budget_s > 0:
        raise ConfigError(f"The tuning budget must be positive seconds, not {budget_s}.")
    missing = [name for name in PARAMS if name not in default]
    if missing:
        raise ConfigError(f"The default configuration misses the searched parameters {missing}.")
    # The budget counts from here: starting Ray is part of the search's cost (untuned runs
    # never start it).
    started = time.monotonic()
    local = not (ray_address or os.environ.get("RAY_ADDRESS"))
    ensure_ray(ray_address, num_cpus=usable_cpus() if local else None)
    # Ray Tune's default loggers write CSV/JSON/TensorBoard files for every trial.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    with ray_logs_held():
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import ConcurrencyLimiter

        # One CPU and one XGBoost thread per trial, as many trials at once as Ray has CPUs:
        # measured on the shared 2-core machine, two OpenMP threads of one trial spun on each
        # other (50 rounds of a 12k-row fit took 30 s) while single-threaded trials do not.
        cpus = max(1, int(ray.available_resources().get("CPU", 1)))
        concurrency = max(1, min(concurrency or cpus, cpus))
        settings: dict[str, Any] = {
            "base": {**base_params, "seed": seed, "nthread": 1},
            "num_boost_round": num_boost_round,
            "early_stopping_rounds": early_stopping_rounds,
        }
        data = tuple(
            np.ascontiguousarray(part, dtype=np.float32)
            for part in (train[0], train[1], validation[0], validation[1])
        )
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=10_000,
            grace_period=_GRACE,
            reduction_factor=_REDUCTION,
        )
        storage = tempfile.mkdtemp(prefix="kubeloop-tune-")
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        inbox: Any = ray.remote(num_cpus=0)(_ModelInbox)
        inbox = inbox.options(scheduling_strategy=here).remote()
        settings["inbox"] = inbox
        reserve = max(_RESERVE_S, _RESERVE_SHARE * budget_s)
        search_s = budget_s - reserve - (time.monotonic() - started)
        if search_s < _MIN_SEARCH_S:
            shutil.rmtree(storage, ignore_errors=True)
            raise ConfigError(
                f"A tuning budget of {budget_s:g} s leaves no time to search once Ray is up "
                f"({time.monotonic() - started:.1f} s); give a larger --tune-budget."
            )
        settings["deadline"] = time.time() + search_s
        start = [{name: default[name] for name in PARAMS}, *(dict(p) for p in _PRIORS)]
        searcher = ConcurrencyLimiter(
            _search_class()(start, seed, concurrency, settings["deadline"]),
            max_concurrent=concurrency,
        )
        say(f"tuning XGBoost for {budget_s:g} s (search {search_s:.0f} s, {concurrency} at a time)")
        tuner = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(_trial, data=data, settings=settings), {"cpu": 1}
            ),
            tune_config=tune.TuneConfig(
                metric="score",
                mode="max",
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=max_trials if max_trials > 0 else -1,
                time_budget_s=search_s + _BACKSTOP_SHARE * reserve,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"kubeloop-tune-{seed}",
                storage_path=storage,
                verbose=0,
                log_to_file=False,
            ),
        )
        printed = io.StringIO()  # Ray Tune prints its experiment's table to standard output
        try:
            with contextlib.redirect_stdout(printed):
                grid = tuner.fit()
            late = time.time() - settings["deadline"]
            if late > 0:
                say(f"tuning: Ray Tune stopped its trials {late:.1f} s after the search's deadline")
            trials = _trial_records(grid)
            kept = ray.get(inbox.take.remote())
        except Exception as exc:  # TuneError, RayError...
            sys.stderr.write(printed.getvalue())
            raise TrainingError(f"The XGBoost search on Ray Tune failed: {exc}") from None
        finally:
            shutil.rmtree(storage, ignore_errors=True)
            ray.kill(inbox)
        booster, best_saved = None, None
        if kept is not None:
            booster = xgboost.Booster()
            booster.load_model(bytearray(kept[2]))
            best_saved = next((t for t in trials if t["number"] == kept[1]), None)
        finished = [t for t in trials if t["score"] is not None]
        default_score = trials[0]["score"] if trials else None
        if not finished:
            say(f"tuning: no trial reported a score within {budget_s:g} s; keeping the default")
            return TuneResult(
                budget_s=float(budget_s),
                used_s=time.monotonic() - started,
                trials=tuple(trials),
                best_params=dict(start[0]),
                best_rounds=0,
                best_score=None,
                default_score=None,
                booster=None,
            )
        # The best trial that finished and handed in its model; a refit (as a Ray task) only when
        # none did (every trial was cut short by ASHA).
        best = best_saved or max(finished, key=lambda t: t["score"])
        where = f" on node {best['node'][:12]}" if best.get("node") else ""
        say(
            f"tuning: {len(trials)} trials, best validation score {best['score']:.5f} "
            f"(trial {best['number']}{where}, "
            + ("its own model)" if booster is not None else "refit)")
        )
        refit = booster is None
        if booster is None:
            fit: Any = ray.remote(num_cpus=1)(fit_booster)  # type: ignore[arg-type]
            params = {**settings["base"], **xgboost_point(best["params"])}
            booster = ray.get(
                fit.remote(
                    ray.put(data),
                    params,
                    num_boost_round=int(best["rounds"]),
                    early_stopping_rounds=None,
                )
            )
        return TuneResult(
            budget_s=float(budget_s),
            used_s=time.monotonic() - started,
            trials=tuple(trials),
            best_params=dict(best["params"]),
            best_rounds=int(best["rounds"]),
            best_score=float(best["score"]),
            default_score=default_score,
            booster=booster,
            best_trial=int(best["number"]),
            refit=refit,
        )


def _trial_records(grid: Any) -> list[dict[str, Any]]:
    """One record per trial, in the order the trials started."""
    records = []
    for result in grid:
        metrics = result.metrics or {}
        config = result.config or {}
        if "trial" not in config:  # created but never started before the budget ran out
            continue
        score = metrics.get("score")
        records.append(
            {
                "number": int(config.get("trial", -1)),
                "params": {k: config[k] for k in PARAMS if k in config},
                "score": float(score) if score is not None else None,
                "rounds": int(metrics.get("rounds", 0)),
                "seconds": round(float(metrics.get("time_total_s", 0.0)), 2),
                "stopped_early": not metrics.get("finished", False),
                "node": str(metrics.get("node", "")),
            }
        )
    return sorted(records, key=lambda r: int(r["number"]))
