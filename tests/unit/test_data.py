"""Unit tests of kubeloop.data: reading, kind inference, validation, task, splitting."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kubeloop.bundle.schema import FeatureInfo, Schema, normalize_category
from kubeloop.data import (
    Dataset,
    build_dataset,
    load_dataset,
    read_table,
    split_dataset,
    split_rows,
)
from kubeloop.errors import BundleError, ConfigError, DataValidationError

N = 60


def _frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    """A small mixed table with a binary text target."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(50.0, 10.0, n),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "senior": rng.integers(0, 2, n),
            "paperless": rng.choice(["Yes", "No"], n),
            "label": np.where(np.arange(n) % 4 == 0, "Yes", "No"),
        }
    )


def _kinds(ds: Dataset) -> dict[str, str]:
    return {f.name: f.kind for f in ds.schema.features}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (float("nan"), None),
        (np.nan, None),
        (pd.NA, None),
        (1.0, "1"),
        (np.float64(3.0), "3"),
        (np.float32(2.0), "2"),
        (2.5, "2.5"),
        (0, "0"),
        (np.int64(7), "7"),
        (True, "True"),
        ("  Yes ", "Yes"),
        ("", None),
        ("   ", None),
        ("One year", "One year"),
        (float("inf"), "inf"),
    ],
)
def test_normalize_category(value: object, expected: str | None) -> None:
    assert normalize_category(value) == expected


def test_kinds_are_inferred() -> None:
    ds = build_dataset(_frame(), target="label")
    assert _kinds(ds) == {
        "amount": "numeric",
        "plan": "categorical",
        "senior": "binary",
        "paperless": "binary",
    }
    features = {f.name: f for f in ds.schema.features}
    assert features["senior"].categories == ("0", "1")
    assert features["plan"].categories == ("basic", "plus", "pro")
    assert features["amount"].minimum == pytest.approx(ds.X["amount"].min())
    assert features["amount"].maximum == pytest.approx(ds.X["amount"].max())
    assert ds.schema.numeric_features == ("amount",)
    assert ds.schema.categorical_features == ("plan", "senior", "paperless")
    assert ds.X["amount"].dtype == np.float64
    assert ds.X["senior"].dtype == object
    assert set(ds.X["senior"]) == {"0", "1"}
    assert list(ds.X.columns) == list(ds.schema.feature_names)


def test_numeric_text_is_coerced_and_counted() -> None:
    frame = _frame()
    text = frame["amount"].round(2).astype(str).astype(object)
    text[[3, 10, 20]] = " "
    text[30] = "n/a"
    frame["charges"] = text
    ds = build_dataset(frame, target="label")
    assert _kinds(ds)["charges"] == "numeric"
    assert int(ds.X["charges"].isna().sum()) == 4
    assert any("'charges' has 4 values that are not numbers" in n for n in ds.notes), ds.notes
    assert ds.X["charges"].iloc[0] == pytest.approx(round(frame["amount"].iloc[0], 2))


def test_mostly_text_column_stays_categorical() -> None:
    frame = _frame()
    frame["code"] = [str(i % 7) if i % 3 else f"x{i % 5}" for i in range(N)]
    ds = build_dataset(frame, target="label")
    assert _kinds(ds)["code"] == "categorical"
    assert ds.X["code"].isna().sum() == 0


def test_missing_values_are_kept() -> None:
    frame = _frame()
    frame.loc[[1, 2], "amount"] = np.nan
    frame.loc[[4], "plan"] = None
    ds = build_dataset(frame, target="label")
    assert int(ds.X["amount"].isna().sum()) == 2
    assert ds.X["plan"].iloc[4] is None


@pytest.mark.parametrize(
    "ids",
    [
        [f"CUST-{i:04d}" for i in range(N)],  # unique text
        list(np.random.default_rng(1).permutation(N) + 1000),  # shuffled row counter
        list(range(0, 3 * N, 3)),  # increasing in file order
    ],
)
def test_id_like_columns_are_dropped(ids: list[object]) -> None:
    frame = _frame()
    frame.insert(0, "row_id", ids)
    ds = build_dataset(frame, target="label")
    assert "row_id" not in ds.X.columns
    assert any("'row_id'" in n and "id" in n for n in ds.notes), ds.notes


