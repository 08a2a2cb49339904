"""Deterministic, stratified train / validation / test splitting of a :class:`Dataset`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kubeloop.bundle.schema import Schema
from kubeloop.data._dataset import Dataset
from kubeloop.errors import ConfigError, DataValidationError

PARTS = ("train", "validation", "test")  # the parts of :class:`Splits`, in this order


@dataclass(frozen=True)
class Part:
    """One split: features in schema order and labels."""

    X: pd.DataFrame
    y: np.ndarray


@dataclass(frozen=True)
class Splits:
    """Train, validation and test parts of one :class:`Dataset`."""

    train: Part
    validation: Part
    test: Part
    schema: Schema


def split_dataset(
    ds: Dataset,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
) -> Splits:
    """Split a dataset into train / validation / test parts, deterministically.

    Fractions are of the whole dataset (defaults: 60 / 20 / 20). Classification splits are
    stratified by class. Rows keep their original order inside each part.

    Args:
        ds: The dataset to split.
        seed: Random seed; the same seed gives the same parts.
        test_fraction: Share of rows in the test part.
        validation_fraction: Share of rows in the validation part.

    Returns:
        The three parts and the schema.

    Raises:
        ConfigError: Fractions outside (0, 1) or summing to 1 or more.
        DataValidationError: A class has too few rows to appear in every part.
    """
    if not (0 < test_fraction < 1 and 0 < validation_fraction < 1):
        raise ConfigError("test_fraction and validation_fraction must each be between 0 and 1.")
    if test_fraction + validation_fraction >= 1:
        raise ConfigError("test_fraction + validation_fraction must be below 1 (rows to train).")
    stratify = ds.schema.task == "classification"
    if stratify:
        smallest = min(test_fraction, validation_fraction, 1 - test_fraction - validation_fraction)
        needed = max(3, math.ceil(1 / smallest))
        counts = np.bincount(ds.y, minlength=len(ds.schema.classes))
        rare = [(ds.schema.classes[i], int(n)) for i, n in enumerate(counts) if n < needed]
        if rare:
            shown = ", ".join(f"{c!r} ({n} rows)" for c, n in rare)
            raise DataValidationError(
                f"Target '{ds.schema.target}' has classes with too few rows to split: {shown}; "
                f"each class needs at least {needed} rows. Add rows or merge rare classes."
            )
    train, validation, test = split_rows(
        ds.y,
        stratify=stratify,
        seed=seed,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
    )

    def part(rows: np.ndarray) -> Part:
        return Part(X=ds.X.iloc[rows].reset_index(drop=True), y=ds.y[rows])

    return Splits(part(train), part(validation), part(test), ds.schema)


def split_rows(
    y: np.ndarray,
    *,
    stratify: bool,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The row numbers of the train, validation and test parts (each sorted) of
    :func:`split_dataset`; ``stratify``: ``y`` holds class codes, cut in proportion per class.

    Two seeded cuts: the test rows from all rows, then the validation rows from the rest (sizes
    rounded up, as scikit-learn's ``train_test_split`` counts them). Unstratified, the rows are
    exactly those of ``train_test_split`` with ``random_state=seed`` (earlier results hold); it
    is not imported: the validate step loads no scikit-learn.

    Raises:
        DataValidationError: A part, or with ``stratify`` a class in a part, would be empty.
    """
    n_rows = len(y)
    rest, test = _cut(np.arange(n_rows), y, math.ceil(test_fraction * n_rows), stratify, seed)
    size = math.ceil(validation_fraction / (1 - test_fraction) * len(rest))
    train, validation = _cut(rest, y, size, stratify, seed)
    parts = (train, validation, test)
    if any(len(part) == 0 for part in parts):
        raise DataValidationError(
            f"Cannot split {n_rows} rows into train/validation/test parts of "
            f"{'/'.join(str(len(part)) for part in parts)} rows. Add rows or change the fractions."
        )
    if stratify and any(len(np.unique(y[part])) < len(np.unique(y)) for part in parts):
        raise DataValidationError(
            f"Cannot split {n_rows} rows so that every class appears in each of the train, "
            "validation and test parts. Add rows or change the fractions."
        )
    return np.sort(train), np.sort(validation), np.sort(test)


def _cut(
    rows: np.ndarray, y: np.ndarray, size: int, stratify: bool, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, taken)``: ``size`` of ``rows`` taken at random (seeded), with ``stratify`` in
    proportion to each class (rounding remainders to the largest fractional shares)."""
    rng = np.random.RandomState(seed)  # the generator train_test_split shuffles with
    if not stratify:
        shuffled = rng.permutation(rows)
        return shuffled[size:], shuffled[:size]
    groups = [rows[y[rows] == code] for code in np.unique(y[rows])]
    quota = np.array([len(group) for group in groups]) * size / len(rows)
    counts = np.floor(quota).astype(np.int64)
    counts[np.argsort(counts - quota, kind="stable")[: size - counts.sum()]] += 1
    kept, taken = [], []
    for group, count in zip(groups, counts, strict=True):
        shuffled = rng.permutation(group)
        kept.append(shuffled[count:])
        taken.append(shuffled[:count])
    return np.concatenate(kept), np.concatenate(taken)
