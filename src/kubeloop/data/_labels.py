"""Class labels that differ only in case or surrounding spaces (``no``, ``NO``, `` Yes``, ``yes``).

Left alone they would train as separate classes, so they are refused unless the caller asks for
them to be merged (``normalize_labels``, ``kubeloop train --normalize-labels``): each group of
spellings that are equal once trimmed and case-folded becomes its most frequent trimmed spelling
(ties: the first in sorted order).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from kubeloop.errors import DataValidationError
from kubeloop.names import shown

__all__ = ["merge_label_spellings"]

_SHOWN_GROUPS = 5


def _spelling_groups(series: pd.Series) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Factorized codes, distinct raw values and the groups (indices into the distinct values)
    of text values equal once trimmed and case-folded; only groups of two or more."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    members: dict[str, list[int]] = {}
    for index, value in enumerate(uniques):
        if isinstance(value, str) and value.strip():
            members.setdefault(value.strip().casefold(), []).append(index)
    return codes, uniques, [group for group in members.values() if len(group) > 1]


def merge_label_spellings(
    target: str, series: pd.Series, *, normalize: bool
) -> tuple[pd.Series, list[str]]:
    """Refuse, or merge, target labels that differ only in case or surrounding spaces.

    Args:
        target: The target column's name (for messages).
        series: The target column as read (text labels; other values pass unchanged).
        normalize: Merge each group into its most frequent trimmed spelling instead of refusing.

    Returns:
        The target column (merged when ``normalize``) and the notes saying what was merged.

    Raises:
        DataValidationError: ``normalize`` is off and such labels exist; the message names them
            and the fix.
    """
    codes, uniques, groups = _spelling_groups(series)
    if not groups:
        return series, []
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    chosen: list[str] = []
    for group in groups:
        rows: Counter[str] = Counter()
        for index in group:
            rows[uniques[index].strip()] += int(counts[index])
        chosen.append(min(rows, key=lambda spelling: (-rows[spelling], spelling)))
    spellings = [
        ", ".join(shown(uniques[i]) for i in sorted(group, key=lambda i: uniques[i]))
        for group in groups
    ]
    if not normalize:
        more = len(groups) - _SHOWN_GROUPS
        raise DataValidationError(
            f"Target '{target}' has labels that differ only in case or surrounding spaces: "
            + "; ".join(spellings[:_SHOWN_GROUPS])
            + (f" and {more} more groups" if more > 0 else "")
            + ". They would be trained as separate classes. If they mean the same class, pass "
            "--normalize-labels (pipeline parameter normalize_labels; each group becomes its most "
            f"frequent spelling: {', '.join(shown(c) for c in chosen[:_SHOWN_GROUPS])}); "
            "otherwise correct the "
            "labels in the data."
        )
    mapped = uniques.copy()
    for group, spelling in zip(groups, chosen, strict=True):
        mapped[group] = spelling
    mapped = np.append(mapped, np.array([None], dtype=object))  # code -1 (missing) -> None
    merged = pd.Series(mapped[codes], index=series.index, dtype=object)
    notes = [
        f"Target '{target}': labels that differ only in case or spaces were merged "
        "(--normalize-labels): "
        + "; ".join(f"{s} -> {shown(c)}" for s, c in zip(spellings, chosen, strict=True))
        + "."
    ]
    return merged, notes