def test_unique_measurements_are_not_ids() -> None:
    frame = _frame()
    frame["weight"] = np.random.default_rng(2).normal(70, 5, N)  # unique floats: a feature
    frame["score"] = np.random.default_rng(3).choice(10_000, N, replace=False)  # gaps, unsorted
    ds = build_dataset(frame, target="label")
    assert _kinds(ds)["weight"] == "numeric"
    assert _kinds(ds)["score"] == "numeric"


@pytest.mark.parametrize("value", [5, "same"])
def test_constant_column_is_dropped_with_a_note(value: object) -> None:
    frame = _frame()
    frame["flat"] = value
    ds = build_dataset(frame, target="label")
    assert "flat" not in ds.X.columns
    assert any("'flat' has one value only" in n for n in ds.notes)


@pytest.mark.parametrize(
    ("target_values", "task", "classes"),
    [
        (lambda i: "Yes" if i % 4 == 0 else "No", "classification", ("No", "Yes")),
        (lambda i: i % 3, "classification", ("0", "1", "2")),
        (lambda i: float(i % 2), "classification", ("0", "1")),
        (lambda i: i % 4 == 0, "classification", ("False", "True")),
        (lambda i: i * 1.37 + 0.01, "regression", ()),
        (lambda i: i % 25, "regression", ()),  # more than 20 distinct numbers
    ],
)
def test_task_inference(target_values: object, task: str, classes: tuple[str, ...]) -> None:
    frame = _frame()
    frame["label"] = [target_values(i) for i in range(N)]  # type: ignore[operator]
    ds = build_dataset(frame, target="label")
    assert ds.schema.task == task
    assert ds.schema.classes == classes
    if task == "classification":
        assert ds.y.dtype == np.int64
        decoded = [ds.schema.classes[c] for c in ds.y]
        assert decoded == [normalize_category(v) for v in frame["label"]]
    else:
        assert ds.y.dtype == np.float64
        np.testing.assert_allclose(ds.y, frame["label"].astype(float))
    assert any(task in n for n in ds.notes)


def test_task_override() -> None:
    frame = _frame()
    frame["label"] = np.arange(N) % 3
    ds = build_dataset(frame, target="label", task="regression")
    assert ds.schema.task == "regression"
    assert ds.schema.classes == ()
    np.testing.assert_array_equal(ds.y, np.arange(N) % 3)
    frame["label"] = np.arange(N) * 0.5 % 3.0
    ds = build_dataset(frame, target="label", task="classification")
    assert ds.schema.classes == ("0", "0.5", "1", "1.5", "2", "2.5")


def test_regression_on_text_target_is_refused() -> None:
    with pytest.raises(DataValidationError, match=r"Target 'label' is not numeric.*regression"):
        build_dataset(_frame(), target="label", task="regression")


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ConfigError, match="task='ranking' is not valid"):
        build_dataset(_frame(), target="label", task="ranking")  # type: ignore[arg-type]


def test_many_text_values_need_an_explicit_task() -> None:
    frame = _frame()
    frame["label"] = [f"c{i % 30}" for i in range(N)]
    with pytest.raises(DataValidationError, match=r"30 distinct text values.*'classification'"):
        build_dataset(frame, target="label")


def test_missing_target_names_columns_and_suggests() -> None:
    frame = _frame().rename(columns={"label": "Churn"})
    with pytest.raises(DataValidationError, match=r"'churn' is not in the data") as info:
        build_dataset(frame, target="churn")
    message = str(info.value)
    assert "Did you mean 'Churn'" in message
    assert "'amount'" in message and "'plan'" in message


def test_single_class_is_refused() -> None:
    frame = _frame()
    frame["label"] = "No"
    with pytest.raises(DataValidationError, match=r"'label' has one class only \('No'"):
        build_dataset(frame, target="label")


def test_constant_regression_target_is_refused() -> None:
    frame = _frame()
    frame["label"] = 3.5
    with pytest.raises(DataValidationError, match="'label' has one value only"):
        build_dataset(frame, target="label", task="regression")


def test_too_few_rows_are_refused() -> None:
    with pytest.raises(DataValidationError, match="has 20 rows with a target; at least 50"):
        build_dataset(_frame(20), target="label")
    assert build_dataset(_frame(20), target="label", min_rows=10).X.shape[0] == 20


