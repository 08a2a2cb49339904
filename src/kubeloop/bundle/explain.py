"""Per-row explanations in the model's margin space, one contribution per *input* feature.

A bundle's model sees the preprocessor's output columns (numerics, then one column per
``feature=category``); a user sees the schema's features. Contributions are computed on the
output columns and summed back to the feature each column came from (a one-hot block sums to its
categorical feature), so ``sum(contributions) + bias == margin`` for every row and class:

- XGBoost (boosting and random-forest mode): exact (path-dependent) TreeSHAP, the values of
  ``Booster.predict(..., pred_contribs=True)``; the bias is the expected margin (``base_score``
  included). They are computed by :class:`kubeloop.bundle._treeshap.TreeShap` (per-leaf tables,
  about
  4x faster than XGBoost's recursion for one row) when it can tabulate the model, else by
  XGBoost itself.
- Linear models: ``coefficient x transformed value`` per column; the bias is the intercept.

Margins are raw scores before the link: log-odds of ``classes[1]`` (binary), one score per class
(multiclass, before softmax), the value itself (regression). The same :class:`Explainer` serves
the ``:explain`` endpoint, ``kubeloop explain`` and the global importance written at training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xgboost

from kubeloop.bundle.models import LinearModel, TabularModel, XGBoostModel
from kubeloop.bundle.preprocessor import PreprocessorSpec

if TYPE_CHECKING:
    from kubeloop.bundle._treeshap import TreeShap

__all__ = ["Explainer", "Explanation", "global_importance"]

_SMALL = 256  # rows up to which XGBoost explains on one thread (no OpenMP start-up per call)


@dataclass(frozen=True)
class Explanation:
    """Contributions of a batch of rows.

    Attributes:
        features: Input feature names, the last axis of ``contributions``.
        contributions: ``(n, K, F)`` float64: per row, output group (``K`` = classes for
            multiclass, else 1) and input feature.
        bias: ``(n, K)`` the part of the margin no feature explains.
        margin: ``(n, K)`` the model's raw score: ``contributions.sum(-1) + bias``.
    """

    features: tuple[str, ...]
    contributions: np.ndarray
    bias: np.ndarray
    margin: np.ndarray


def _feature_map(spec: PreprocessorSpec, features: Sequence[str]) -> np.ndarray:
    """``(output columns, features)`` 0/1 matrix: which input feature each column encodes."""
    index = {name: i for i, name in enumerate(features)}
    owners = [index[step.name] for step in spec.numeric]
    for date in spec.datetime:  # its calendar parts, summed back to the date
        owners.extend([index[date.name]] * len(date.parts))
    for step in spec.categorical:
        owners.extend([index[step.name]] * len(step.categories))
    mapping = np.zeros((len(owners), len(features)), dtype=np.float64)
    mapping[np.arange(len(owners)), owners] = 1.0
    return mapping


def _tabulate(booster: xgboost.Booster, max_entries: int) -> TreeShap | None:
    """The booster's TreeSHAP tables; ``None`` when it cannot be tabulated (too deep, another
    objective)."""
    from kubeloop.bundle._treeshap import TreeShap  # numba: compiled on first use

    try:
        return TreeShap.from_booster(booster, max_entries=max_entries)
    except ValueError:
        return None


class Explainer:
    """Explain one bundle's model in terms of its input features.

    Args:
        model: The bundle's model.
        spec: The bundle's preprocessor (output column -> input feature).
        features: Input feature names in schema order (the order of the result).
        max_table_entries: Largest TreeSHAP table (float64 entries) built for a booster;
            a larger model is explained by XGBoost's own TreeSHAP.
        tables: Build TreeSHAP tables at all. ``False`` explains a booster with XGBoost's own
            TreeSHAP (same values): nothing is compiled, the better choice for one large batch
            (the global importance written at training).

    Raises:
        TypeError: ``model`` is neither an XGBoost nor a linear model.
    """

    def __init__(
        self,
        model: TabularModel,
        spec: PreprocessorSpec,
        features: Sequence[str],
        *,
        max_table_entries: int = 1 << 22,
        tables: bool = True,
    ) -> None:
        if not isinstance(model, XGBoostModel | LinearModel):
            raise TypeError(f"cannot explain a {type(model).__name__}")
        self.model = model
        self.features = tuple(features)
        self._map = _feature_map(spec, self.features)
        self._boosters: tuple[xgboost.Booster, xgboost.Booster] | None = None
        self._tables: TreeShap | None = None
        if isinstance(model, XGBoostModel):
            self._tables = _tabulate(model.booster, max_table_entries) if tables else None
            if self._tables is None:  # XGBoost's own TreeSHAP
                single = model.booster.copy()
                single.set_param({"nthread": 1})
                self._boosters = (single, model.booster)

    def explain(self, matrix: np.ndarray) -> Explanation:
        """Contributions of the transformed rows ``matrix`` (``FastTransform`` output)."""
        x = np.asarray(matrix, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self._map.shape[0]:
            raise ValueError(f"expected a (rows, {self._map.shape[0]}) matrix; got {x.shape}")
        if self._tables is not None:
            raw = self._tables.contributions(x)
            columns, bias = raw[:, :, :-1], raw[:, :, -1]
            margin = raw.sum(axis=2)  # SHAP values add up to the margin (exactly, in float64)
        elif self._boosters is not None:
            booster = self._boosters[0] if len(x) <= _SMALL else self._boosters[1]
            data = xgboost.DMatrix(x, missing=np.nan, nthread=1 if len(x) <= _SMALL else 0)
            raw = booster.predict(data, pred_contribs=True, strict_shape=True)
            raw = np.asarray(raw, dtype=np.float64).reshape(len(x), -1, x.shape[1] + 1)
            columns, bias = raw[:, :, :-1], raw[:, :, -1]
            margin = np.asarray(
                booster.predict(data, output_margin=True, strict_shape=True), dtype=np.float64
            ).reshape(len(x), -1)
        else:
            assert isinstance(self.model, LinearModel)
            coef, intercept = self.model.coef, self.model.intercept
            columns = x[:, None, :] * coef[None, :, :]
            bias = np.broadcast_to(intercept, (len(x), len(intercept))).copy()
            margin = x @ coef.T + intercept
        return Explanation(
            features=self.features,
            contributions=columns @ self._map,
            bias=bias,
            margin=margin,
        )


def global_importance(explanation: Explanation) -> dict[str, float]:
    """Mean absolute contribution per input feature (over rows, summed over classes)."""
    values = np.abs(explanation.contributions).sum(axis=1).mean(axis=0)
    return {name: float(v) for name, v in zip(explanation.features, values, strict=True)}
