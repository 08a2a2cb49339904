"""Generated tabular data for the demo, tests and benchmarks (no files needed).

:func:`generate_churn` imitates a telecom churn table, dirt included (an id column, a numeric
column stored as text with blanks, missing values), and can drift: ``covariate_shift`` moves the
feature distributions, ``concept_shift`` changes how the label depends on them.
:func:`generate_regression` is a small numeric regression problem with one categorical feature.
:func:`generate_seasonal` is a daily table whose label follows the seasons and the day of the
week (the date as ISO text) with a store column of many rare values.
Everything is vectorised numpy, so a million rows take about a second.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kubeloop.errors import ConfigError

__all__ = [
    "CHURN_TARGET",
    "PAYMENT_METHODS",
    "REGRESSION_TARGET",
    "SEASONAL_TARGET",
    "generate_churn",
    "generate_regression",
    "generate_seasonal",
]

CHURN_TARGET = "churned"
REGRESSION_TARGET = "target"
SEASONAL_TARGET = "busy"
CONTRACTS = ("Month-to-month", "One year", "Two year")
PAYMENT_METHODS = (
    "Electronic check",
    "Mailed check",
    "Bank transfer (automatic)",
    "Credit card (automatic)",
)
NEW_PAYMENT_METHOD = "Digital wallet"  # appears only under covariate shift >= 0.5
INTERNET = ("DSL", "Fiber optic", "No")
REGIONS = ("North", "South", "East", "West", "Central")
_NO_YES = np.array(["No", "Yes"], dtype=object)
_BLANK_TOTAL_SHARE = 0.002  # Telco: 11 of 7043 customers have a blank TotalCharges
_INTERCEPT = -2.03  # tuned so that about 25 % of unshifted rows churn


def _check(n_rows: int, **shares: float) -> None:
    if n_rows < 1:
        raise ConfigError(f"n_rows must be at least 1, got {n_rows}.")
    for name, value in shares.items():
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a number >= 0, got {value}.")


def _choice(rng: np.random.Generator, values: tuple[str, ...], p: np.ndarray, n: int) -> np.ndarray:
    """Vectorised categorical draw: index by uniform numbers into the cumulative probabilities."""
    cumulative = np.cumsum(p / p.sum())
    index = np.minimum(np.searchsorted(cumulative, rng.random(n), side="right"), len(values) - 1)
    return np.asarray(values, dtype=object)[index]


def _yes_no(flags: np.ndarray) -> np.ndarray:
    return _NO_YES[flags.astype(np.intp)]


def generate_churn(
    n_rows: int,
    *,
    seed: int = 0,
    covariate_shift: float = 0.0,
    concept_shift: float = 0.0,
) -> pd.DataFrame:
    """Generate a churn-like table with target ``churned`` (``"Yes"``/``"No"``, about 25 % Yes).

    Columns: ``customer_id`` (unique text), numerics (``tenure_months``, ``monthly_charges``,
    ``support_calls``, ``data_usage_gb`` and ``age`` with a few NaN), ``total_charges`` as text
    with a few blank strings, categoricals (``contract``, ``payment_method``,
    ``internet_service``, ``tech_support``, ``region``), binaries (``senior`` 0/1,
    ``paperless_billing`` and ``partner`` Yes/No). The label follows a logistic function of
    several features, so a good model reaches a ROC AUC of about 0.82-0.84.

    Args:
        n_rows: Number of rows.
        seed: Random seed; the same arguments give the same table.
        covariate_shift: 0 = training distribution; 1 = strongly drifted (shorter tenure, higher
            charges, more month-to-month contracts, a new payment method from 0.5 on).
        concept_shift: 0 = the training relationship; 1 = the effects of contract, tenure and
            tech support on churn are reversed, so an old model ranks customers badly.

    Returns:
        The table, one row per customer.

    Raises:
        ConfigError: ``n_rows`` below 1 or a negative shift.
    """
    _check(n_rows, covariate_shift=covariate_shift, concept_shift=concept_shift)
    rng = np.random.default_rng(seed)
    n, cs, ks = n_rows, float(covariate_shift), min(float(concept_shift), 1.0)
    pull = min(cs, 1.5) / 1.5  # share of the contract mix moved to month-to-month

    contract_p = np.array([0.55, 0.21, 0.24]) * (1 - pull) + np.array([1.0, 0, 0]) * pull
    contract = _choice(rng, CONTRACTS, contract_p, n)
    m2m, two_year = contract == CONTRACTS[0], contract == CONTRACTS[2]
    tenure_mean = np.where(m2m, 16.0, np.where(two_year, 52.0, 38.0)) * max(1 - 0.5 * cs, 0.2)
    tenure = np.clip(np.ceil(rng.exponential(tenure_mean)), 1, 72)
    # Like Telco: brand-new customers (tenure 0) have a blank total instead of a number.
    brand_new = rng.random(n) < _BLANK_TOTAL_SHARE
    tenure[brand_new] = 0

    internet = _choice(rng, INTERNET, np.array([0.34, 0.44, 0.22]), n)
    fiber, no_internet = internet == INTERNET[1], internet == INTERNET[2]
    monthly = 22.0 + 50.0 * fiber + 28.0 * (internet == INTERNET[0]) + 18.0 * cs
    monthly = np.round(np.clip(monthly + rng.normal(0, 9, n), 18.0, 130.0), 2)
    total = np.round(tenure * monthly * rng.uniform(0.95, 1.05, n), 2)
    total_text = total.astype(str).astype(object)
    total_text[brand_new] = " "

    payment_p = np.array([0.34, 0.23, 0.22, 0.21, 0.0])
    if cs >= 0.5:
        payment_p[4] = 0.3 * min(cs, 1.5)
    payment = _choice(rng, (*PAYMENT_METHODS, NEW_PAYMENT_METHOD), payment_p, n)
    tech = _yes_no(rng.random(n) < 0.35)
    tech[no_internet] = "No internet service"
    support_calls = rng.poisson(1.2 + 0.8 * fiber + 1.0 * cs).astype(np.float64)
    usage = np.round(rng.lognormal(3.0 + 0.3 * fiber, 0.6, n) * (~no_internet), 2)
    usage[rng.random(n) < 0.03] = np.nan
    age = np.round(rng.normal(45, 15, n).clip(18, 90))
    age[rng.random(n) < 0.02] = np.nan
    senior = (rng.random(n) < np.where(age >= 65, 0.8, 0.05)).astype(np.int64)
    paperless = rng.random(n) < 0.6
    partner = rng.random(n) < 0.48
    region = _choice(rng, REGIONS, np.ones(len(REGIONS)), n)

    flip = 1.0 - 2.0 * ks  # 1 -> the usual effect, -1 -> reversed
    logit = (
        _INTERCEPT
        + flip * (1.3 * m2m - 1.2 * two_year - 0.04 * (tenure - 24.0))
        + 0.025 * (monthly - 65.0)
        + 0.30 * (support_calls - 1.5)
        + 0.55 * (payment == PAYMENT_METHODS[0])
        + 0.45 * (payment == NEW_PAYMENT_METHOD)
        + 0.35 * senior
        + 0.25 * paperless
        - 0.20 * partner
        - flip * 0.5 * (tech == "Yes")
    )
    churned = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))

    ids = np.char.add("C", np.char.zfill(np.arange(1, n + 1).astype(str), 8)).astype(object)
    columns = {
        "customer_id": ids,
        "contract": contract,
        "tenure_months": tenure.astype(np.int64),
        "internet_service": internet,
        "monthly_charges": monthly,
        "total_charges": total_text,
        "payment_method": payment,
        "tech_support": tech,
        "support_calls": support_calls.astype(np.int64),
        "data_usage_gb": usage,
        "age": age,
        "senior": senior,
        "paperless_billing": _yes_no(paperless),
        "partner": _yes_no(partner),
        "region": region,
        CHURN_TARGET: _yes_no(churned),
    }
    # Column by column: pandas then keeps one block per column instead of copying all the
    # text columns into one block, which costs a second at a million rows.
    frame = pd.DataFrame(index=pd.RangeIndex(n))
    for name, values in columns.items():
        frame[name] = values
    return frame


def generate_regression(n_rows: int, *, seed: int = 0, n_features: int = 8) -> pd.DataFrame:
    """Generate a regression table: ``n_features`` features and a numeric target ``target``.

    The features are ``n_features - 1`` numerics ``x1``, ``x2``, ... (``x1`` and ``x2`` about 2 %
    missing) and one categorical ``segment`` (``"A"``-``"D"``). The target mixes linear terms, one
    interaction, a nonlinearity and the segment, plus noise.

    Args:
        n_rows: Number of rows.
        seed: Random seed; the same arguments give the same table.
        n_features: Number of feature columns, at least 2.

    Returns:
        The table.

    Raises:
        ConfigError: ``n_rows`` below 1 or ``n_features`` below 2.
    """
    _check(n_rows)
    if n_features < 2:
        raise ConfigError(f"n_features must be at least 2, got {n_features}.")
    rng = np.random.default_rng(seed)
    k = n_features - 1
    x = rng.normal(0.0, 1.0, (n_rows, k))
    weights = rng.uniform(-3.0, 3.0, k)
    segment = _choice(rng, ("A", "B", "C", "D"), np.array([0.4, 0.3, 0.2, 0.1]), n_rows)
    offset = np.select([segment == "B", segment == "C", segment == "D"], [2.0, -1.5, 4.0], 0.0)
    y = 10.0 + x @ weights + offset + 2.0 * np.sin(2.0 * x[:, 0]) + rng.normal(0.0, 1.0, n_rows)
    if k >= 2:
        y += 1.5 * x[:, 0] * x[:, 1]
    frame = pd.DataFrame(x, columns=[f"x{i + 1}" for i in range(k)])
    for column in frame.columns[:2]:
        frame.loc[rng.random(n_rows) < 0.02, column] = np.nan
    frame["segment"] = segment
    frame[REGRESSION_TARGET] = y
    return frame


def generate_seasonal(n_rows: int, *, seed: int = 0, stores: int = 400) -> pd.DataFrame:
    """A daily table whose label follows the calendar: ``busy`` (Yes/No) is likelier in summer
    and at weekends, a little likelier in later years, and barely depends on the other columns.

    Columns: ``date`` (ISO text ``YYYY-MM-DD``, 2019-2024, about 1 % blank), ``store`` (``stores``
    names with Zipf-like frequencies: many are rare), ``price`` (numeric, weakly informative),
    ``busy``. Without calendar features the date carries no usable signal.

    Raises:
        ConfigError: ``n_rows`` or ``stores`` is below 1.
    """
    _check(n_rows)
    if stores < 1:
        raise ConfigError(f"stores must be at least 1, got {stores}.")
    rng = np.random.default_rng(seed)
    day = rng.integers(0, 6 * 365, n_rows)
    dates = np.datetime64("2019-01-01") + day.astype("timedelta64[D]")
    start_of_year = dates.astype("datetime64[Y]").astype("datetime64[D]")
    day_of_year = (dates - start_of_year).astype(np.int64)
    weekday = (dates.astype(np.int64) + 3) % 7
    year = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    weights = 1.0 / np.arange(1, stores + 1)
    store_index = np.minimum(
        np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(n_rows)), stores - 1
    )
    store_effect = rng.normal(0.0, 0.3, stores)[store_index]
    price = rng.normal(10.0, 2.0, n_rows)
    logit = (
        1.6 * np.cos(2 * np.pi * (day_of_year - 196) / 365.25)
        + 0.9 * (weekday >= 5)
        + 0.15 * (year - 2021)
        + store_effect
        - 0.1 * (price - 10.0)
        + rng.logistic(0.0, 0.6, n_rows)
    )
    text = dates.astype(str).astype(object)
    text[rng.random(n_rows) < 0.01] = ""
    return pd.DataFrame(
        {
            "date": text,
            "store": np.array([f"store-{i:04d}" for i in range(stores)], dtype=object)[store_index],
            "price": price.round(2),
            SEASONAL_TARGET: _yes_no(logit > 0.0),
        }
    )
