"""Big tables on one machine: the training reader, statistics without a transform, row-chunked
matrices, the baselines' sample, progress estimates (issue 25, items 3-5)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle.profile import build_reference_profile, profile_features
from kubeloop.bundle.schema import normalize_category
from kubeloop.console import Meter, time_left
from kubeloop.data import build_dataset, load_dataset, split_dataset, split_parts
from kubeloop.data._read import read_for_training
from kubeloop.data.synth import generate_churn, generate_seasonal
from kubeloop.features import FastTransform, fit_preprocessor, preprocessor_spec
from kubeloop.features._fast import CHUNK_ROWS
from kubeloop.training.candidates import baseline_sample
from kubeloop.training.distributed import boosting_time_left
from kubeloop.training.workflow import prepare_inputs, trained_on_text


@pytest.fixture(scope="module")
def churn() -> pd.DataFrame:
    return generate_churn(3000, seed=5)


@pytest.fixture(scope="module")
def seasonal() -> pd.DataFrame:
    """A date column (ISO text, some blank) and a store column with rare values (``__other__``)."""
    return generate_seasonal(3000, seed=5)


def _dataset_from(path: Path) -> tuple[pd.DataFrame, list[str]]:
    ds = load_dataset(path, target="churned")
    return ds.X, list(ds.notes)


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("table", "target", "text"), [("churn", "churned", "contract"), ("seasonal", "busy", "date")]
)
def test_training_reader_gives_the_dataset_pandas_gives(
    table: str, target: str, text: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = tmp_path / f"{table}.csv"
    request.getfixturevalue(table).to_csv(path, index=False)
    frame, digest = read_for_training(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert isinstance(frame[text].dtype, pd.ArrowDtype)  # text stays in Arrow memory
    ours = build_dataset(frame, target=target, data_hash=digest)
    theirs = build_dataset(pd.read_csv(path), target=target, data_hash=digest)
    pd.testing.assert_frame_equal(ours.X, theirs.X)
    assert np.array_equal(ours.y, theirs.y)
    assert ours.schema == theirs.schema and ours.notes == theirs.notes


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # a later block holds text where the first block held numbers: pandas reads it
        ("late_text.csv", "n,label\n" + "1,a\n" * 200_000 + "x,b\n"),
        ("duplicate.csv", "a,a,label\n1,2,x\n3,4,y\n"),  # pandas renames: "a", "a.1"
        ("dates.csv", "d,t,label\n2024-01-02,10:00:00,x\n2024-02-03,11:30:00,y\n"),
        ("missing.csv", "a,b,label\nNone,<NA>,x\nNA,1,y\n,2,y\n"),  # pandas' markers
        ("bom.csv", "\ufeffa,label\n1,x\n2,y\n"),
    ],
)
def test_training_reader_reads_what_pandas_reads(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode())
    frame, digest = read_for_training(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    expected = pd.read_csv(io.BytesIO(path.read_bytes()))
    assert list(frame.columns) == list(expected.columns)
    for column in expected.columns:
        got = frame[column].astype(object).where(frame[column].notna(), None).tolist()
        want = expected[column].astype(object).where(expected[column].notna(), None).tolist()
        assert [normalize_category(v) for v in got] == [normalize_category(v) for v in want]


def test_training_reader_gzip_and_progress(churn: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "churn.csv.gz"
    with gzip.open(path, "wt") as handle:
        churn.to_csv(handle, index=False)
    lines: list[str] = []
    frame, digest = read_for_training(path, progress=lines.append)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(frame) == len(churn) and lines == []  # quick: nothing to report


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(("table", "target"), [("churn", "churned"), ("seasonal", "busy")])
def test_statistics_without_a_transform_equal_sklearn(
    table: str, target: str, request: pytest.FixtureRequest
) -> None:
    ds = build_dataset(request.getfixturevalue(table), target=target)
    splits = split_dataset(ds, seed=0)
    _, expected = fit_preprocessor(splits.train.X, ds.schema)
    parts = split_parts(ds, seed=0)
    for spec in (
        preprocessor_spec(splits.train.X, ds.schema),
        preprocessor_spec(ds.X, ds.schema, rows=parts["train"].rows),
    ):
        assert spec.output_columns == expected.output_columns
        assert spec.categorical == expected.categorical
        assert [(d.name, d.part_names) for d in spec.datetime] == [
            (d.name, d.part_names) for d in expected.datetime
        ]
        ours_steps = [*spec.numeric, *(p for d in spec.datetime for p in d.parts)]
        their_steps = [*expected.numeric, *(p for d in expected.datetime for p in d.parts)]
        for ours, theirs in zip(ours_steps, their_steps, strict=True):
            assert ours.name == theirs.name and ours.median == theirs.median
            assert ours.mean == pytest.approx(theirs.mean, rel=1e-12, abs=1e-12)
            assert ours.scale == pytest.approx(theirs.scale, rel=1e-12)
    if table == "seasonal":  # what this table is here for
        assert expected.datetime and any("__other__" in c.categories for c in expected.categorical)


def test_most_frequent_tie_takes_the_smallest() -> None:
    # enough rows per category for the category cap, few distinct values for the id rule
    column = ["b", "a"] * 20 + ["c"] * 10 + ["d"] * 6 + [None] * 4
    frame = pd.DataFrame(
        {"x": np.random.default_rng(0).normal(size=60), "c": column, "y": [0, 1] * 30}
    )
    ds = build_dataset(frame, target="y", min_rows=1)
    _, expected = fit_preprocessor(ds.X, ds.schema)
    assert preprocessor_spec(ds.X, ds.schema).categorical == expected.categorical
    assert expected.categorical[0].fill == "a"


def test_matrices_by_rows_and_chunks_equal_the_copied_parts() -> None:
    ds = build_dataset(generate_churn(CHUNK_ROWS + 1000, seed=2), target="churned")
    copied = split_dataset(ds, seed=0)
    spec, by_copy = prepare_inputs(ds.schema, {p: getattr(copied, p) for p in ("train", "test")})
    spec_rows, by_rows = prepare_inputs(ds.schema, split_parts(ds, seed=0))
    assert spec_rows.output_columns == spec.output_columns
    for part in ("train", "test"):
        assert by_rows[part][0].dtype == np.float32
        assert np.array_equal(by_rows[part][0], by_copy[part][0])
        assert np.array_equal(by_rows[part][1], by_copy[part][1])
    exact = FastTransform(spec).transform(copied.test.X)  # float64, as sklearn's
    assert np.array_equal(exact.astype(np.float32), by_rows["test"][0])


def test_profile_counts_each_distinct_value_once_and_as_before(churn: pd.DataFrame) -> None:
    ds = build_dataset(churn, target="churned")
    X = ds.X.copy()
    messy = X["region"].to_numpy(dtype=object).copy()
    messy[:4] = [" North ", None, float("nan"), "  "]
    X["region"] = messy
    rows = np.arange(0, len(X), 2)
    features = profile_features(X, ds.schema, rows=rows)
    region = features["region"]
    expected: dict[str, int] = {}
    for value in messy[rows]:
        key = normalize_category(value)
        expected[key or "<missing>"] = expected.get(key or "<missing>", 0) + 1
    assert region["missing"] == expected.pop("<missing>")
    assert {k: v for k, v in region["categories"].items() if v} == expected
    whole = build_reference_profile(X.iloc[rows], ds.schema, np.zeros(len(rows)))
    again = build_reference_profile(None, ds.schema, np.zeros(len(rows)), features=features)
    assert json.dumps(whole, sort_keys=True) == json.dumps(again, sort_keys=True)


# --------------------------------------------------------------------------- baselines


def test_baseline_sample_rule() -> None:
    assert baseline_sample(1000, 1000, seed=0) is None
    assert baseline_sample(5000, 0, seed=0) is None  # 0: never sample
    drawn = baseline_sample(10_000, 1000, seed=3)
    assert drawn is not None and len(drawn) == 1000 and len(np.unique(drawn)) == 1000
    assert np.all(np.diff(drawn) > 0) and drawn.max() < 10_000
    assert np.array_equal(drawn, baseline_sample(10_000, 1000, seed=3))  # seeded
    assert not np.array_equal(drawn, baseline_sample(10_000, 1000, seed=4))
    assert trained_on_text({"rows": 1000, "of": 10_000, "sampled": True}) == (
        "1,000 of 10,000 rows (sample)"
    )
    assert trained_on_text({"rows": 10, "of": 10, "sampled": False}) == "10 rows"
    assert trained_on_text(None) == "-"


# --------------------------------------------------------------------------- progress


def test_time_left_is_the_average_rate_so_far() -> None:
    assert time_left(0, 100, 5.0) is None
    assert time_left(25, 100, 10.0) == pytest.approx(30.0)
    assert time_left(100, 100, 10.0) == 0.0


def test_meter_is_quiet_at_first_then_says_rate_and_time_left() -> None:
    now = [0.0]
    lines: list[str] = []
    meter = Meter(lines.append, "loading", 1000, after=3.0, every=10.0, clock=lambda: now[0])
    now[0] = 2.0
    meter.update(100)
    assert lines == []
    now[0] = 4.0
    meter.update(400)
    assert lines == ["loading: 400 of 1,000 rows (40%), 100 rows/s, about 6 s left"]
    now[0] = 8.0
    meter.update(800)  # the next line is due 10 s after the last one
    assert len(lines) == 1
    now[0] = 10.0
    assert meter.finish(1000) == 10.0
    assert lines[-1] == "loading: 1,000 rows in 10.0 s, 100 rows/s"


def test_boosting_time_left_bounds() -> None:
    # best round 10 of 40 done, patience 50: at least 20 more rounds, at most 2000 - 40
    least, most = boosting_time_left(40, 10, patience=50, max_rounds=2000, seconds_per_round=0.5)
    assert (least, most) == (10.0, 980.0)
    assert boosting_time_left(40, 10, patience=None, max_rounds=100, seconds_per_round=1.0) == (
        60.0,
        60.0,
    )
    assert boosting_time_left(1990, 1980, patience=50, max_rounds=2000, seconds_per_round=1.0) == (
        10.0,
        10.0,
    )


def test_features_are_not_a_view_of_the_callers_frame() -> None:
    frame = pd.DataFrame(
        {"a": np.arange(60.0) * 1.5, "b": np.r_[np.arange(59.0), np.nan], "label": ["p", "q"] * 30}
    )
    before = frame.copy()
    ds = build_dataset(frame, target="label")
    ds.X["a"].to_numpy()[:] = -1.0  # the features are put together without a copy
    pd.testing.assert_frame_equal(frame, before)