def test_rows_without_target_are_dropped() -> None:
    frame = _frame()
    frame.loc[[0, 5, 7], "label"] = None
    frame.loc[9, "label"] = "  "
    ds = build_dataset(frame, target="label")
    assert len(ds.y) == N - 4 == len(ds.X)
    assert any("4 rows with a missing target 'label' were dropped" in n for n in ds.notes)


def test_all_missing_target_is_refused() -> None:
    frame = _frame()
    frame["label"] = np.nan
    with pytest.raises(DataValidationError, match="Target column 'label' has no values"):
        build_dataset(frame, target="label")


@pytest.mark.parametrize("empty", [np.nan, None, " "])
def test_all_null_column_is_refused(empty: object) -> None:
    frame = _frame()
    frame["notes"] = empty
    with pytest.raises(DataValidationError, match=r"Column 'notes' has no values.*drop it"):
        build_dataset(frame, target="label")


def test_no_features_left_is_refused() -> None:
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(N)], "flat": 1, "label": _frame()["label"]})
    with pytest.raises(DataValidationError, match="No feature columns are left"):
        build_dataset(frame, target="label")


def test_unsupported_column_type_is_refused() -> None:
    frame = _frame()
    frame["signup"] = pd.to_timedelta(np.arange(N), unit="D")  # dates are features, spans not
    with pytest.raises(DataValidationError, match="Column 'signup' has type timedelta64"):
        build_dataset(frame, target="label")


@pytest.mark.parametrize(
    ("values", "holds"),
    [
        ([[1, 2], [3]], "lists"),
        ([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], "structs"),
        ([b"\x00\x01", b"\xff"], "binary data"),
    ],
)
@pytest.mark.parametrize("column", ["tags", "label"])
def test_parquet_list_struct_and_binary_columns_are_refused_by_name(
    tmp_path: Path, values: list[object], holds: str, column: str
) -> None:
    frame = _frame()
    frame[column] = [values[i % len(values)] for i in range(len(frame))]
    path = tmp_path / "nested.parquet"
    frame.to_parquet(path)  # pyarrow writes list / struct / binary column types
    role = "target" if column == "label" else "feature"
    with pytest.raises(
        DataValidationError, match=rf"Column '{column}' holds {holds} .* as a {role}"
    ):
        load_dataset(path, target="label")


def test_mixed_text_and_numbers_are_still_accepted() -> None:
    frame = _frame()
    frame["code"] = [1 if i % 2 else f"c{i % 5}" for i in range(len(frame))]
    assert "code" in build_dataset(frame, target="label").schema.feature_names


LABELS = ["no", "NO", "Yes", "YES", "yes", " yes ", "No"]


def test_labels_differing_only_in_case_or_spaces_are_refused_with_the_fix() -> None:
    frame = _frame().assign(label=[LABELS[i % len(LABELS)] for i in range(N)])
    with pytest.raises(DataValidationError) as caught:
        build_dataset(frame, target="label")
    message = str(caught.value)
    assert "'NO', 'No', 'no'" in message and "' yes ', 'YES', 'Yes', 'yes'" in message
    assert "--normalize-labels" in message


def test_normalize_labels_merges_each_group_into_its_most_frequent_spelling() -> None:
    labels = ["yes"] * 30 + ["Yes "] * 5 + ["YES"] * 5 + ["No"] * 15 + ["no"] * 5
    frame = _frame().assign(label=labels)
    dataset = build_dataset(frame, target="label", normalize_labels=True)
    assert dataset.schema.classes == ("No", "yes")
    assert np.bincount(dataset.y).tolist() == [20, 40]
    assert any("were merged" in note and "-> 'yes'" in note for note in dataset.notes)


