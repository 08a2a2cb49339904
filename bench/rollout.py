"""Staged-rollout benchmark: requests to a rollback, sequential test vs a fixed-horizon test.

Usage: ``python bench/rollout.py [--runs 200] [--canary 20] [--alpha 0.05] [--look 50]
[--rate 10] [--seed 0]``.

Issue 24: simulated canary rollouts judged by :func:`kubeloop.monitoring.sequential.judge` with
the default :class:`~kubeloop.monitoring.sequential.RolloutPolicy` (its ``alpha`` from
``--alpha``). Each request is one row of the four canary signals the monitor judges -- ``error``
(0/1), ``latency_log`` (ln seconds), ``score`` (the predicted probability) and ``label_loss``
(per-row log loss; every request's label is assumed to arrive, the delay is not simulated) --
and goes to the candidate with probability ``--canary``/100. The monitor looks every ``--look``
requests and the rollout ends at the first promote/rollback, or at the policy's
``max_duration_s`` (3600 s) at ``--rate`` requests per second (36,000 requests by default).

The champion: 1% errors; log-normal latency (median 50 ms, ln-sd 0.5, so p99/p50 = 3.2); a
calibrated binormal classifier with ROC AUC 0.80 on 30% positives. Degradations of the
candidate, one at a time (everything else equal):

- ``auc-0.05``: the candidate's classifier has AUC 0.75 (calibrated too, so its mean score is
  unchanged); the signal that moves is the per-row log loss (+0.042 nats);
- ``error+2pt``: 3% errors instead of 1%;
- ``p99x1.5``: every latency ×1.5 (the log-normal's p99 ×1.5; ln latency +0.405).

For each degradation it prints the share of rollouts rolled back within the hour (the power
the sequential test achieved), the median number of requests (both arms) to the rollback (a
rollout never rolled back counts as infinitely many), and the total requests a fixed-horizon
one-sided two-sample z-test needs for the same power (the 95% Wilson lower bound of the achieved
power, in the test's favour) at the same per-signal α (``alpha / 4``: it also judges four
signals) and the same split (:func:`~kubeloop.monitoring.sequential.fixed_horizon_n`, with the
true effect and standard deviations). Beside it, for the reader: the sequential test stopped
at the 80th percentile of its run lengths has exactly 80% power, so its median against the
fixed-horizon size at 80% power. Then the A/A false-rollback rate (candidate = champion).
Exits 1 unless every "median sequential < fixed-horizon" and "A/A <= α" line says PASS.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from kubeloop.monitoring.sequential import (
    Moments,
    RolloutPolicy,
    fixed_horizon_n,
    judge,
)

SIGNALS = ("error", "latency_log", "score", "label_loss")
PREVALENCE = 0.3
LATENCY_LN_MEDIAN = math.log(0.05)
LATENCY_LN_SD = 0.5
Draw = Callable[[np.random.Generator, int], dict[str, np.ndarray]]


def _classifier(auc: float) -> Callable[[np.random.Generator, int], tuple[np.ndarray, ...]]:
    """Calibrated binormal classifier with ROC ``auc``: rows -> (score, per-row log loss)."""
    mu = math.sqrt(2.0) * NormalDist().inv_cdf(auc)  # AUC = Φ(μ/√2) for N(0,1) vs N(μ,1)
    prior = math.log(PREVALENCE / (1.0 - PREVALENCE))

    def rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
        label = rng.random(n) < PREVALENCE
        logit = prior + mu * (rng.standard_normal(n) + mu * label) - mu * mu / 2.0
        loss = np.where(label, np.logaddexp(0.0, -logit), np.logaddexp(0.0, logit))
        return 1.0 / (1.0 + np.exp(-logit)), loss

    return rows


def _model(error_rate: float, latency_factor: float, auc: float) -> Draw:
    classifier = _classifier(auc)
    shift = math.log(latency_factor)

    def draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        score, loss = classifier(rng, n)
        return {
            "error": (rng.random(n) < error_rate).astype(float),
            "latency_log": rng.normal(LATENCY_LN_MEDIAN + shift, LATENCY_LN_SD, n),
            "score": score,
            "label_loss": loss,
        }

    return draw


@dataclass(frozen=True)
class Scenario:
    name: str
    signal: str
    candidate: Draw
    effect: float
    sd: tuple[float, float]  # champion, candidate


def _loss_moments(auc: float, rows: int = 2_000_000) -> tuple[float, float]:
    """Mean and sd of the per-row log loss of the calibrated classifier with ROC ``auc``."""
    _, loss = _classifier(auc)(np.random.default_rng(12345), rows)
    return float(loss.mean()), float(loss.std())


def scenarios() -> tuple[Draw, list[Scenario]]:
    """The champion and the three degraded candidates (with their true effect and sds)."""
    champion = _model(0.01, 1.0, 0.80)
    loss_a, sd_a = _loss_moments(0.80)
    loss_b, sd_b = _loss_moments(0.75)
    bernoulli = (math.sqrt(0.01 * 0.99), math.sqrt(0.03 * 0.97))
    return champion, [
        Scenario("auc-0.05", "label_loss", _model(0.01, 1.0, 0.75), loss_b - loss_a, (sd_a, sd_b)),
        Scenario("error+2pt", "error", _model(0.03, 1.0, 0.80), 0.02, bernoulli),
        Scenario(
            "p99x1.5",
            "latency_log",
            _model(0.01, 1.5, 0.80),
            math.log(1.5),
            (LATENCY_LN_SD, LATENCY_LN_SD),
        ),
    ]


def rollout(
    rng: np.random.Generator,
    champion: Draw,
    candidate: Draw,
    *,
    policy: RolloutPolicy,
    share: float,
    look: int,
    cap: int,
    rate: float,
) -> tuple[str, int, tuple[str, ...]]:
    """One simulated canary rollout: (action, requests at the decision, harmful signals)."""
    arm = rng.random(cap) < share
    a, b = champion(rng, cap), candidate(rng, cap)
    looks = np.arange(look, cap + 1, look) - 1
    counts = (np.cumsum(~arm)[looks], np.cumsum(arm)[looks])
    sums: dict[str, tuple[np.ndarray, ...]] = {}
    for name in SIGNALS:
        x_a, x_b = np.where(arm, 0.0, a[name]), np.where(arm, b[name], 0.0)
        sums[name] = (
            np.cumsum(x_a)[looks],
            np.cumsum(x_a * x_a)[looks],
            np.cumsum(x_b)[looks],
            np.cumsum(x_b * x_b)[looks],
        )
    for i, end in enumerate(looks + 1):
        n_a, n_b = float(counts[0][i]), float(counts[1][i])
        signals = {
            name: (
                Moments(n_a, float(s[0][i]), float(s[1][i])),
                Moments(n_b, float(s[2][i]), float(s[3][i])),
            )
            for name, s in sums.items()
        }
        verdict = judge(signals, policy=policy, elapsed_s=end / rate)
        if verdict.action != "continue":
            return verdict.action, int(end), verdict.harmful
    return "continue", cap, ()


def wilson_low(successes: int, runs: int, z: float = 1.6449) -> float:
    """One-sided 95% Wilson lower bound of a proportion."""
    p = successes / runs
    centre = p + z * z / (2 * runs)
    spread = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs))
    return (centre - spread) / (1 + z * z / runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="rollouts per scenario")
    parser.add_argument("--canary", type=float, default=20.0, help="candidate percent")
    parser.add_argument("--alpha", type=float, default=0.05, help="rollout false-rollback rate")
    parser.add_argument("--look", type=int, default=50, help="requests between two looks")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.runs < 20 or not 0 < args.canary < 100 or args.look < 1 or args.rate <= 0:
        parser.error("need --runs >= 20, 0 < --canary < 100, --look >= 1, --rate > 0")
    policy = RolloutPolicy(alpha=args.alpha)
    share = args.canary / 100.0
    cap = int(policy.max_duration_s * args.rate)
    per_signal = args.alpha / len(SIGNALS)
    champion, cases = scenarios()
    rng = np.random.default_rng(args.seed)
    print(
        f"{args.runs} canary rollouts per scenario, candidate {args.canary:g}%, look every "
        f"{args.look} requests, at most {policy.max_duration_s:g} s x {args.rate:g} req/s = "
        f"{cap:,} requests; rollout α {args.alpha:g} over {len(SIGNALS)} signals "
        f"({', '.join(SIGNALS)}): {per_signal:g} per signal; fixed-horizon: one-sided z-test "
        f"at α {per_signal:g}, same split"
    )
    header = (
        f"{'degradation':11} {'signal':11} {'effect':>7} {'power':>6} {'median seq':>10} "
        f"{'fixed n@power':>13} {'ratio':>6} {'seq@80%':>8} {'fixed n@80%':>11} {'ratio':>6}"
    )
    print(header)
    failures = []
    started = time.perf_counter()
    for case in cases:
        stops, wrong = [], 0
        for _ in range(args.runs):
            action, requests, harmful = rollout(
                rng,
                champion,
                case.candidate,
                policy=policy,
                share=share,
                look=args.look,
                cap=cap,
                rate=args.rate,
            )
            rolled = action == "rollback"
            stops.append(float(requests) if rolled else math.inf)
            wrong += rolled and case.signal not in harmful
        runs = np.array(stops)
        hits = int(np.isfinite(runs).sum())
        power = hits / args.runs
        median = float(np.median(runs))
        fair = min(wilson_low(hits, args.runs), 1 - 1e-9)
        fixed = fixed_horizon_n(case.effect, case.sd, alpha=per_signal, power=fair, share=share)
        fixed80 = fixed_horizon_n(case.effect, case.sd, alpha=per_signal, power=0.8, share=share)
        seq80 = float(np.quantile(runs, 0.8)) if power >= 0.8 else math.inf
        print(
            f"{case.name:11} {case.signal:11} {case.effect:7.4f} {power:6.3f} {median:10.0f} "
            f"{fixed:13,d} {median / fixed:6.2f} {seq80:8.0f} {fixed80:11,d} "
            f"{median / fixed80:6.2f}"
        )
        if wrong:
            print(f"  ({wrong} of the rollbacks were caused by another signal)")
        ok = median < fixed
        failures += [] if ok else [case.name]
        print(
            f"  {'PASS' if ok else 'FAIL'}: {case.name}: median sequential {median:,.0f} < "
            f"fixed-horizon {fixed:,d} requests at power {fair:.3f} (achieved {power:.3f}, "
            f"95% lower bound) and α {per_signal:g}"
        )
    same = champion
    rollbacks, promoted, end = 0, 0, []
    for _ in range(args.runs):
        action, requests, _harmful = rollout(
            rng,
            champion,
            same,
            policy=policy,
            share=share,
            look=args.look,
            cap=cap,
            rate=args.rate,
        )
        rollbacks += action == "rollback"
        promoted += action == "promote"
        end.append(requests)
    rate = rollbacks / args.runs
    ok = rate <= args.alpha
    failures += [] if ok else ["A/A"]
    print(
        f"A/A (candidate = champion): {rollbacks}/{args.runs} rolled back = {rate:.3f}; "
        f"{promoted} promoted (median at {np.median(end):,.0f} requests)"
    )
    print(f"{'PASS' if ok else 'FAIL'}: A/A false-rollback rate {rate:.3f} <= α {args.alpha:g}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
