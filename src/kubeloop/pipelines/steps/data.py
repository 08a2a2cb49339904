"""The cores of the data steps: ingest + validate, feature prep, and the artifacts they write.

Each function takes input directories and fills an output directory; the KFP components in
:mod:`kubeloop.pipelines.components.training` only hand them artifact paths. Directory contents:

- splits: ``schema.json``, ``meta.json`` (data hash, notes, row counts) and
  ``{train,validation,test}.parquet`` (the features in schema order plus the encoded target).
- features: ``preprocessor.json`` and ``x_{part}.npy`` / ``y_{part}.npy`` (after FastTransform).

Every step runs in its own Python process, so each function imports the libraries it uses
itself: validate and features load no XGBoost, Ray or MLflow
(``bench/steps.py`` measures every step's imports).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kubeloop.console import ProgressFn, quiet

if TYPE_CHECKING:
    from kubeloop.bundle.preprocessor import PreprocessorSpec
    from kubeloop.bundle.schema import Schema
    from kubeloop.data import Part

__all__ = [
    "ingest",
    "load_matrices",
    "load_meta",
    "load_part",
    "load_preprocessor",
    "load_schema",
    "prepare_features",
    "read_json",
    "write_json",
]

_Y = "__kubeloop_target__"


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays (training params may hold them)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def write_json(path: Path, content: Any) -> None:
    text = json.dumps(content, indent=2, sort_keys=True, default=_plain)
    path.write_text(text + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def ingest(
    data: str,
    *,
    target: str,
    task: str,
    out: Path,
    seed: int = 0,
    normalize_labels: bool = False,
    progress: ProgressFn = quiet,
) -> str:
    """Read and validate the data, split it deterministically, and write the splits.

    ``normalize_labels``: see :func:`kubeloop.data.build_dataset`.

    Returns:
        A Markdown summary (rows, task, features, notes) for the KFP UI.

    Raises:
        DataValidationError: The data cannot be trained on; ``out`` is left empty.
    """
    from kubeloop.data import PARTS, load_dataset, split_dataset

    dataset = load_dataset(
        data,
        target=target,
        task=task,  # type: ignore[arg-type]
        normalize_labels=normalize_labels,
    )
    splits = split_dataset(dataset, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in PARTS:
        part: Part = getattr(splits, name)
        frame = part.X.copy()
        frame[_Y] = part.y
        frame.to_parquet(out / f"{name}.parquet", index=False)
        rows[name] = len(part.y)
    schema = dataset.schema
    write_json(out / "schema.json", schema.to_dict())
    write_json(
        out / "meta.json",
        {"data": data, "data_hash": dataset.data_hash, "notes": list(dataset.notes), "rows": rows},
    )
    for note in dataset.notes:
        progress(note)
    lines = [
        f"# Data: `{data}`",
        "",
        f"- task: **{schema.task}**, target `{schema.target}`"
        + (f", classes {', '.join(schema.classes)}" if schema.classes else ""),
        f"- features: {len(schema.features)} "
        f"({len(schema.numeric_features)} numeric, {len(schema.categorical_features)} categorical"
        + (f", {len(schema.datetime_features)} date/time)" if schema.datetime_features else ")"),
        f"- rows: train {rows['train']}, validation {rows['validation']}, test {rows['test']}",
        f"- sha256: `{dataset.data_hash}`",
        *(f"- note: {note}" for note in dataset.notes),
    ]
    return "\n".join(lines) + "\n"


def load_meta(splits_dir: Path) -> dict[str, Any]:
    """The ``meta.json`` written by :func:`ingest`: data, data hash, notes, row counts."""
    return dict(read_json(Path(splits_dir) / "meta.json"))


def load_schema(splits_dir: Path) -> Schema:
    """The schema written by :func:`ingest`."""
    from kubeloop.bundle.schema import Schema

    return Schema.from_dict(read_json(Path(splits_dir) / "schema.json"))


def load_part(splits_dir: Path, name: str) -> Part:
    """One split written by :func:`ingest`, with features exactly as the data stage built them."""
    import pandas as pd

    from kubeloop.data import Part

    frame = pd.read_parquet(Path(splits_dir) / f"{name}.parquet")
    y = frame.pop(_Y).to_numpy()
    schema = load_schema(splits_dir)
    for feature in schema.features:  # parquet keeps None; normalise object columns back to str
        if feature.is_categorical:
            column = frame[feature.name].astype(object)
            frame[feature.name] = column.where(column.notna(), None)
    return Part(X=frame[list(schema.feature_names)], y=y)


def prepare_features(splits_dir: Path, *, out: Path) -> int:
    """Fit the preprocessor on the training split and write it and the transformed matrices.

    Returns:
        The number of model inputs (output columns).
    """
    from kubeloop.training.workflow import PARTS, prepare_inputs

    parts = {name: load_part(splits_dir, name) for name in PARTS}
    spec, matrices = prepare_inputs(load_schema(splits_dir), parts)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "preprocessor.json", spec.to_dict())
    for name, (x, y) in matrices.items():
        np.save(out / f"x_{name}.npy", x)
        np.save(out / f"y_{name}.npy", y)
    return len(spec.output_columns)


def load_matrices(features_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split written by :func:`prepare_features`."""
    directory = Path(features_dir)
    return np.load(directory / f"x_{name}.npy"), np.load(directory / f"y_{name}.npy")


def load_preprocessor(features_dir: Path) -> PreprocessorSpec:
    """The preprocessor spec written by :func:`prepare_features`."""
    from kubeloop.bundle.preprocessor import PreprocessorSpec

    return PreprocessorSpec.from_dict(read_json(Path(features_dir) / "preprocessor.json"))
