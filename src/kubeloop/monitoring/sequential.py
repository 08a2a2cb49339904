"""The always-valid sequential decision of a staged rollout: promote, roll back, or keep watching.

A candidate model serves beside the champion (canary: it answers a share of the requests;
shadow: it scores the same rows off the response path). Each *signal* -- ``error`` (0/1 per
request), ``latency_log`` (ln seconds per request), ``score`` (the prediction per row),
``shadow_score_diff`` (candidate − champion per shadow pair), ``label_loss`` (per-row loss on
delayed labels) -- arrives as sufficient statistics, :class:`Moments` ``(n, total, total_sq)``:
one per arm (two independent streams of unequal size, canary) or one of paired differences
(shadow). The monitor may look after every scrape; the test stays valid however often it looks.

**The boundary.** With ``δ̂`` the difference of means (candidate − champion), ``s²`` its variance
(``var_A/n_A + var_B/n_B``, or ``var_D/n`` for paired differences) and ``τ²`` the variance of a
normal mixture over the true difference (:attr:`SignalRule.mixture_sd` is ``τ``), the
normal-mixture likelihood ratio (Robbins 1970; the mSPRT of Johari, Koomen, Pekelis & Walsh,
"Peeking at A/B tests", KDD 2017) is::

    Λ = sqrt(s² / (s² + τ²)) · exp(τ² (δ̂ − δ)² / (2 s² (s² + τ²)))

and ``Λ < 1/α`` at every look, i.e. ``|δ̂ − δ| < r`` with::

    r = sqrt(2 s² (s² + τ²) / τ² · (ln(1/α) + ½ ln((s² + τ²) / s²)))

is a confidence sequence: ``P(∃ n: |δ̂_n − δ| ≥ r_n) ≤ α`` (Ville's inequality; Howard,
Ramdas, McAuliffe & Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
Ann. Statist. 2021). With the variance estimated from the data (plug-in) it is an *asymptotic*
confidence sequence (Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit
theory and asymptotic confidence sequences", arXiv:2103.06476, 2023): valid as counts grow,
so no decision is made below :attr:`RolloutPolicy.min_per_arm` rows per arm and each arm's
variance is floored at :attr:`SignalRule.floor_sd` ² (a rare 0/1 event seen zero times has no
sample variance).

**One-sided bounds.** A one-sided rule needs only one side. Splitting the symmetric mixture
``Λ = (Λ⁺ + Λ⁻)/2`` into its half-normal parts (each a test martingale) gives, where ``δ̂ > δ``,
``Λ⁻ ≤ 1`` and hence ``Λ ≥ c ⇒ Λ⁺ ≥ 2c − 1``: the symmetric radius at level ``2α/(1+α)`` is a
valid one-sided bound at level ``α`` (:func:`one_sided_level`). Each bound of a one-sided rule
is computed so.

**The rules** (:class:`SignalRule`, harm = candidate − champion, higher is worse):

- one-sided: *harm* (roll back) when the lower bound ``> 0``; *clear* when the upper bound
  ``< margin``; harm wins when both hold. A candidate worse by less than about half the margin
  is therefore usually cleared before it is found harmful, one worse by more is rolled back.
- two-sided (``score``, ``shadow_score_diff``: a shift either way is suspect): *harm* when the
  interval lies wholly beyond ``±margin`` (the lower bound of ``|δ|`` exceeds the margin);
  *clear* when it lies wholly inside ``(−margin, margin)``.

**The error rate.** ``α`` is split evenly over the signals judged (Bonferroni): the keys of
``signals`` that have a rule. Pass the same keys at every look (a signal with no data yet as an
empty :class:`Moments`) and the chance that a candidate equal to the champion is ever rolled back
during the whole rollout, however many looks, is at most ``α`` (asymptotically, per the above).

Everything here is pure numpy/math: no I/O, no clock (``elapsed_s`` is passed in).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kubeloop.errors import DataValidationError, check_range, parameter_error

__all__ = [
    "ACTIONS",
    "DEFAULT_RULES",
    "STATES",
    "Action",
    "Moments",
    "RolloutPolicy",
    "RolloutVerdict",
    "SignalResult",
    "SignalRule",
    "SignalValue",
    "State",
    "confidence_interval",
    "fixed_horizon_n",
    "judge",
    "mixture_radius",
    "one_sided_level",
    "paired_interval",
]

Action = Literal["promote", "rollback", "continue"]
State = Literal["harm", "clear", "open"]
ACTIONS: tuple[Action, ...] = ("promote", "rollback", "continue")
STATES: tuple[State, ...] = ("harm", "clear", "open")


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of one stream: count, sum and sum of squares.

    The server's ``kubeloop_rollout_moment_total{moment="n"|"sum"|"sumsq"}`` counters are one
    :class:`Moments` per version and signal; the increase between two snapshots
    (:meth:`minus`) is the stream since the candidate started.

    Attributes:
        n: Number of values (a float: Prometheus counters are floats).
        total: Sum of the values.
        total_sq: Sum of the squared values.
    """

    n: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0

    def __post_init__(self) -> None:
        check_range("n", self.n, low=0.0, high=math.inf, closed="left", owner="Moments")
        inf, owner = math.inf, "Moments"
        check_range("total", self.total, low=-inf, high=inf, closed="neither", owner=owner)
        check_range("total_sq", self.total_sq, low=0.0, high=inf, closed="left", owner=owner)

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> Moments:
        """The moments of ``values`` (any shape; flattened).

        Raises:
            DataValidationError: A value is NaN or infinite.
        """
        array = np.asarray(values, dtype=float).ravel()
        if not np.all(np.isfinite(array)):
            raise DataValidationError(
                "Moments.from_values got NaN or infinite values; drop or impute them first."
            )
        return cls(float(array.size), float(array.sum()), float(np.square(array).sum()))

    @property
    def mean(self) -> float:
        """The mean (0.0 for an empty stream)."""
        return self.total / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance: 0.0 below two values, never negative (rounding)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1.0))

    def __add__(self, other: Moments) -> Moments:
        """The moments of both streams together."""
        if not isinstance(other, Moments):
            return NotImplemented
        return Moments(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    def minus(self, earlier: Moments) -> Moments:
        """The increase since ``earlier`` (two snapshots of the same cumulative counters).

        A snapshot with fewer values than ``earlier`` means the counters restarted at 0 (the
        server process restarted); as Prometheus's ``increase()`` counts a reset, the increase
        is then this snapshot itself.
        """
        if self.n < earlier.n or self.total_sq < earlier.total_sq:
            return self
        return Moments(
            self.n - earlier.n,
            self.total - earlier.total,
            max(0.0, self.total_sq - earlier.total_sq),
        )

    def to_dict(self) -> dict[str, float]:
        """JSON-ready content."""
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq}


