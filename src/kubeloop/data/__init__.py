"""Load, infer, validate and split tabular training data.

The rules are deliberately simple so a user can predict them:

* **Reading**: ``.csv`` (also ``.csv.gz``/``.csv.bz2``/``.csv.zip``/``.csv.xz``) or ``.parquet``/
  ``.pq``, chosen by suffix; local paths or fsspec URLs (``s3://...``).
* **Text that holds numbers**: a text column where at least 95 % of the non-blank values parse as
  numbers is read as numbers; the rest (blanks included) become missing and a note says how many.
* **Kinds**: a column with exactly two distinct non-missing values is ``binary`` (values as
  strings, ``0``/``1`` -> ``"0"``/``"1"``); other numeric columns are ``numeric``; other text
  columns are ``categorical``.
* **Dropped with a note**: constant columns (one distinct value) and id-like columns: text unique
  per row (e.g. ``customerID``), or whole numbers unique per row that are a shuffled or increasing
  row counter (consecutive values, or strictly increasing in file order).
* **Errors** (:class:`~kubeloop.errors.DataValidationError`): missing target (close names are
  suggested), one class, too few rows, all-null columns, no features left, unreadable file.
* **Task**: classification when the target has at most 20 distinct values that are text, booleans
  or whole numbers; otherwise regression. Rows with a missing target are dropped with a note.

Nothing in this package writes anything. The schema it infers is the bundle's
(:mod:`kubeloop.bundle.schema`, with :func:`~kubeloop.bundle.schema.normalize_category`). Its
parts: ``_read`` (reading files, hashing), ``_infer`` (per-column kind
inference), ``_dataset`` (target, task, validation: :func:`build_dataset`, :func:`load_dataset`)
and ``_split`` (:func:`split_dataset`, :func:`split_parts`, :func:`split_rows`);
:mod:`kubeloop.data.synth` generates tables for the demo, tests and benchmarks.
"""

from typing import TYPE_CHECKING

from kubeloop import lazy_exports

if TYPE_CHECKING:
    from kubeloop.data._dataset import Dataset, build_dataset, load_dataset
    from kubeloop.data._read import read_table
    from kubeloop.data._split import PARTS, Part, Splits, split_dataset, split_parts, split_rows

# Every part uses pandas; they are imported on first use, so importing a submodule (the
# generated data of :mod:`kubeloop.data.synth`, say) does not load them all.
_LAZY = {
    "Dataset": "_dataset",
    "build_dataset": "_dataset",
    "load_dataset": "_dataset",
    "read_table": "_read",
    "PARTS": "_split",
    "Part": "_split",
    "Splits": "_split",
    "split_dataset": "_split",
    "split_parts": "_split",
    "split_rows": "_split",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "PARTS",
    "Dataset",
    "Part",
    "Splits",
    "build_dataset",
    "load_dataset",
    "read_table",
    "split_dataset",
    "split_parts",
    "split_rows",
]
