"""Single-row XGBoost prediction without the per-call set-up cost.

``Booster.inplace_predict`` calls XGBoost's ``XGBoosterPredictFromDense``; without a DMatrix
proxy handle XGBoost creates a new proxy per call, and creating one re-reads the cgroup CPU
quota files and ``/proc/self/status``: about 0.15-0.3 ms per call whatever the model size, more
than the whole rest of a single-row request. This module calls the same C function with a proxy
created once per thread and reused, and a config string built once.

It relies on XGBoost internals (``xgboost.core._LIB`` and friends), so :func:`fast_predictor`
only returns it when those exist and its output equals ``inplace_predict``'s (to float32
rounding) on a probe matrix; otherwise the caller keeps the public API.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any, Protocol

import numpy as np

from kubeloop.models import XGBoostModel

__all__ = ["Predicts", "fast_predictor"]

_log = logging.getLogger("kubeloop.serving")


class Predicts(Protocol):
    """Anything with ``predict(matrix) -> predictions`` (the TabularModel contract)."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict transformed rows."""


class _ReusedProxyPredictor:
    def __init__(self, model: XGBoostModel) -> None:
        from xgboost import core
        from xgboost._data_utils import array_interface

        self._core = core
        self._array_interface = array_interface
        self._booster = model.booster
        self._n_features = model.booster.num_features()
        self._shape_k = (
            model.n_classes if model.task == "classification" and model.n_classes > 2 else 0
        )
        self._config = core.make_jcargs(
            type=0,
            training=False,
            iteration_begin=0,
            iteration_end=0,
            missing=np.nan,
            strict_shape=False,
            cache_id=0,
        )
        self._local = threading.local()

    def _proxy(self) -> Any:
        proxy = getattr(self._local, "proxy", None)
        if proxy is None:
            proxy = self._local.proxy = self._core._ProxyDMatrix()
        return proxy

    def predict(self, X: np.ndarray) -> np.ndarray:
        matrix = np.ascontiguousarray(X, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self._n_features:
            raise ValueError(f"expected (rows, {self._n_features}); got {matrix.shape}")
        core = self._core
        preds = ctypes.POINTER(ctypes.c_float)()
        shape = ctypes.POINTER(core.c_bst_ulong)()
        dims = core.c_bst_ulong()
        core._check_call(
            core._LIB.XGBoosterPredictFromDense(
                self._booster.handle,
                self._array_interface(matrix),
                self._config,
                self._proxy().handle,
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        out = np.asarray(core._prediction_output(shape, dims, preds, False), dtype=np.float64)
        rows = matrix.shape[0]
        return out.reshape(rows, self._shape_k) if self._shape_k else out.reshape(rows)


def fast_predictor(model: XGBoostModel) -> Predicts:
    """The reused-proxy predictor for ``model`` when it is proven equal, else ``model`` itself."""
    try:
        fast = _ReusedProxyPredictor(model)
        rng = np.random.default_rng(0)
        probe = rng.normal(size=(4, model.booster.num_features()))
        probe[0] = 0.0
        for rows in (probe[:1], probe):
            # equal up to float32 rounding (multiclass softmax may differ in the last bit)
            if not np.allclose(fast.predict(rows), model.predict(rows), rtol=1e-6, atol=1e-7):
                raise ValueError("output differs from inplace_predict")
    except Exception as exc:  # any XGBoost version whose internals differ: public API instead
        _log.warning("XGBoost fast single-row path unavailable (%s); using inplace_predict", exc)
        return model
    return fast