SignalValue = tuple[Moments, Moments] | Moments
"""What :func:`judge` takes per signal: ``(champion, candidate)`` or paired differences."""


@dataclass(frozen=True)
class SignalRule:
    """How one signal is judged (harm = candidate − champion; higher is worse).

    Attributes:
        name: The signal (``error``, ``latency_log``, ``score``, ...).
        margin: The difference that still counts as harmless: *clear* needs the upper bound
            below it (two-sided: the whole interval inside ``±margin``).
        mixture_sd: ``τ``, the standard deviation of the normal mixture over the true
            difference, in the signal's units. The test detects a difference of about ``τ``
            fastest; a ``τ`` far from the differences that matter costs samples, never validity.
        two_sided: A shift either way is suspect (harm: the interval wholly beyond ``±margin``).
        floor_sd: Each arm's standard deviation is taken as at least this (guards a variance
            estimated as 0, e.g. no error seen yet).
        tolerance: One-sided rules: *harm* needs the lower bound above this (default 0: any
            proven degradation), below ``margin``. A signal that differs a little by nature
            (a retrained model a few percent slower) is not rolled back for it.
    """

    name: str
    margin: float
    mixture_sd: float
    two_sided: bool = False
    floor_sd: float = 0.0
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        owner = "SignalRule"
        if not isinstance(self.name, str) or not self.name.strip():
            raise parameter_error("name", self.name, owner=owner, expected="a non-empty str")
        check_range("margin", self.margin, low=0.0, high=math.inf, closed="left", owner=owner)
        tau = self.mixture_sd
        check_range("mixture_sd", tau, low=0.0, high=math.inf, closed="neither", owner=owner)
        check_range("floor_sd", self.floor_sd, low=0.0, high=math.inf, closed="left", owner=owner)
        if not isinstance(self.two_sided, bool):
            raise parameter_error("two_sided", self.two_sided, owner=owner, expected="a bool")
        check_range(
            "tolerance", self.tolerance, low=0.0, high=self.margin, closed="both", owner=owner
        )


