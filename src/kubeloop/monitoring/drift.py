"""Drift statistics: each one a small pure function over numpy arrays.

Counts are aligned arrays (one entry per bin); a 2-D array holds one feature per row, padded
with zeros on the right, so one call scores every feature at once. Padding is harmless: a bin
that is empty on both sides contributes exactly 0 to PSI and KS.

PSI smoothing: proportions are floored at ``epsilon`` (default ``1e-4``, the value Evidently
uses for empty bins) before the logarithm, so an empty bin on one side -- e.g. the
``__unknown__`` category, never present in the reference -- gives a large but finite term
instead of infinity. The floor is applied to both sides; proportions are not renormalised
(the bias is at most ``bins * epsilon``).

KS: the reference profile keeps bin counts, not raw samples, so by default KS is computed on
the binned CDFs (the largest CDF gap over the reference bin edges). This is the exact KS
statistic of the two samples evaluated at those edges and a lower bound of the raw two-sample
statistic; its p-value uses the asymptotic Kolmogorov distribution with the effective sample
size ``n*m/(n+m)``, which is conservative for binned data. When raw samples exist on both sides
:func:`ks_two_sample` runs the exact scipy test instead.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

__all__ = [
    "DEFAULT_PSI_THRESHOLD",
    "PSI_EPSILON",
    "chi_square",
    "drift_share",
    "ks_binned",
    "ks_two_sample",
    "psi",
    "psi_rows",
]

DEFAULT_PSI_THRESHOLD = 0.2
PSI_EPSILON = 1e-4


def _proportions(counts: np.ndarray) -> np.ndarray:
    """Row-wise proportions of a 2-D count array; an all-zero row stays all zero."""
    totals = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def psi_rows(
    reference: np.ndarray, current: np.ndarray, *, epsilon: float = PSI_EPSILON
) -> np.ndarray:
    """PSI of every row of two aligned 2-D count arrays (one feature per row).

    ``PSI = sum((q - p) * ln(q / p))`` with ``p``/``q`` the reference/current proportions,
    both floored at ``epsilon``.

    Args:
        reference: reference counts, shape ``(features, bins)``.
        current: current counts, same shape.
        epsilon: floor for proportions before the logarithm.

    Returns:
        PSI per row, shape ``(features,)``; NaN for a row whose current counts are all zero.
    """
    ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    cur = np.atleast_2d(np.asarray(current, dtype=np.float64))
    if ref.shape != cur.shape:
        raise ValueError(
            f"reference and current counts differ in shape: {ref.shape} vs {cur.shape}"
        )
    p = np.maximum(_proportions(ref), epsilon)
    q = np.maximum(_proportions(cur), epsilon)
    values = ((q - p) * np.log(q / p)).sum(axis=1)
    empty = (cur.sum(axis=1) <= 0) | (ref.sum(axis=1) <= 0)
    values[empty] = np.nan
    return values


def psi(reference: np.ndarray, current: np.ndarray, *, epsilon: float = PSI_EPSILON) -> float:
    """PSI of one feature from two aligned 1-D count arrays (see :func:`psi_rows`)."""
    return float(
        psi_rows(np.asarray(reference)[None], np.asarray(current)[None], epsilon=epsilon)[0]
    )


def ks_binned(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """KS statistic and asymptotic p-value from two aligned 1-D arrays of ordered bin counts.

    Args:
        reference: counts per ordered numeric bin of the reference.
        current: counts per the same bins of the current window.

    Returns:
        ``(statistic, p_value)``; ``(nan, nan)`` when either side is empty.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    n, m = ref.sum(), cur.sum()
    if n <= 0 or m <= 0:
        return float("nan"), float("nan")
    statistic = float(np.max(np.abs(np.cumsum(ref) / n - np.cumsum(cur) / m)))
    effective = n * m / (n + m)
    p_value = float(special.kolmogorov(np.sqrt(effective) * statistic))
    return statistic, p_value


def ks_two_sample(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Exact two-sample KS test on raw numeric samples (NaN dropped).

    Returns:
        ``(statistic, p_value)``; ``(nan, nan)`` when either side has no values.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if ref.size == 0 or cur.size == 0:
        return float("nan"), float("nan")
    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def chi_square(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity on a 2 x bins contingency table of category counts.

    Bins empty on both sides are dropped (they carry no information and would make the
    expected frequency zero).

    Returns:
        ``(statistic, p_value)``; ``(nan, nan)`` when a side is empty or fewer than 2 bins remain.
    """
    table = np.vstack([np.asarray(reference, float), np.asarray(current, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) <= 0).any():
        return float("nan"), float("nan")
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return statistic, float(stats.chi2.sf(statistic, dof))


def drift_share(drifted: np.ndarray | list[bool]) -> float:
    """Fraction of features flagged as drifted (0.0 for no features)."""
    flags = np.asarray(drifted, dtype=bool)
    return float(flags.mean()) if flags.size else 0.0