def test_distinct_labels_and_numeric_targets_are_not_merged() -> None:
    frame = _frame()
    assert build_dataset(frame, target="label").schema.classes == ("No", "Yes")
    numeric = frame.assign(label=[" 1", "1", "0", "0 "] * (N // 4))
    assert build_dataset(numeric, target="label").schema.classes == ("0", "1")


def test_infinite_values_become_missing() -> None:
    frame = _frame()
    frame.loc[[2, 3], "amount"] = np.inf
    ds = build_dataset(frame, target="label")
    assert int(ds.X["amount"].isna().sum()) == 2
    assert any("'amount' has 2 infinite values" in n for n in ds.notes)


def test_callers_frame_is_untouched() -> None:
    frame = _frame()
    frame["charges"] = frame["amount"].astype(str)
    before = frame.copy()
    ds = build_dataset(frame, target="label")
    ds.X.loc[0, "amount"] = -1.0
    pd.testing.assert_frame_equal(frame, before)


def test_duplicate_column_names_are_refused() -> None:
    frame = _frame()
    frame.columns = ["amount", "amount", "senior", "paperless", "label"]
    with pytest.raises(DataValidationError, match=r"\['amount'\] appear more than once"):
        build_dataset(frame, target="label")


def test_frame_hash_is_stable_and_content_based() -> None:
    one = build_dataset(_frame(), target="label").data_hash
    assert one == build_dataset(_frame(), target="label").data_hash
    assert len(one) == 64
    assert one != build_dataset(_frame(seed=1), target="label").data_hash
    assert build_dataset(_frame(), target="label", data_hash="abc").data_hash == "abc"


# --------------------------------------------------------------------------- schema


def test_schema_round_trip() -> None:
    schema = build_dataset(_frame(), target="label").schema
    restored = Schema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert restored == schema
    assert restored.classes == ("No", "Yes")


def test_feature_info_is_numeric() -> None:
    assert FeatureInfo("a", "numeric").is_numeric
    assert not FeatureInfo("b", "binary", categories=("0", "1")).is_numeric


@pytest.mark.parametrize(
    "broken",
    [
        {"target": "y", "task": "ranking", "features": []},
        {"target": "y", "task": "regression", "features": [{"name": "a", "kind": "date"}]},
        {"task": "regression", "features": []},
    ],
)
def test_schema_from_bad_dict(broken: dict[str, object]) -> None:
    with pytest.raises(BundleError, match=r"schema\.json"):
        Schema.from_dict(broken)


# --------------------------------------------------------------------------- reading


def test_read_csv_and_parquet(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    frame.to_csv(tmp_path / "d.csv.gz", index=False)
    for name in ("d.csv", "d.parquet", "d.csv.gz"):
        read = read_table(tmp_path / name)
        pd.testing.assert_frame_equal(read, frame, check_dtype=False)


def test_load_dataset_hashes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    _frame().to_csv(path, index=False)
    ds = load_dataset(path, target="label")
    assert ds.data_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.schema.task == "classification"


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.csv", None, "does not exist"),
        ("data.xlsx", b"a,b\n1,2\n", "unknown file format"),
        ("empty.csv", b"", "the file is empty"),
        ("header.csv", b"a,b,label\n", "no data rows"),
        ("broken.parquet", b"this is not parquet", "as PARQUET"),
        ("binary.csv", b"\xff\xfe\x00\x01\x80\x81" * 10, "as CSV"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes | None, match: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataValidationError, match=match) as info:
        read_table(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataValidationError, match=match):
        load_dataset(path, target="label")


def test_fsspec_urls_are_read(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    _frame().to_parquet(path, index=False)
    ds = load_dataset(f"file://{path}", target="label")
    assert ds.data_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataValidationError, match="does not exist"):
        read_table(f"file://{tmp_path}/nothing.csv")


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "table.csv"
    folder.mkdir()
    with pytest.raises(DataValidationError, match="is a directory"):
        read_table(folder)


# --------------------------------------------------------------------------- splitting


def _split_frame(n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame(
        {
            "key": rng.normal(size=n),  # unique floats: tells rows apart
            "plan": rng.choice(["a", "b", "c"], n),
            "label": rng.choice(["x", "y", "z"], n, p=[0.7, 0.2, 0.1]),
        }
    )


def test_split_is_deterministic_disjoint_and_complete() -> None:
    ds = build_dataset(_split_frame(), target="label")
    one, two = split_dataset(ds, seed=7), split_dataset(ds, seed=7)
    other = split_dataset(ds, seed=8)
    for a, b in ((one.train, two.train), (one.validation, two.validation), (one.test, two.test)):
        pd.testing.assert_frame_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)
    assert not one.test.X.equals(other.test.X)
    keys = [set(p.X["key"]) for p in (one.train, one.validation, one.test)]
    assert sum(len(k) for k in keys) == len(ds.y)
    assert set().union(*keys) == set(ds.X["key"])
    assert (len(one.train.y), len(one.validation.y), len(one.test.y)) == (300, 100, 100)
    assert one.schema is ds.schema
    # Rows keep their labels: look each part's rows up in the full dataset.
    label_of = dict(zip(ds.X["key"], ds.y, strict=True))
    assert [label_of[k] for k in one.test.X["key"]] == list(one.test.y)
    # split_rows names the same rows by number (what bench/plain_train.py is given)
    rows = split_rows(ds.y, stratify=True, seed=7)
    for part, numbers in zip((one.train, one.validation, one.test), rows, strict=True):
        assert list(part.X["key"]) == list(ds.X["key"].iloc[numbers])


def test_split_is_stratified() -> None:
    ds = build_dataset(_split_frame(), target="label")
    splits = split_dataset(ds, seed=1)
    overall = np.bincount(ds.y) / len(ds.y)
    for part in (splits.train, splits.validation, splits.test):
        share = np.bincount(part.y, minlength=3) / len(part.y)
        np.testing.assert_allclose(share, overall, atol=0.011)


def test_regression_split() -> None:
    frame = _split_frame()
    frame["label"] = np.arange(len(frame)) * 0.1
    ds = build_dataset(frame, target="label")
    splits = split_dataset(ds, seed=0, test_fraction=0.1, validation_fraction=0.3)
    assert (len(splits.train.y), len(splits.validation.y), len(splits.test.y)) == (300, 150, 50)
    assert splits.train.y.dtype == np.float64


def test_rare_class_cannot_be_split() -> None:
    frame = _split_frame(200)
    frame.loc[:, "label"] = "x"
    frame.loc[:99, "label"] = "y"
    frame.loc[[150, 151], "label"] = "z"
    ds = build_dataset(frame, target="label")
    with pytest.raises(DataValidationError, match=r"'z' \(2 rows\).*at least 5 rows"):
        split_dataset(ds)


def test_too_few_rows_for_three_parts() -> None:
    frame = _split_frame(60)
    frame["label"] = np.arange(60) * 0.5
    ds = build_dataset(frame, target="label")
    with pytest.raises(
        DataValidationError, match="Cannot split 60 rows into train/validation/test"
    ):
        split_dataset(ds, test_fraction=0.495, validation_fraction=0.495)


@pytest.mark.parametrize(("test", "validation"), [(0.0, 0.2), (0.5, 0.5), (1.2, 0.1)])
def test_bad_fractions(test: float, validation: float) -> None:
    ds = build_dataset(_split_frame(), target="label")
    with pytest.raises(ConfigError, match="fraction"):
        split_dataset(ds, test_fraction=test, validation_fraction=validation)


# --------------------------------------------------------------------------- real data


def test_telco(telco_csv: Path) -> None:
    ds = load_dataset(telco_csv, target="Churn")
    assert ds.schema.task == "classification"
    assert ds.schema.classes == ("No", "Yes")
    assert len(ds.y) == len(ds.X) == 7043
    assert "customerID" not in ds.X.columns
    assert any("'customerID'" in n for n in ds.notes)
    assert any("'TotalCharges' has 11 values that are not numbers" in n for n in ds.notes)
    assert int(ds.X["TotalCharges"].isna().sum()) == 11
    kinds = _kinds(ds)
    assert kinds["TotalCharges"] == kinds["tenure"] == "numeric"
    assert kinds["SeniorCitizen"] == "binary"
    assert kinds["Contract"] == "categorical"
    assert int(ds.y.sum()) == 1869  # "Yes"
    splits = split_dataset(ds)
    assert len(splits.test.y) == 1409


def test_housing(housing_csv: Path) -> None:
    ds = load_dataset(housing_csv, target="median_house_value")
    assert ds.schema.task == "regression"
    ocean = next(f for f in ds.schema.features if f.name == "ocean_proximity")
    assert ocean.kind == "categorical"
    assert len(ocean.categories) == 5
    assert int(ds.X["total_bedrooms"].isna().sum()) == 207
    assert len(ds.schema.numeric_features) == 8