DEFAULT_RULES: tuple[SignalRule, ...] = (
    # 0/1 per request; 1 point more errors is tolerated, +2 points is what τ is sized for.
    SignalRule("error", margin=0.01, mixture_sd=0.02, floor_sd=0.05),
    # ln seconds per request; 10% slower is tolerated (ln 1.1); τ sized for about ×1.35.
    # A retrained model may be a few percent slower (more trees): harm needs more than 5 %.
    SignalRule(
        "latency_log",
        margin=math.log(1.1),
        mixture_sd=0.3,
        floor_sd=0.05,
        tolerance=math.log(1.05),
    ),
    # the prediction per row (probability of the positive class / value): a mean shift of 0.1
    # either way on the same traffic means the candidate behaves differently online.
    SignalRule("score", margin=0.1, mixture_sd=0.1, two_sided=True, floor_sd=0.01),
    # shadow pairs: candidate − champion score on the same row.
    SignalRule("shadow_score_diff", margin=0.1, mixture_sd=0.1, two_sided=True, floor_sd=0.01),
    # per-row log loss (nats) on rows whose label arrived; for regression the squared error of
    # the residual divided by the target's reference standard deviation (so 0.01 = 1% of the
    # target variance). An AUC drop of 0.05 (0.80 -> 0.75, calibrated, 30% positives) raises the
    # log loss by about 0.042 nats (bench/rollout.py); τ is sized for it.
    SignalRule("label_loss", margin=0.01, mixture_sd=0.04, floor_sd=0.05),
    # per live row: its log-likelihood under the champion's reference profile minus under the
    # candidate's (nats, summed over the features' bins): the candidate was trained on data less
    # like today's traffic. 0.1 nats a row is tolerated.
    SignalRule("drift_fit", margin=0.1, mixture_sd=0.2, floor_sd=0.05),
)


@dataclass(frozen=True)
class RolloutPolicy:
    """When a candidate is promoted or rolled back.

    Attributes:
        alpha: The rollout's false-rollback rate (split over the signals judged).
        min_requests: Candidate rows needed before an all-clear promotes.
        max_duration_s: After this many seconds without harm the candidate is promoted
            (rolled back instead when fewer than ``min_requests`` candidate rows were seen).
        max_requests: The same limit in candidate rows (``None``: none).
        min_per_arm: Rows each arm (or the paired stream) needs before a signal is judged.
        rules: One :class:`SignalRule` per signal name.
    """

    alpha: float = 0.05
    min_requests: int = 200
    max_duration_s: float = 3600.0
    max_requests: int | None = None
    min_per_arm: int = 20
    rules: tuple[SignalRule, ...] = DEFAULT_RULES
    _by_name: dict[str, SignalRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = "RolloutPolicy"
        check_range("alpha", self.alpha, low=0.0, high=1.0, closed="neither", owner=owner)
        check_range("min_requests", self.min_requests, kind=int, low=0, owner=owner)
        check_range("max_duration_s", self.max_duration_s, low=0.0, closed="right", owner=owner)
        if self.max_requests is not None:
            check_range("max_requests", self.max_requests, kind=int, low=1, owner=owner)
        check_range("min_per_arm", self.min_per_arm, kind=int, low=2, owner=owner)
        rules = tuple(self.rules) if isinstance(self.rules, (tuple, list)) else None
        if not rules or not all(isinstance(rule, SignalRule) for rule in rules):
            raise parameter_error(
                "rules", self.rules, owner=owner, expected="a non-empty tuple of SignalRule"
            )
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise parameter_error(
                "rules", names, owner=owner, expected="rules with distinct signal names"
            )
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "_by_name", {rule.name: rule for rule in rules})

    def rule(self, name: str) -> SignalRule | None:
        """The rule of signal ``name`` (``None``: the signal is not judged)."""
        return self._by_name.get(name)


