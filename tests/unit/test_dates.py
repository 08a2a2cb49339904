"""Dates and times as features, and bounded categoricals: the parse rule, inference, the spec,
the fast transform, the profile and old bundles."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeloop.bundle.dates import (
    CALENDAR_PARTS,
    calendar_features,
    column_seconds,
    detect_format,
    to_seconds,
)
from kubeloop.bundle.preprocessor import PreprocessorSpec
from kubeloop.bundle.profile import build_reference_profile, count_values
from kubeloop.bundle.schema import OTHER_CATEGORY, Schema
from kubeloop.data import build_dataset
from kubeloop.data._infer import ID_DISTINCT_SHARE, MAX_CATEGORIES, MIN_CATEGORY_COUNT
from kubeloop.errors import BundleError, DataValidationError
from kubeloop.features import FastTransform, fit_preprocessor

MARCH_1_0930 = (dt.datetime(2024, 3, 1, 9, 30) - dt.datetime(1970, 1, 1)).total_seconds()
MARCH_1 = (dt.datetime(2024, 3, 1) - dt.datetime(1970, 1, 1)).total_seconds()


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("2024-03-01", None, MARCH_1),
        ("2024-03-01T09:30", None, MARCH_1_0930),
        (" 2024-03-01 09:30:00 ", None, MARCH_1_0930),
        ("2024-03-01T09:30:00.000Z", None, MARCH_1_0930),
        ("2024-03-01T09:30:00+01:00", None, MARCH_1_0930),  # the local clock, offset dropped
        ("2024-03-01T09:30:00-07:00", None, MARCH_1_0930),
        ("03/01/2024", "%m/%d/%Y", MARCH_1),
        ("01/03/2024 09:30", "%d/%m/%Y", MARCH_1_0930),
        ("01.03.2024 09:30:00", "%d.%m.%Y", MARCH_1_0930),
        ("1 Mar 2024", "%d %b %Y", MARCH_1),
        ("Mar 1, 2024", "%b %d, %Y", MARCH_1),
        ("2024-03-01", "%d/%m/%Y", MARCH_1),  # ISO is always read
        (dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=5))), None,
         MARCH_1_0930),
        (pd.Timestamp("2024-03-01 09:30", tz="America/New_York"), None, MARCH_1_0930),
        (dt.date(2024, 3, 1), None, MARCH_1),
        (np.datetime64("2024-03-01T09:30"), None, MARCH_1_0930),
        (MARCH_1, None, MARCH_1),  # a number is already seconds
        (b"2024-03-01", None, MARCH_1),
    ],
)  # fmt: skip
def test_to_seconds_reads_the_documented_forms(
    value: Any, fmt: str | None, expected: float
) -> None:
    assert to_seconds(value, fmt) == expected


@pytest.mark.parametrize("value", [None, math.nan, "", "   ", pd.NaT, pd.NA, np.datetime64("NaT")])
def test_missing_values_are_nan(value: Any) -> None:
    assert math.isnan(to_seconds(value))


@pytest.mark.parametrize(
    ("value", "fmt"),
    [("soon", None), ("03/01/2024", None), ("31/12/2024", "%m/%d/%Y"), (True, None),
     (math.inf, None), ([2024, 3, 1], None), ("2024-02-30", None)],
)  # fmt: skip
def test_values_that_are_not_dates_raise(value: Any, fmt: str | None) -> None:
    with pytest.raises(ValueError):
        to_seconds(value, fmt)


def test_column_seconds_marks_bad_values_and_reads_categoricals() -> None:
    values = ["2024-03-01", None, "soon", "2024-03-01", ["x"]]
    seconds, bad = column_seconds(values)
    assert bad.tolist() == [False, False, True, False, True]
    assert seconds[0] == seconds[3] == MARCH_1 and np.isnan(seconds[1:3]).all()
    categorical = pd.Categorical(["2024-03-01", None, "2024-03-01T09:30"])
    seconds, bad = column_seconds(categorical)
    assert seconds[[0, 2]].tolist() == [MARCH_1, MARCH_1_0930] and np.isnan(seconds[1])
    stamps = np.array(["2024-03-01T09:30", "NaT"], dtype="datetime64[ns]")
    seconds, bad = column_seconds(stamps)
    assert seconds[0] == MARCH_1_0930 and np.isnan(seconds[1]) and not bad.any()


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["2024-03-01", "2024-03-02T10:00"], (True, None)),
        (["03/01/2024", "12/31/2024"], (True, "%m/%d/%Y")),
        (["03/01/2024", "04/02/2024"], (True, "%m/%d/%Y")),  # ambiguous: month first
        (["01/03/2024", "31/12/2024"], (True, "%d/%m/%Y")),  # a day above 12: day first
        (["1 Mar 2024", "15 Apr 2023 10:00"], (True, "%d %b %Y")),
        (["Month-to-month", "One year"], (False, None)),
        ([f"2024-01-{d:02d}" for d in range(1, 29)] + ["soon"], (True, None)),  # >= 95 % dates
        ([f"2024-01-{d:02d}" for d in range(1, 11)] + ["a", "b"], (False, None)),
        ([], (False, None)),
    ],
)
def test_detect_format(texts: list[str], expected: tuple[bool, str | None]) -> None:
    assert detect_format(texts) == expected


def test_calendar_features_of_known_days() -> None:
    seconds = np.array([MARCH_1_0930, np.nan, -86_400.0])  # 1969-12-31 was a Wednesday
    parts = calendar_features(seconds, CALENDAR_PARTS)
    assert parts[0].tolist() == [2024, 3, 1, 4, 61, 9, MARCH_1_0930]  # a Friday, day 61
    assert np.isnan(parts[1]).all()
    assert parts[2].tolist() == [1969, 12, 31, 2, 365, 0, -86_400.0]


def _frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    return pd.DataFrame(
        {
            "day": days.strftime("%Y-%m-%d").astype(object),
            "x": rng.normal(size=n),
            "label": np.where(days.month.isin([6, 7, 8]), "yes", "no"),
        }
    )


def test_iso_text_with_bad_and_blank_values_becomes_a_datetime_feature() -> None:
    frame = _frame()
    frame.loc[3, "day"] = "soon"
    frame.loc[4, "day"] = " "
    dataset = build_dataset(frame, target="label")
    info = dataset.schema.features[0]
    assert (info.name, info.kind, info.date_format) == ("day", "datetime", None)
    assert any("1 values are not dates (e.g. 'soon'); they were read as missing" in n
               for n in dataset.notes)  # fmt: skip
    assert np.isnan(dataset.X["day"].to_numpy()[[3, 4]]).all()
    assert dataset.X["day"].dtype == np.float64


@pytest.mark.parametrize("tz", [None, "Europe/Paris", "UTC"])
def test_timestamp_columns_keep_their_local_clock(tz: str | None) -> None:
    frame = _frame()
    stamps = pd.to_datetime(frame["day"]) + pd.Timedelta(hours=9)
    frame["day"] = stamps.dt.tz_localize(tz) if tz else stamps
    frame.loc[5, "day"] = pd.NaT
    dataset = build_dataset(frame, target="label")
    seconds = dataset.X["day"].to_numpy()
    assert np.isnan(seconds[5])
    hours = calendar_features(seconds, ("hour",))[:, 0]
    assert set(hours[~np.isnan(hours)].tolist()) == {9.0}


def test_date_objects_and_day_first_text() -> None:
    frame = _frame()
    as_dates = frame.assign(day=pd.to_datetime(frame["day"]).dt.date.astype(object))
    assert build_dataset(as_dates, target="label").schema.features[0].kind == "datetime"
    day_first = frame.assign(day=pd.to_datetime(frame["day"]).dt.strftime("%d/%m/%Y"))
    info = build_dataset(day_first, target="label").schema.features[0]
    assert (info.kind, info.date_format) == ("datetime", "%d/%m/%Y")


def test_a_single_date_is_dropped() -> None:
    frame = _frame().assign(day="2024-03-01")
    dataset = build_dataset(frame, target="label")
    assert "day" not in dataset.schema.feature_names
    assert any("'day' has one date only" in n for n in dataset.notes)


def test_date_spec_round_trip_equals_scikit_learn_and_serves_text() -> None:
    frame = _frame()
    frame.loc[::17, "day"] = None
    dataset = build_dataset(frame, target="label")
    transformer, spec = fit_preprocessor(dataset.X, dataset.schema)
    assert spec.datetime[0].part_names == tuple(p for p in CALENDAR_PARTS if p != "hour")
    assert spec.output_columns[:3] == ("x", "day.year", "day.month")
    assert "day" in spec.output_columns
    loaded = PreprocessorSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert loaded == spec and spec.to_dict()["format"] == 2
    fast = FastTransform(loaded)
    expected = transformer.transform(dataset.X)
    assert np.abs(fast.transform(dataset.X) - expected).max() <= 1e-9
    # the same rows as ISO text (what a client sends) give the same matrix
    text = frame["day"].tolist()
    result = fast.transform_columns({"day": text, "x": dataset.X["x"].to_numpy()})
    assert np.abs(result.matrix - expected).max() <= 1e-9
    assert result.imputed["day"] == int(frame["day"].isna().sum())
    single = fast.transform_row({"day": text[1], "x": float(dataset.X["x"][1])})
    assert single is not None and np.abs(single.matrix[0] - expected[1]).max() <= 1e-9
    with pytest.raises(DataValidationError, match="Feature 'day' takes a date or time"):
        fast.transform_columns({"day": ["someday"], "x": np.array([0.0])})


def test_hours_are_a_feature_only_where_times_vary() -> None:
    frame = _frame()
    frame["day"] = frame["day"] + np.where(np.arange(len(frame)) % 2, " 10:00", " 18:30")
    dataset = build_dataset(frame, target="label")
    _, spec = fit_preprocessor(dataset.X, dataset.schema)
    assert spec.datetime[0].part_names == CALENDAR_PARTS


def _categorical_frame(n_rows: int, values: np.ndarray) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {"city": values, "x": rng.normal(size=n_rows), "label": rng.choice(["a", "b"], n_rows)}
    )


def test_the_category_cap_keeps_the_most_frequent_with_a_minimum_count() -> None:
    common = [f"c{i:03d}" for i in range(MAX_CATEGORIES + 20)] * MIN_CATEGORY_COUNT
    rare = ["rare1", "rare2"] * (MIN_CATEGORY_COUNT - 1)
    heavy = ["c000"] * 50
    values = np.array(common + rare + heavy, dtype=object)
    dataset = build_dataset(_categorical_frame(len(values), values), target="label")
    info = dataset.schema.features[0]
    assert len(info.categories) == MAX_CATEGORIES + 1 and info.has_other
    assert "c000" in info.categories and "rare1" not in info.categories
    assert (dataset.X["city"] == OTHER_CATEGORY).sum() == 20 * MIN_CATEGORY_COUNT + len(rare)
    assert any(f"became '{OTHER_CATEGORY}'" in n for n in dataset.notes)
    assert dataset.schema.to_dict()["format"] == 2


def test_a_small_categorical_is_unchanged_and_written_in_format_1() -> None:
    values = np.array(["a", "b", "c"] * 30, dtype=object)
    dataset = build_dataset(_categorical_frame(90, values), target="label")
    assert dataset.schema.features[0].categories == ("a", "b", "c")
    assert dataset.schema.to_dict()["format"] == 1
    _, spec = fit_preprocessor(dataset.X, dataset.schema)
    assert spec.to_dict()["format"] == 1


def test_model_width_does_not_grow_with_rows() -> None:
    widths = []
    for rows in (2_000, 20_000):
        rng = np.random.default_rng(rows)
        values = rng.integers(0, rows // 3, rows).astype(str).astype(object)  # ~60 % distinct
        dataset = build_dataset(_categorical_frame(rows, values), target="label")
        _, spec = fit_preprocessor(dataset.X, dataset.schema)
        widths.append(len(spec.output_columns))
    assert max(widths) <= 1 + MAX_CATEGORIES + 1


@pytest.mark.parametrize(
    ("distinct_share", "outcome"),
    [(1.0, "id"), (0.6, "id"), (ID_DISTINCT_SHARE, "id"), (0.4, "no category"), (0.15, "capped")],
)
def test_the_id_rule(distinct_share: float, outcome: str) -> None:
    rows = 1_000
    distinct = int(rows * distinct_share)
    values = np.array([f"order-{i % distinct}" for i in range(rows)], dtype=object)
    values[10] = None  # one blank cell does not hide an id
    dataset = build_dataset(_categorical_frame(rows, values), target="label")
    assert ("city" in dataset.schema.feature_names) is (outcome == "capped")
    assert any("'city' looks like an id" in n for n in dataset.notes) is (outcome == "id")
    assert any("No category is left" in n for n in dataset.notes) is (outcome == "no category")
    if outcome == "capped":  # 150 values of 6-7 rows each: the 100 most frequent are kept
        assert len(dataset.schema.features[0].categories) == MAX_CATEGORIES + 1


def test_other_category_in_the_transform_profile_and_counts() -> None:
    values = np.array(["a"] * 40 + ["b"] * 40 + ["c"] * 40 + ["r1", "r2"], dtype=object)
    dataset = build_dataset(_categorical_frame(len(values), values), target="label")
    assert dataset.schema.features[0].categories == ("__other__", "a", "b", "c")
    _, spec = fit_preprocessor(dataset.X, dataset.schema)
    fast = FastTransform(spec)
    column = fast.category_columns["city"][OTHER_CATEGORY]
    result = fast.transform_columns({"city": ["r1", "new", None, "a"], "x": np.zeros(4)})
    assert result.matrix[:2, column].tolist() == [1.0, 1.0]  # rare and unseen: __other__
    assert result.unknown == {} and result.imputed == {"city": 1}
    row = fast.transform_row({"city": "new", "x": 0.0})
    assert row is not None and row.matrix[0, column] == 1.0
    codes = pd.Categorical(["new", "b", None])
    batch = fast.transform_columns({"city": codes, "x": np.zeros(3)})
    assert batch.matrix[0, column] == 1.0 and batch.unknown == {}
    profile = build_reference_profile(dataset.X, dataset.schema, np.zeros(len(values)))
    counts = count_values(profile["features"]["city"], np.array(["new", "a", None], dtype=object))
    assert (counts[OTHER_CATEGORY], counts["a"], counts["__unknown__"]) == (1, 1, 0)


def test_datetime_profile_bins_by_time_and_reads_text() -> None:
    dataset = build_dataset(_frame(), target="label")
    profile = build_reference_profile(dataset.X, dataset.schema, np.zeros(len(dataset.X)))
    day = profile["features"]["day"]
    assert day["kind"] == "datetime" and profile["format"] == 2
    assert len(day["edges"]) == 9 and sum(day["counts"]) == len(dataset.X)
    counts = count_values(day, np.array(["2030-01-01", "1990-01-01", "bad", None], dtype=object))
    assert (counts["9"], counts["0"], counts["missing"]) == (1, 1, 2)


def test_old_specs_and_schemas_load_and_newer_ones_are_refused() -> None:
    old_spec = {
        "format": 1,
        "numeric": [{"name": "x", "median": 0.0, "mean": 0.0, "scale": 1.0}],
        "categorical": [{"name": "c", "fill": "a", "categories": ["a", "b"]}],
        "output_columns": ["x", "c=a", "c=b"],
    }
    spec = PreprocessorSpec.from_dict(old_spec)
    assert spec.datetime == () and spec.to_dict() == old_spec
    fast = FastTransform(spec)
    unseen = fast.transform_columns({"x": np.zeros(1), "c": ["z"]})
    assert unseen.matrix.tolist() == [[0.0, 0.0, 0.0]] and unseen.unknown == {"c": 1}
    old_schema = {
        "format": 1, "target": "y", "task": "regression", "classes": [],
        "features": [{"name": "x", "kind": "numeric", "categories": [], "minimum": 0.0,
                      "maximum": 1.0}],
    }  # fmt: skip
    assert Schema.from_dict(old_schema).to_dict() == old_schema
    with pytest.raises(BundleError, match="format 3"):
        Schema.from_dict({**old_schema, "format": 3})
    with pytest.raises(BundleError, match="format 3"):
        PreprocessorSpec.from_dict({**old_spec, "format": 3})


_ANY_VALUE = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.dates().map(str),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(values=st.lists(_ANY_VALUE, min_size=1, max_size=4))
def test_any_request_value_is_served_or_refused_cleanly(values: list[Any]) -> None:
    from kubeloop.serving._observe import Observer

    fast, profile = _FUZZ
    columns = {"day": values, "city": values, "x": np.zeros(len(values))}
    row = {"day": values[0], "city": values[0], "x": 0.0}
    single = fast.transform_row(row)  # None (the general path decides) or a result
    try:
        first = fast.transform_columns({"day": values[:1], "city": values[:1], "x": np.zeros(1)})
    except DataValidationError:
        assert single is None
    else:
        assert single is None or np.array_equal(single.matrix, first.matrix)
    try:
        result = fast.transform_columns(columns)
    except DataValidationError:
        return
    assert np.isfinite(result.matrix).all()  # every accepted value is a finite model input
    observer = Observer("m", "v1", profile, ("a", "b"))  # the server counts accepted requests
    observer.inputs(columns, len(values))
    observer.input_row(row)


def _fuzz_fixture() -> tuple[FastTransform, dict[str, Any]]:
    frame = _frame()
    frame["city"] = np.array(["a", "b", "c"] * 80, dtype=object)
    frame.loc[:4, "city"] = ["r1", "r2", "r3", "r4", "r5"]
    dataset = build_dataset(frame, target="label")
    _, spec = fit_preprocessor(dataset.X, dataset.schema)
    profile = build_reference_profile(dataset.X, dataset.schema, np.zeros(len(frame)))
    return FastTransform(spec), profile


_FUZZ = _fuzz_fixture()


def test_monitoring_counts_payload_rows_of_dates_and_other_categories() -> None:
    from kubeloop.monitoring.report import compare_profile, count_frame, row_log_likelihood

    frame = _frame()
    frame["city"] = np.array(["a", "b", "c"] * 80, dtype=object)
    frame.loc[:4, "city"] = ["r1", "r2", "r3", "r4", "r5"]
    dataset = build_dataset(frame, target="label")
    profile = build_reference_profile(dataset.X, dataset.schema, np.zeros(len(frame)))
    logged = pd.DataFrame(  # as a payload log holds requests: ISO text, timestamps, raw values
        {
            "day": ["2030-01-01", "2022-03-01T10:00:00+02:00", None, "soon"] * 30,
            "city": ["new", "a", "r1", None] * 30,
            "x": [0.0, 1.0, None, 2.0] * 30,
        }
    )
    counts = count_frame(profile, logged)
    day = counts["day"]
    assert day[str(len(profile["features"]["day"]["edges"]))] == 30  # after training: last bin
    assert day["missing"] == 60  # null, and text that is not a date
    assert counts["city"][OTHER_CATEGORY] == 60 and counts["city"]["__unknown__"] == 0
    stamps = logged.assign(day=pd.to_datetime(logged["day"].where(logged["day"] != "soon"),
                                              format="ISO8601", utc=True))  # fmt: skip
    assert sum(count_frame(profile, stamps)["day"].values()) == len(logged)
    report = compare_profile(profile, counts)
    kinds = {f.feature: (f.kind, f.test) for f in report.features}
    assert kinds["day"] == ("datetime", "ks") and kinds["city"] == ("categorical", "chi2")
    assert np.isfinite(row_log_likelihood(profile, logged)).all()
