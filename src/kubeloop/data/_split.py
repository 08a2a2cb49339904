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
    :func:`split_dataset`; ``stratify``: ``y`` holds class codes, cut class by class.

    Raises:
        DataValidationError: A part, or with ``stratify`` a class in a part, would be empty.
    """
    n_rows = len(y)
    # Part sizes as scikit-learn's train_test_split counts them: test and validation round up.
    sizes = np.array([math.ceil(n_rows * f - 1e-9) for f in (test_fraction, validation_fraction)])
    sizes = np.append(sizes, n_rows - sizes.sum())
    if (sizes < 1).any():
        raise DataValidationError(
            f"Cannot split {n_rows} rows into train/validation/test parts of "
            f"{sizes[2]}/{sizes[1]}/{sizes[0]} rows. Add rows or change the fractions."
        )
    # Each class (the whole data unstratified) is shuffled and cut in proportion.
    groups = (
        [np.flatnonzero(y == code) for code in np.unique(y)] if stratify else [np.arange(n_rows)]
    )
    per_group = _allocate(np.array([len(group) for group in groups]), sizes)
    rng = np.random.default_rng(seed)
    pieces = [
        np.split(rng.permutation(group), np.cumsum(row)[:2])
        for group, row in zip(groups, per_group, strict=True)
    ]
    test, validation, train = (np.sort(np.concatenate(part)) for part in zip(*pieces, strict=True))
    return train, validation, test


def _allocate(counts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Rows of each group (result rows) in each part (columns: test, validation, train):
    proportional to the group sizes ``counts``, each part's total exactly ``sizes``, rounding
    remainders to the largest fractional shares (ties to the first groups)."""
    result = np.zeros((len(counts), len(sizes)), dtype=np.int64)
    left = counts.astype(np.int64)
    for column, size in enumerate(sizes[:-1]):
        quota = left * size / left.sum()
        taken = np.floor(quota).astype(np.int64)
        order = np.argsort(-(quota - taken), kind="stable")
        taken[order[: size - taken.sum()]] += 1
        result[:, column] = taken
        left = left - taken
    result[:, -1] = left
    if (result < 1).any():
        raise DataValidationError(
            f"Cannot split {int(counts.sum())} rows so that every class appears in each of the "
            "train, validation and test parts. Add rows or change the fractions."
        )
    return result