@dataclass(frozen=True)
class SignalResult:
    """One signal's estimate, always-valid bounds and state at this look.

    Attributes:
        name: The signal.
        estimate: Mean difference candidate − champion (NaN without data).
        low: Lower confidence bound of the difference (NaN without data).
        high: Upper confidence bound (NaN without data).
        state: ``harm``, ``clear`` or ``open``.
        n_champion: Champion rows (paired: the pairs).
        n_candidate: Candidate rows (paired: the pairs).
        paired: Whether the signal is paired differences (shadow).
        alpha: This signal's share of the rollout's α.
        margin: The rule's margin.
        two_sided: Whether the rule is two-sided.
    """

    name: str
    estimate: float
    low: float
    high: float
    state: State
    n_champion: float
    n_candidate: float
    paired: bool
    alpha: float
    margin: float
    two_sided: bool

    def line(self) -> str:
        """One human line: the signal, the estimate, its bounds and the state."""
        if math.isnan(self.estimate):
            return f"{self.name}: no data yet -> {self.state}"
        band = (
            f"|diff| vs margin {self.margin:.4g}" if self.two_sided else f"margin {self.margin:.4g}"
        )
        counts = (
            f"{self.n_candidate:.0f} pairs"
            if self.paired
            else f"n {self.n_candidate:.0f} candidate / {self.n_champion:.0f} champion"
        )
        return (
            f"{self.name}: candidate − champion {self.estimate:+.4g} "
            f"[{self.low:+.4g}, {self.high:+.4g}] ({band}, α {self.alpha:.3g}, {counts}) "
            f"-> {self.state}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (undefined numbers as ``None``)."""

        def number(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "name": self.name,
            "estimate": number(self.estimate),
            "low": number(self.low),
            "high": number(self.high),
            "state": self.state,
            "n_champion": self.n_champion,
            "n_candidate": self.n_candidate,
            "paired": self.paired,
            "alpha": self.alpha,
            "margin": self.margin,
            "two_sided": self.two_sided,
        }


@dataclass(frozen=True)
class RolloutVerdict:
    """The outcome of one look at a rollout.

    Attributes:
        action: ``promote``, ``rollback`` or ``continue``.
        reasons: Human lines: why, naming each deciding signal with its estimate and bounds.
        signals: Every judged signal's result, in the order given.
        requests: Candidate rows seen (the largest candidate count over the signals).
        elapsed_s: Seconds since the candidate started.
        alpha: The rollout's α (each signal was judged at ``alpha / len(signals)``).
        ignored: Signals given without a rule (not judged).
    """

    action: Action
    reasons: tuple[str, ...]
    signals: tuple[SignalResult, ...]
    requests: int
    elapsed_s: float
    alpha: float
    ignored: tuple[str, ...] = ()

    @property
    def harmful(self) -> tuple[str, ...]:
        """The signals in state ``harm``."""
        return tuple(s.name for s in self.signals if s.state == "harm")

    def signal(self, name: str) -> SignalResult | None:
        """The result of signal ``name`` (``None`` when it was not judged)."""
        return next((s for s in self.signals if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (for the log, the monitor state and MLflow)."""
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "signals": [s.to_dict() for s in self.signals],
            "requests": self.requests,
            "elapsed_s": self.elapsed_s,
            "alpha": self.alpha,
            "ignored": list(self.ignored),
        }


def one_sided_level(alpha: float) -> float:
    """The symmetric-mixture level whose radius bounds one side at level ``alpha``: 2α/(1+α)."""
    return 2.0 * alpha / (1.0 + alpha)


def _radius(s2: float, log_inv_alpha: float, t2: float) -> float:
    """:func:`mixture_radius` for one float (the judge's hot path)."""
    if s2 <= 0.0:
        return 0.0
    return math.sqrt(2.0 * s2 * (s2 + t2) / t2 * (log_inv_alpha + 0.5 * math.log1p(t2 / s2)))


def mixture_radius(
    variance: npt.ArrayLike, *, alpha: float, mixture_sd: float
) -> npt.NDArray[np.float64]:
    """The normal-mixture confidence-sequence radius (vectorised over ``variance``).

    ``r = sqrt(2 s² (s² + τ²) / τ² · (ln(1/α) + ½ ln((s² + τ²) / s²)))`` with ``s²`` =
    ``variance`` (the variance of the estimate, e.g. ``var_A/n_A + var_B/n_B``) and ``τ`` =
    ``mixture_sd``; ``P(∃ look: |δ̂ − δ| ≥ r) ≤ α``. A variance of 0 gives a radius of 0.

    Args:
        variance: ``s²`` per look (any shape).
        alpha: The level of the two-sided sequence (see :func:`one_sided_level`).
        mixture_sd: ``τ``, in the units of the difference.

    Returns:
        The radius per look, same shape as ``variance``.
    """
    check_range("alpha", alpha, low=0.0, high=1.0, closed="neither", owner="mixture_radius")
    check_range("mixture_sd", mixture_sd, low=0.0, closed="neither", owner="mixture_radius")
    s2 = np.asarray(variance, dtype=float)
    t2 = float(mixture_sd) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 2.0 * s2 * (s2 + t2) / t2 * (math.log(1.0 / alpha) + 0.5 * np.log1p(t2 / s2))
    return np.where(s2 > 0.0, np.sqrt(np.where(s2 > 0.0, r2, 0.0)), 0.0)


def _interval(
    estimate: float, s2: float, *, alpha: float, mixture_sd: float, one_sided: bool
) -> tuple[float, float]:
    level = one_sided_level(alpha) if one_sided else alpha
    r = _radius(s2, math.log(1.0 / level), mixture_sd * mixture_sd)
    return estimate - r, estimate + r


def _check_level(alpha: float, mixture_sd: float, floor_sd: float, owner: str) -> None:
    check_range("alpha", alpha, low=0.0, high=1.0, closed="neither", owner=owner)
    check_range("mixture_sd", mixture_sd, low=0.0, closed="neither", owner=owner)
    check_range("floor_sd", floor_sd, low=0.0, owner=owner)


def confidence_interval(
    champion: Moments,
    candidate: Moments,
    *,
    alpha: float,
    mixture_sd: float,
    floor_sd: float = 0.0,
    one_sided: bool = False,
) -> tuple[float, float]:
    """Always-valid bounds of ``mean(candidate) − mean(champion)``, two independent streams.

    Args:
        champion: The champion's moments.
        candidate: The candidate's moments.
        alpha: Two-sided: ``P(the sequence ever misses the difference) ≤ alpha``. One-sided:
            each bound on its own misses with probability ``≤ alpha``.
        mixture_sd: ``τ`` of the normal mixture.
        floor_sd: Each arm's standard deviation is at least this.
        one_sided: Each bound at level ``alpha`` (the radius at :func:`one_sided_level`).

    Returns:
        ``(low, high)``; ``(-inf, inf)`` while an arm is empty.
    """
    _check_level(alpha, mixture_sd, floor_sd, "confidence_interval")
    if champion.n <= 0 or candidate.n <= 0:
        return -math.inf, math.inf
    floor2 = floor_sd * floor_sd
    s2 = max(champion.variance, floor2) / champion.n + max(candidate.variance, floor2) / candidate.n
    estimate = candidate.mean - champion.mean
    return _interval(estimate, s2, alpha=alpha, mixture_sd=mixture_sd, one_sided=one_sided)


def paired_interval(
    differences: Moments,
    *,
    alpha: float,
    mixture_sd: float,
    floor_sd: float = 0.0,
    one_sided: bool = False,
) -> tuple[float, float]:
    """Always-valid bounds of the mean of paired differences (candidate − champion per row).

    Args and returns as :func:`confidence_interval`, with ``s² = max(var, floor_sd²) / n``.
    """
    _check_level(alpha, mixture_sd, floor_sd, "paired_interval")
    if differences.n <= 0:
        return -math.inf, math.inf
    s2 = max(differences.variance, floor_sd * floor_sd) / differences.n
    return _interval(differences.mean, s2, alpha=alpha, mixture_sd=mixture_sd, one_sided=one_sided)


def _assess(rule: SignalRule, value: SignalValue, *, alpha: float, min_n: int) -> SignalResult:
    """One signal's estimate, bounds and state at signal level ``alpha``."""
    floor2 = rule.floor_sd * rule.floor_sd
    if isinstance(value, Moments):
        paired, n_a = True, value.n
        n_b = value.n
        estimate = value.mean if value.n > 0 else math.nan
        s2 = max(value.variance, floor2) / value.n if value.n > 0 else math.nan
    elif (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(part, Moments) for part in value)
    ):
        champion, candidate = value
        paired, n_a, n_b = False, champion.n, candidate.n
        if n_a > 0 and n_b > 0:
            estimate = candidate.mean - champion.mean
            s2 = max(champion.variance, floor2) / n_a + max(candidate.variance, floor2) / n_b
        else:
            estimate = s2 = math.nan
    else:
        raise DataValidationError(
            f"Signal {rule.name!r} must be a (champion, candidate) pair of Moments or one "
            f"Moments of paired differences; got {type(value).__name__}."
        )
    if math.isnan(estimate):
        low = high = math.nan
    else:
        low, high = _interval(
            estimate, s2, alpha=alpha, mixture_sd=rule.mixture_sd, one_sided=not rule.two_sided
        )
    state: State = "open"
    if min(n_a, n_b) >= min_n:
        if rule.two_sided:
            if low > rule.margin or high < -rule.margin:
                state = "harm"
            elif -rule.margin < low and high < rule.margin:
                state = "clear"
        elif low > rule.tolerance:
            state = "harm"
        elif high < rule.margin:
            state = "clear"
    return SignalResult(
        name=rule.name,
        estimate=estimate,
        low=low,
        high=high,
        state=state,
        n_champion=float(n_a),
        n_candidate=float(n_b),
        paired=paired,
        alpha=alpha,
        margin=rule.margin,
        two_sided=rule.two_sided,
    )


def judge(
    signals: Mapping[str, SignalValue], *, policy: RolloutPolicy, elapsed_s: float
) -> RolloutVerdict:
    """Promote, roll back or keep watching a candidate, from the signals seen so far.

    Each signal with a rule in ``policy`` is judged at ``policy.alpha / k`` (``k`` = the
    number of such signals; pass the same keys at every look). In order:

    1. **rollback** as soon as any signal is in state ``harm``;
    2. **promote** when every judged signal is ``clear`` and at least ``min_requests``
       candidate rows were seen;
    3. at ``max_duration_s`` (or ``max_requests``) without harm: **promote** (the reason says
       which signals were still open), or **rollback** when fewer than ``min_requests``
       candidate rows were seen (too little traffic to vouch for the candidate);
    4. otherwise **continue**.

    Args:
        signals: Signal name -> ``(champion Moments, candidate Moments)`` (canary: the
            increase since the candidate started) or one paired :class:`Moments` of
            candidate − champion differences (shadow).
        policy: The rules, α and limits.
        elapsed_s: Seconds since the candidate started.

    Returns:
        The verdict with its reasons and every judged signal's result.

    Raises:
        ConfigError: ``elapsed_s`` is negative or NaN.
        DataValidationError: A signal's value is neither form.
    """
    check_range("elapsed_s", elapsed_s, low=0.0, owner="judge")
    judged = [(rule, value) for name, value in signals.items() if (rule := policy.rule(name))]
    ignored = tuple(name for name in signals if policy.rule(name) is None)
    share = policy.alpha / len(judged) if judged else policy.alpha
    results = tuple(
        _assess(rule, value, alpha=share, min_n=policy.min_per_arm) for rule, value in judged
    )
    requests = int(max((r.n_candidate for r in results), default=0.0))
    harm = [r for r in results if r.state == "harm"]
    still_open = [r.name for r in results if r.state != "clear"]
    notes = (f"not judged (no rule): {', '.join(ignored)}",) if ignored else ()
    lines = tuple(r.line() for r in results)

    def verdict(action: Action, headline: str, details: tuple[str, ...]) -> RolloutVerdict:
        return RolloutVerdict(
            action=action,
            reasons=(headline, *details, *notes),
            signals=results,
            requests=requests,
            elapsed_s=float(elapsed_s),
            alpha=policy.alpha,
            ignored=ignored,
        )

    if harm:
        names = ", ".join(r.name for r in harm)
        return verdict(
            "rollback",
            f"rollback: the candidate is worse on {names} after {requests} candidate rows "
            f"(always-valid test, rollout α {policy.alpha:g})",
            tuple(r.line() for r in harm),
        )
    if results and not still_open and requests >= policy.min_requests:
        return verdict(
            "promote",
            f"promote: every judged signal is clear after {requests} candidate rows "
            f"(minimum {policy.min_requests})",
            lines,
        )
    out_of_time = elapsed_s >= policy.max_duration_s
    out_of_rows = policy.max_requests is not None and requests >= policy.max_requests
    if out_of_time or out_of_rows:
        limit = (
            f"the maximum duration {policy.max_duration_s:g} s"
            if out_of_time
            else f"the maximum of {policy.max_requests} candidate rows"
        )
        if requests < policy.min_requests:
            return verdict(
                "rollback",
                f"rollback: {limit} reached with only {requests} candidate rows (minimum "
                f"{policy.min_requests}): too little traffic to vouch for the candidate",
                lines,
            )
        pending = f"; still open: {', '.join(still_open)}" if still_open else ""
        return verdict(
            "promote",
            f"promote: {limit} reached with no harm shown after {requests} candidate rows{pending}",
            lines,
        )
    waiting = []
    if requests < policy.min_requests:
        waiting.append(f"{requests} of {policy.min_requests} candidate rows")
    if still_open:
        waiting.append(f"open: {', '.join(still_open)}")
    if not results:
        waiting.append("no judged signal given")
    return verdict("continue", "continue: " + "; ".join(waiting), lines)


def fixed_horizon_n(
    effect: float,
    sd: float | tuple[float, float],
    *,
    alpha: float,
    power: float,
    share: float,
) -> int:
    """Total rows a fixed-horizon one-sided two-sample z-test needs for ``power``.

    The test looks once, after ``n`` rows of which ``share`` go to the candidate, and rejects
    when ``δ̂ / s > z_{1−α}`` with ``s² = sd_A²/((1−share) n) + sd_B²/(share n)``; so
    ``n = (z_{1−α} + z_{power})² · (sd_A²/(1−share) + sd_B²/share) / effect²`` (rounded up).

    Args:
        effect: The true difference candidate − champion (> 0).
        sd: One standard deviation for both arms, or ``(champion sd, candidate sd)``.
        alpha: One-sided level.
        power: Probability of rejecting at ``effect``.
        share: The candidate's share of rows (canary percent / 100).

    Returns:
        The total number of rows (both arms).
    """
    owner = "fixed_horizon_n"
    check_range("effect", effect, low=0.0, closed="neither", owner=owner)
    check_range("alpha", alpha, low=0.0, high=1.0, closed="neither", owner=owner)
    check_range("power", power, low=0.0, high=1.0, closed="neither", owner=owner)
    check_range("share", share, low=0.0, high=1.0, closed="neither", owner=owner)
    sd_a, sd_b = (sd, sd) if not isinstance(sd, tuple) else sd
    check_range("sd", sd_a, low=0.0, closed="neither", owner=owner)
    check_range("sd", sd_b, low=0.0, closed="neither", owner=owner)
    z = NormalDist().inv_cdf
    spread = sd_a * sd_a / (1.0 - share) + sd_b * sd_b / share
    return math.ceil((z(1.0 - alpha) + z(power)) ** 2 * spread / (effect * effect))
