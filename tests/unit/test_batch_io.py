"""Chunked table I/O of batch scoring, and drift counts of dictionary-encoded columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from kubeloop.batch import BatchOptions
from kubeloop.batch._io import ChunkReader, ChunkWriter
from kubeloop.bundle.profile import build_reference_profile
from kubeloop.data import build_dataset
from kubeloop.data.synth import generate_churn
from kubeloop.errors import ConfigError, DataValidationError
from kubeloop.monitoring.report import count_frame


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_chunks_cover_the_table_in_order(tmp_path: Path, suffix: str) -> None:
    frame = generate_churn(1_050, seed=2)
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path, row_group_size=200)
    else:
        frame.to_csv(path, index=False)
    reader = ChunkReader(str(path), chunk_rows=250, text_columns=["contract"])
    assert reader.columns == [str(c) for c in frame.columns]
    assert reader.total_rows == (1_050 if suffix == ".parquet" else None)
    chunks = list(reader.chunks(["customer_id", "contract", "tenure_months"]))
    reader.close()
    assert [len(c) for c in chunks] == [250, 250, 250, 250, 50]
    joined = pd.concat(chunks, ignore_index=True)
    assert list(joined.columns) == ["customer_id", "contract", "tenure_months"]
    assert joined["customer_id"].astype(str).tolist() == frame["customer_id"].astype(str).tolist()
    np.testing.assert_array_equal(
        joined["tenure_months"].to_numpy(float), frame["tenure_months"].to_numpy(float)
    )
    if suffix == ".parquet":  # text columns come dictionary-encoded
        assert isinstance(chunks[0]["contract"].dtype, pd.CategoricalDtype)


def test_writer_appends_csv_and_parquet(tmp_path: Path) -> None:
    for name in ("o.csv", "o.parquet"):
        writer = ChunkWriter(str(tmp_path / name))
        for start in (0, 3):
            labels = pa.DictionaryArray.from_arrays(
                pa.array([0, 1, None], type=pa.int32()), pa.array(["No", "Yes"])
            )
            writer.write(pa.table({"id": [start, start + 1, start + 2], "label": labels}))
        writer.close()
        path = tmp_path / name
        read = pd.read_csv(path) if name.endswith(".csv") else pd.read_parquet(path)
        assert read["id"].tolist() == [0, 1, 2, 3, 4, 5]
        assert read["label"].astype(object).where(read["label"].notna(), None).tolist() == [
            "No", "Yes", None, "No", "Yes", None,
        ]  # fmt: skip


def test_bad_paths_and_options(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="does not exist"):
        ChunkReader(str(tmp_path / "absent.csv"), chunk_rows=10)
    with pytest.raises(DataValidationError, match="unknown file format"):
        ChunkReader(str(tmp_path / "x.txt"), chunk_rows=10)
    with pytest.raises(DataValidationError, match=r"use a \.csv or \.parquet output"):
        ChunkWriter(str(tmp_path / "out.json"))
    with pytest.raises(ConfigError, match="exactly one of"):
        BatchOptions(data="a.csv", out="b.csv")
    with pytest.raises(ConfigError, match="--chunk-rows"):
        BatchOptions(data="a.csv", out="b.csv", model_dir=tmp_path, chunk_rows=0)
    with pytest.raises(ConfigError, match="is the input file"):
        BatchOptions(data="a.csv", out="a.csv", model_dir=tmp_path)


def test_drift_counts_of_categoricals_equal_the_object_path() -> None:
    dataset = build_dataset(generate_churn(600, seed=4), target="churned")
    profile = build_reference_profile(dataset.X, dataset.schema, np.linspace(0, 1, 600))
    current = build_dataset(generate_churn(300, seed=9), target="churned").X.copy()
    name = dataset.schema.categorical_features[0]
    values = current[name].astype(object).to_numpy()
    values[:4], values[4:6] = None, "never seen"
    current[name] = values
    plain = count_frame(profile, current)
    encoded = current.copy()
    encoded[name] = pd.Categorical(values)
    assert count_frame(profile, encoded) == plain
