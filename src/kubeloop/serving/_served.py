"""``Served``: everything the request path needs from one loaded, verified bundle.

Built once per bundle (at load and at each hot swap) and never changed but for its compiled
forest, set once when proven equal to the model (:meth:`Served.compile_forest`), so a request that
holds a reference keeps a consistent view while a swap replaces the model's reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kubeloop.bundle import Bundle
from kubeloop.bundle.models import TabularModel, XGBoostModel
from kubeloop.features import FastTransform
from kubeloop.serving._observe import Observer
from kubeloop.serving.codec import Columns, RequestDecoder

if TYPE_CHECKING:
    from kubeloop.serving.forest import CompiledForest

__all__ = ["Served", "verified_forest"]

_log = logging.getLogger("kubeloop.serving")

_SMALL_BATCH = 256  # rows up to which the single-threaded model is used
# rows x trees x depth up to which the compiled forest beats inplace_predict (measured: about 100
# rows of a 300-tree depth-6 model on a 2-core machine, ~8 us a row against XGBoost's ~0.4 ms per
# call); one row always takes the forest
_FOREST_BUDGET = 96 * 300 * 6
_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Served:
    """Everything the request path needs from one loaded, verified bundle."""

    bundle: Bundle
    decoder: RequestDecoder
    transform: FastTransform
    observer: Observer
    classes: np.ndarray  # object array of class labels; empty for regression
    class_list: list[str]  # the same labels as a list (the single-row path)
    small_model: TabularModel  # the same model, single-threaded, for small requests
    forest: CompiledForest | None  # the same trees compiled, for a few rows: compile_forest()

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Predict with the compiled forest for a few rows, the single-threaded copy for small
        batches, else the bundle's model."""
        rows = matrix.shape[0]
        forest = self.forest
        if forest is not None and (rows == 1 or rows * forest.cost <= _FOREST_BUDGET):
            return forest.predict(matrix)
        model = self.small_model if rows <= _SMALL_BATCH else self.bundle.model
        return model.predict(matrix)

    def predict_rows(self, matrix: np.ndarray) -> np.ndarray:
        """Predict rows gathered from single-row requests as :meth:`predict` predicts each
        alone: with the compiled forest however many they are (past its budget, XGBoost's path
        could differ from the forest by up to the verified tolerance), else as :meth:`predict`.
        Never slower than one call per row: the forest's cost grows with its rows."""
        forest = self.forest
        if forest is not None:
            return forest.predict(matrix)
        return self.predict(matrix)

    @property
    def version(self) -> str:
        """The bundle version id."""
        return self.bundle.version

    def compile_forest(self) -> bool:
        """Compile the model's trees for the few-row path (:func:`verified_forest`) unless that
        was done; whether a compiled forest serves now. The one field set after construction:
        a request reads ``forest`` once, and sees either XGBoost's path or the proven-equal one.
        """
        if self.forest is None and isinstance(self.bundle.model, XGBoostModel):
            forest = verified_forest(self.bundle.model)
            if forest is not None:
                object.__setattr__(self, "forest", forest)  # frozen otherwise: a set-once slot
        return self.forest is not None

    @classmethod
    def prepare(
        cls, bundle: Bundle, name: str, *, drift_counters: bool = True, compile_forest: bool = True
    ) -> Served:
        """Build the request-path objects of ``bundle`` and run one warm-up prediction
        (``compile_forest=False``: no compiled forest yet, see :meth:`compile_forest`; callers
        that predict large batches never need one)."""
        schema = bundle.schema
        transform = FastTransform(bundle.preprocessor)
        served = cls(
            bundle=bundle,
            decoder=RequestDecoder(schema, transform.category_columns),
            transform=transform,
            observer=Observer(
                name,
                bundle.version,
                bundle.reference_profile,
                schema.classes if schema.task == "classification" else (),
                drift_counters=drift_counters,
                category_columns=transform.category_columns,
            ),
            classes=np.array(schema.classes, dtype=object),
            class_list=list(schema.classes),
            small_model=_single_threaded(bundle.model),
            forest=None,
        )
        if compile_forest:
            served.compile_forest()
        # A row of missing values exercises imputation, the transform and the model once, so a
        # broken bundle fails here (before it is swapped in) and the first request is not slow.
        warm: Columns = {
            f.name: np.array([np.nan]) if f.is_numeric else [None] for f in schema.features
        }
        served.predict(served.transform.transform_columns(warm).matrix)
        return served


def _single_threaded(model: TabularModel) -> TabularModel:
    """A copy of an XGBoost model that predicts on one thread (other models are returned as is).

    XGBoost predicts on all cores by default; for a few rows, starting and joining the OpenMP
    threads costs far more than the work, and on a busy machine a row can wait tens of
    milliseconds for a core.
    """
    if not isinstance(model, XGBoostModel):
        return model
    booster = model.booster.copy()
    booster.set_param({"nthread": 1})
    return XGBoostModel(booster, kind=model.kind, task=model.task, n_classes=model.n_classes)


def verified_forest(model: XGBoostModel) -> CompiledForest | None:
    """``model``'s trees compiled to numpy, or ``None`` when that is not proven equal.

    The forest must give ``model.predict``'s output on a probe matrix (standard-normal and 0/1
    values, missing values, a row of zeros and one of NaN), within 1e-5 (absolute for
    probabilities, relative to the largest value for regression); otherwise, or when the booster
    cannot be compiled, the reason is logged and ``inplace_predict`` keeps serving every request.
    """
    from kubeloop.serving.forest import CompiledForest  # numba: imported by the first compile

    try:
        forest = CompiledForest.from_booster(model.booster)
        rng = np.random.default_rng(0)
        n_features = model.booster.num_features()
        probe = rng.normal(size=(64, n_features))
        probe[16:40] = rng.integers(0, 2, size=(24, n_features))
        probe[rng.random(probe.shape) < 0.15] = np.nan
        probe[0], probe[1] = 0.0, np.nan
        for rows in (probe[:1], probe[1:2], probe):
            want, got = model.predict(rows), forest.predict(rows)
            scale = 1.0 if model.task == "classification" else max(1.0, float(np.abs(want).max()))
            if got.shape != want.shape:
                raise ValueError(f"output shape {got.shape} is not {want.shape}")
            error = float(np.abs(got - want).max())
            if not error <= _TOLERANCE * scale:  # NaN fails too
                raise ValueError(f"output differs from inplace_predict by up to {error:.3g}")
    except Exception as exc:  # an unsupported or mis-compiled booster: the public API serves
        _log.warning("compiled forest unavailable (%s); predicting with inplace_predict", exc)
        return None
    return forest
