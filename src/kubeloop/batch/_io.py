"""Chunked reading and writing of CSV and Parquet tables, local or any fsspec URL (``s3://``).

Memory stays bounded by the chunk: CSV is parsed ``chunk_rows`` rows at a time; Parquet is read
batch by batch (one row group at most in memory besides the batch); output chunks are appended
as they come. Categorical features are read as text (CSV) or as dictionary-encoded columns
(Parquet, which pandas turns into ``Categorical``: each distinct value is handled once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from kubeloop.data._read import _suffix_format
from kubeloop.errors import DataValidationError

__all__ = ["ChunkReader", "ChunkWriter"]


def _open(path: str, mode: str) -> Any:
    try:
        return fsspec.open(path, mode).open()
    except FileNotFoundError:
        raise DataValidationError(
            f"Cannot read '{path}': the file does not exist. Check the path (--data)."
        ) from None
    except (OSError, ValueError, ImportError) as exc:
        raise DataValidationError(f"Cannot open '{path}': {exc}.") from None


class ChunkReader:
    """Read a table ``chunk_rows`` rows at a time.

    Args:
        path: ``.csv`` (optionally compressed) or ``.parquet`` path or URL.
        chunk_rows: Rows per chunk.
        text_columns: Columns read as text (CSV) or dictionary-encoded (Parquet).
        raw_columns: Columns read as text from CSV (a stable type in every chunk) and as
            stored from Parquet.

    Attributes:
        columns: Every column name of the table, in file order.
        total_rows: Row count when the format records it (Parquet), else ``None``.
    """

    def __init__(
        self,
        path: str,
        *,
        chunk_rows: int,
        text_columns: Sequence[str] = (),
        raw_columns: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.format = _suffix_format(path)
        self.chunk_rows = chunk_rows
        self._handle = _open(path, "rb")
        self._text = list(text_columns)
        self._raw = list(raw_columns)
        self.total_rows: int | None = None
        try:
            if self.format == "parquet":
                self._parquet = pq.ParquetFile(self._handle)
                self.columns = list(self._parquet.schema_arrow.names)
                stored = [name for name in self._text if name in self.columns]
                if stored:  # text read as codes + distinct values (no string object per row)
                    self._parquet = pq.ParquetFile(self._handle, read_dictionary=stored)
                self.total_rows = self._parquet.metadata.num_rows
            else:
                self._compression = _compression(path)
                header = pd.read_csv(self._handle, nrows=0, compression=self._compression)
                self.columns = [str(c) for c in header.columns]
                self._handle.seek(0)
        except Exception as exc:  # parsers raise many types (ArrowInvalid, ParserError, ...)
            self.close()
            raise DataValidationError(
                f"Cannot read '{path}' as {self.format.upper()}: {type(exc).__name__}: {exc}."
            ) from None

    def chunks(self, columns: Sequence[str]) -> Iterator[pd.DataFrame]:
        """The selected ``columns`` of the table, one frame per chunk, in file order, each indexed
        from 0."""
        text = [c for c in self._text if c in columns]
        try:
            if self.format == "parquet":
                # Text columns stored as text are dictionary-encoded here (stored ones are read
                # so): pandas then holds codes + the distinct values, not one object per row.
                for table in self._parquet_tables(list(columns)):
                    for name in text:
                        index = table.schema.get_field_index(name)
                        column = table.column(index)
                        if not pa.types.is_dictionary(column.type):
                            table = table.set_column(
                                index, name, column.cast(pa.string()).dictionary_encode()
                            )
                    yield table.to_pandas()
            else:
                for frame in pd.read_csv(
                    self._handle,
                    usecols=list(columns),
                    dtype={name: str for name in [*text, *self._raw] if name in columns},
                    chunksize=self.chunk_rows,
                    compression=self._compression,
                ):
                    frame.index = pd.RangeIndex(len(frame))  # rows of the chunk, as Parquet's
                    yield frame
        except DataValidationError:
            raise
        except Exception as exc:
            raise DataValidationError(
                f"Cannot read '{self.path}' as {self.format.upper()}: {type(exc).__name__}: "
                f"{exc}. Fix or remove the damaged part of the file."
            ) from None

    def _parquet_tables(self, columns: list[str]) -> Iterator[pa.Table]:
        """Tables of ``chunk_rows`` rows (the last may be shorter). Dictionary-read columns end
        Arrow's batches at row-group boundaries, so batches are joined and cut here."""
        held: list[pa.RecordBatch] = []
        count = 0
        for batch in self._parquet.iter_batches(
            batch_size=self.chunk_rows, columns=columns, use_threads=True
        ):
            held.append(batch)
            count += batch.num_rows
            while count >= self.chunk_rows:
                table = pa.Table.from_batches(held)
                yield table.slice(0, self.chunk_rows)
                rest = table.slice(self.chunk_rows)
                held, count = rest.to_batches(), rest.num_rows
        if count:
            yield pa.Table.from_batches(held)

    def close(self) -> None:
        """Close the underlying file."""
        with contextlib.suppress(Exception):
            self._handle.close()


def _compression(path: str) -> str | None:
    for suffix, name in ((".gz", "gzip"), (".bz2", "bz2"), (".zip", "zip"), (".xz", "xz")):
        if path.lower().endswith(suffix):
            return name
    return None


class ChunkWriter:
    """Append Arrow tables to a CSV or Parquet file (format by suffix), local or URL."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.format = _suffix_format(path)
        except DataValidationError:
            raise DataValidationError(
                f"Cannot write '{path}': use a .csv or .parquet output file."
            ) from None
        self._handle = _open(path, "wb")
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (every call must have the same columns)."""
        if self._schema is None:
            self._schema = table.schema
            if self.format == "parquet":
                # Dictionary pages for labels and kept columns, not for probabilities (every
                # value distinct: the dictionary is built, then dropped, at 4x the cost).
                coded = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
                self._parquet = pq.ParquetWriter(
                    self._handle, table.schema, use_dictionary=coded or False
                )
        else:
            table = table.cast(self._schema)
        if self._parquet is not None:
            self._parquet.write_table(table)
        else:  # CSV holds plain values: dictionary columns (labels) as their text
            for index, field in enumerate(table.schema):
                if pa.types.is_dictionary(field.type):
                    column = table.column(index).cast(field.type.value_type)
                    table = table.set_column(index, field.name, column)
            options = pa_csv.WriteOptions(include_header=self._handle.tell() == 0)
            pa_csv.write_csv(table, self._handle, write_options=options)

    def close(self) -> None:
        """Finish the file (Parquet footer) and close it."""
        if self._parquet is not None:
            self._parquet.close()
        self._handle.close()
