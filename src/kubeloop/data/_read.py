"""Reading a CSV or Parquet file (local path or fsspec URL) and hashing a table's content."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Literal, cast

import pandas as pd

from kubeloop.errors import DataValidationError

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _suffix_format(path: str) -> Literal["csv", "parquet"]:
    lower = path.lower().rstrip("/")
    if lower.endswith(_CSV_SUFFIXES):
        return "csv"
    if lower.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    raise DataValidationError(
        f"Cannot read '{path}': unknown file format. Use a .csv or .parquet file "
        "(the format is chosen by the file name's suffix)."
    )


def _read_bytes(path: str) -> bytes:
    try:
        if "://" in path:
            import fsspec

            with fsspec.open(path, "rb") as handle:
                return cast(bytes, handle.read())
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise DataValidationError(
            f"Cannot read '{path}': the file does not exist. Check the path (--data)."
        ) from exc
    except IsADirectoryError as exc:
        raise DataValidationError(
            f"Cannot read '{path}': it is a directory. Point to one .csv or .parquet file."
        ) from exc
    except (OSError, ImportError, ValueError) as exc:
        raise DataValidationError(
            f"Cannot read '{path}': {exc}. Check the path and the access rights."
        ) from exc


def _parse(raw: bytes, path: str) -> pd.DataFrame:
    fmt = _suffix_format(path)
    if not raw:
        raise DataValidationError(f"Cannot read '{path}': the file is empty.")
    try:
        if fmt == "csv":
            compression = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz"}.get(
                Path(path).suffix.lower()
            )
            frame = pd.read_csv(io.BytesIO(raw), compression=compression, low_memory=False)
        else:
            frame = pd.read_parquet(io.BytesIO(raw))
    except Exception as exc:  # parsers raise many types (ArrowInvalid, ParserError, ...)
        raise DataValidationError(
            f"Cannot read '{path}' as {fmt.upper()}: {type(exc).__name__}: {exc}. "
            f"Check that the file really is {fmt.upper()} and not damaged."
        ) from exc
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataValidationError(
            f"Cannot use '{path}': it has no data rows. Provide a file with a header and rows."
        )
    return frame


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file (by suffix) into a DataFrame.

    Args:
        path: Local path or fsspec URL (``s3://bucket/key.parquet``).

    Returns:
        The table as read, with no inference applied.

    Raises:
        DataValidationError: Missing, empty, unreadable or unknown-format file.
    """
    text = str(path)
    _suffix_format(text)
    return _parse(_read_bytes(text), text)


def _frame_hash(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    try:
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    except (TypeError, ValueError):  # unhashable cells (lists, dicts): fall back to text
        digest.update(frame.to_csv(index=False).encode())
    return digest.hexdigest()
