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
    """One split: features in schema order and labels.

    ``rows`` set: the part is those rows of ``X``, a whole table shared with the other parts
    (:func:`split_parts`: no copy); ``y`` holds the part's labels either way.
    """

    X: pd.DataFrame
    y: np.ndarray
    rows: np.ndarray | None = None


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
    train, validation, test = _split_indices(ds, seed, test_fraction, validation_fraction)

    def part(rows: np.ndarray) -> Part:
        return Part(X=ds.X.iloc[rows].reset_index(drop=True), y=ds.y[rows])

    return Splits(part(train), part(validation), part(test), ds.schema)


def split_parts(
    ds: Dataset,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
) -> dict[str, Part]:
    """The parts of :func:`split_dataset` as row numbers of ``ds.X`` (no copy of the features).

    Returns:
        Part name (:data:`PARTS`) -> the part, with ``X`` the whole ``ds.X`` and ``rows`` set.

    Raises:
        ConfigError, DataValidationError: as :func:`split_dataset`.
    """
    indices = _split_indices(ds, seed, test_fraction, validation_fraction)
    return {
        name: Part(X=ds.X, y=ds.y[rows], rows=rows)
        for name, rows in zip(PARTS, indices, strict=True)
    }


def _split_indices(
    ds: Dataset, seed: int, test_fraction: float, validation_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    return split_rows(
        ds.y,
        stratify=stratify,
        seed=seed,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
    )


def split_rows(
    y: np.ndarray,
    *,
    stratify: bool,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The row numbers of the train, validation and test parts (each sorted) of
    :func:`split_dataset`: scikit-learn's ``train_test_split`` twice (the test rows from all
    rows, then the validation rows from the rest), stratified by ``y`` (class codes) when
    ``stratify``.

    Raises:
        DataValidationError: The fractions leave a part (or a class in a part) empty.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    try:
        rest, test = train_test_split(
            index, test_size=test_fraction, random_state=seed, stratify=y if stratify else None
        )
        train, validation = train_test_split(
            rest,
            test_size=validation_fraction / (1 - test_fraction),
            random_state=seed,
            stratify=y[rest] if stratify else None,
        )
    except ValueError as exc:
        raise DataValidationError(
            f"Cannot split {len(index)} rows into train/validation/test: {exc}. "
            "Add rows or change the fractions."
        ) from exc
    return np.sort(train), np.sort(validation), np.sort(test)
