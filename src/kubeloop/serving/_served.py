"""``Served``: everything the request path needs from one loaded, verified bundle.

Built once per bundle (at load and at each hot swap) and never changed, so a request that holds
a reference keeps a consistent view while a swap replaces the model's reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kubeloop.bundle import Bundle
from kubeloop.features import FastTransform
from kubeloop.models import TabularModel, XGBoostModel
from kubeloop.serving._decode import Columns, RequestDecoder
from kubeloop.serving._observe import Observer
from kubeloop.serving._xgb_fast import Predicts, fast_predictor

__all__ = ["Served"]

_SMALL_BATCH = 256  # rows up to which the single-threaded model is used


@dataclass(frozen=True)
class Served:
    """Everything the request path needs from one loaded, verified bundle."""

    bundle: Bundle
    decoder: RequestDecoder
    transform: FastTransform
    observer: Observer
    classes: np.ndarray  # object array of class labels; empty for regression
    small_model: Predicts  # the same model, single-threaded, for small requests

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Predict with the single-threaded copy for small batches, else the bundle's model."""
        model = self.small_model if matrix.shape[0] <= _SMALL_BATCH else self.bundle.model
        return model.predict(matrix)

    @property
    def version(self) -> str:
        """The bundle version id."""
        return self.bundle.version

    @classmethod
    def prepare(cls, bundle: Bundle, name: str, *, drift_counters: bool = True) -> Served:
        """Build the request-path objects of ``bundle`` and run one warm-up prediction."""
        schema = bundle.schema
        served = cls(
            bundle=bundle,
            decoder=RequestDecoder(schema),
            transform=FastTransform(bundle.preprocessor),
            observer=Observer(
                name,
                bundle.version,
                bundle.reference_profile,
                schema.classes if schema.task == "classification" else (),
                drift_counters=drift_counters,
            ),
            classes=np.array(schema.classes, dtype=object),
            small_model=_single_threaded(bundle.model),
        )
        # A row of missing values exercises imputation, the transform and the model once, so a
        # broken bundle fails here (before it is swapped in) and the first request is not slow.
        warm: Columns = {
            f.name: np.array([np.nan]) if f.is_numeric else np.array([None], dtype=object)
            for f in schema.features
        }
        served.predict(served.transform.transform_columns(warm).matrix)
        return served


def _single_threaded(model: TabularModel) -> Predicts:
    """A copy of an XGBoost model that predicts on one thread (other models are returned as is).

    XGBoost predicts on all cores by default; for a few rows, starting and joining the OpenMP
    threads costs far more than the work, and on a busy machine a row can wait tens of
    milliseconds for a core. The copy also skips XGBoost's per-call proxy set-up
    (:mod:`._xgb_fast`) when that is proven to give identical output.
    """
    if not isinstance(model, XGBoostModel):
        return model
    booster = model.booster.copy()
    booster.set_param({"nthread": 1})
    copy = XGBoostModel(booster, kind=model.kind, task=model.task, n_classes=model.n_classes)
    return fast_predictor(copy)
