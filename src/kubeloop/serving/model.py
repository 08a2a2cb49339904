"""``BundleModel``: a KServe predictor for kubeloop bundles (V1, V2 REST and V2 gRPC).

Every request takes the same five steps, each a method of its own: **decode** (V1 body or V2
request -> one column per feature, :mod:`.codec`) -> **transform**
(:class:`kubeloop.features.FastTransform`) -> **predict** (the compiled forest, XGBoost's
``inplace_predict`` or the linear model's dot product) -> **record** (the metrics and the
payload log) -> **encode** (the V1 or V2 answer, :mod:`.codec`). A one-row V1 body of plain
values takes the same steps with Python scalars (the single-row fast path, chosen in
:meth:`BundleModel._one_row` only). What the request carries besides its body goes from step to
step in an explicit :class:`~kubeloop.serving._context.RequestContext`. No pandas, no
scikit-learn.

Everything derived from one bundle sits in an immutable :class:`Served`; a request reads
``self._served`` once, so a hot swap (one reference assignment) never mixes two versions inside
a request.

A staged rollout (:mod:`._rollout`) puts a candidate beside the champion: one frozen
:class:`~kubeloop.serving._rollout.Rollout` that a request reads once too, and that routes it
before decode (canary: the candidate answers a sticky share of requests; shadow: the champion
answers and the candidate scores the same rows off the response path). Every routed request is
counted per version (outcome, duration in the model, the rollout moments of
:class:`~kubeloop.serving.metrics.VersionStats`) and its answer names the version that answered
(body, and the ``x-kubeloop-model-version`` header over HTTP).

A bundle is served as soon as it is verified: its trees are compiled for the few-row path
(:class:`kubeloop.serving.forest.CompiledForest`, a numba kernel: about a second for the first
bundle of a process) on a background thread, and serve few-row requests once proven equal
(:meth:`Served.compile_forest`); until then XGBoost predicts every request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
from kserve.errors import ModelNotReady
from kserve.model import Model
from kserve.protocol.infer_type import InferRequest, InferResponse

from kubeloop.bundle import load_bundle
from kubeloop.bundle.models import XGBoostModel
from kubeloop.errors import DataValidationError
from kubeloop.features import TransformResult
from kubeloop.serving import metrics
from kubeloop.serving._context import RequestContext
from kubeloop.serving._payload_log import PayloadLogger
from kubeloop.serving._rollout import Mode, Rollout, ShadowScorer
from kubeloop.serving._served import Served
from kubeloop.serving.codec import (
    Columns,
    RequestError,
    Row,
    output_columns,
    v1_explain_response,
    v1_response,
    v1_row_response,
    v2_response,
)
from kubeloop.serving.explain import explain_outputs, v1_explanations, wants_explanation

__all__ = ["BundleModel", "Served"]

_log = logging.getLogger("kubeloop.serving")


class BundleModel(Model):
    """Serve one kubeloop bundle through ``kserve.ModelServer``.

    Args:
        name: The endpoint name (``/v1/models/{name}:predict``).
        loader: Returns the path of the bundle to serve now (a fixed directory, or the registry's
            champion); called by :meth:`load`.
        drift_counters: Count request values into the reference-profile bins.
        payload_log: Where sampled requests are logged, or ``None``.
        hold_forest: Compile the trees of a loaded bundle only after :meth:`release_forest`
            (the server calls it once it listens: compiling is no part of the start); otherwise
            right after each load.
    """

    def __init__(
        self,
        name: str,
        loader: Callable[[], Path],
        *,
        drift_counters: bool = True,
        payload_log: PayloadLogger | None = None,
        hold_forest: bool = False,
    ) -> None:
        super().__init__(name)
        self._loader = loader
        self._drift_counters = drift_counters
        self._payload_log = payload_log
        self._served: Served | None = None
        self._rollout: Rollout | None = None
        self._shadow: ShadowScorer | None = None
        self._rollout_lock = threading.Lock()  # the watcher and load/unload change it
        self._forest_released = threading.Event()
        if not hold_forest:
            self._forest_released.set()
        self.on_start: Callable[[], None] | None = None
        self.on_stop: Callable[[], None] | None = None

    @property
    def served(self) -> Served | None:
        """The bundle being served now (``None`` before :meth:`load`)."""
        return self._served

    @property
    def rollout(self) -> Rollout | None:
        """The candidate served beside the champion now, if any."""
        return self._rollout

    def load(self) -> bool:
        """Load and verify the bundle; ``ready`` becomes true only when that worked.

        Raises:
            BundleError: the bundle fails verification (counted in the load-failure metric).
            RegistryError: the registry has no champion or cannot be read.
        """
        try:
            path = self._loader()
        except Exception:
            metrics.MODEL_LOAD_FAILURES.labels(self.name).inc()
            raise
        self.swap(path)
        self.ready = True
        return self.ready

    def prepare(self, path: Path) -> Served:
        """Load, verify and warm up the bundle at ``path`` (nothing served changes).

        Raises:
            Exception: whatever the bundle fails with (counted in the load-failure metric).
        """
        try:
            return Served.prepare(
                load_bundle(path),
                self.name,
                drift_counters=self._drift_counters,
                compile_forest=False,
            )
        except Exception:
            metrics.MODEL_LOAD_FAILURES.labels(self.name).inc()
            raise

    def swap(self, path: Path) -> Served:
        """Load the bundle at ``path`` beside the current one, then switch to it atomically.

        On any failure the current bundle keeps serving and the failure is counted.
        """
        served = self.prepare(path)
        self.install(served)
        _log.info("serving %s version %s from %s", self.name, served.version, path)
        return served

    def install(self, served: Served) -> None:
        """Make the prepared ``served`` the champion (one reference assignment); a candidate of
        the same version stops being a candidate (a promotion)."""
        with self._rollout_lock:
            previous, self._served = self._served, served
            rollout = self._rollout
            if rollout is not None and rollout.candidate.version == served.version:
                self._drop_rollout()
        metrics.MODEL_INFO.labels(self.name, served.version).set(1)
        if previous is not None and previous.version != served.version:
            metrics.MODEL_INFO.remove(self.name, previous.version)
        self._compile_later(served)

    def start_rollout(self, candidate: Served, *, mode: Mode, percent: float) -> Rollout:
        """Serve the prepared ``candidate`` beside the champion (or change how it is served).

        Args:
            candidate: The candidate bundle (:meth:`prepare`).
            mode: ``canary`` (it answers ``percent`` % of requests) or ``shadow`` (it scores
                the champion's requests off the response path).
            percent: The canary share in [0, 100] (ignored in shadow mode).
        """
        rollout = Rollout.of(candidate, mode, percent)
        with self._rollout_lock:
            if mode == "shadow" and self._shadow is None:
                self._shadow = ShadowScorer(self.name, self._payload_log)
            previous, self._rollout = self._rollout, rollout
            if previous is not None:
                self._forget_candidate(previous)
            metrics.CANDIDATE_INFO.labels(self.name, candidate.version, mode).set(rollout.percent)
        if previous is None or previous.candidate is not candidate:
            self._compile_later(candidate)
            _log.info(
                "candidate %s of %s: %s%s",
                candidate.version,
                self.name,
                mode,
                f" {rollout.percent:g}%" if mode == "canary" else "",
            )
        return rollout

    def end_rollout(self) -> None:
        """Serve the champion alone (the candidate was dropped from the pointer)."""
        with self._rollout_lock:
            rollout = self._rollout
            self._drop_rollout()
        if rollout is not None:
            _log.info("candidate %s of %s dropped", rollout.candidate.version, self.name)

    def promote_candidate(self) -> Served | None:
        """Make the candidate the champion without loading it again (``None``: no candidate)."""
        rollout = self._rollout
        if rollout is None:
            return None
        self.install(rollout.candidate)
        _log.info("candidate %s of %s promoted to champion", rollout.candidate.version, self.name)
        return rollout.candidate

    def _drop_rollout(self) -> None:
        """Drop the rollout (with ``_rollout_lock`` held)."""
        previous, self._rollout = self._rollout, None
        if previous is not None:
            self._forget_candidate(previous)

    def _forget_candidate(self, rollout: Rollout) -> None:
        with contextlib.suppress(KeyError):
            metrics.CANDIDATE_INFO.remove(self.name, rollout.candidate.version, rollout.mode)

    def _compile_later(self, served: Served) -> None:
        if isinstance(served.bundle.model, XGBoostModel):
            threading.Thread(
                target=self._add_forest, args=(served,), name="kubeloop-forest", daemon=True
            ).start()

    def release_forest(self) -> None:
        """Let loaded bundles' trees be compiled now (see ``hold_forest``)."""
        self._forest_released.set()

    def _add_forest(self, served: Served) -> None:
        """Compile ``served``'s trees, unless it serves no more, neither as champion nor as
        candidate (a failed or unequal compile is logged, and XGBoost keeps serving)."""
        self._forest_released.wait()
        rollout = self._rollout
        if self._served is served or (rollout is not None and rollout.candidate is served):
            served.compile_forest()

    def unload(self) -> None:
        """Stop serving (the model-repository extension's unload): not ready until a load."""
        with self._rollout_lock:
            previous, self._served = self._served, None
            self._drop_rollout()
        self.ready = False
        if previous is not None:
            metrics.MODEL_INFO.remove(self.name, previous.version)
        _log.info("unloaded %s on request", self.name)

    def start(self) -> None:
        """Called by the model server once registered: start the champion watcher, if any."""
        if self.on_start is not None:
            self.on_start()

    def stop(self) -> None:
        """Called at shutdown: stop the watcher and close the payload log."""
        if self.on_stop is not None:
            self.on_stop()
        if self._payload_log is not None:
            self._payload_log.close()
        self.ready = False

    # -- metadata -------------------------------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 metadata inputs: one ``[-1]`` tensor per feature (FP64 or BYTES)."""
        if self._served is None:
            return []
        return [
            {"name": f.name, "datatype": "FP64" if f.is_numeric else "BYTES", "shape": [-1]}
            for f in self._served.bundle.schema.features
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 metadata outputs: ``label`` + ``probability``, or ``prediction``."""
        if self._served is None:
            return []
        classes = len(self._served.classes)
        if classes == 0:
            return [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        shape = [-1] if classes == 2 else [-1, classes]
        return [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probability", "datatype": "FP64", "shape": shape},
        ]

    # -- inference: decode -> transform -> predict -> record -> encode -----------------------

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | bytes | InferResponse:
        """Predict a V1 body or a V2 request (REST or gRPC); client mistakes raise
        ``InvalidInput`` (400). Routed first (:meth:`route`); counted per version that answered
        (outcome and duration)."""
        start = perf_counter()
        context = RequestContext.of(payload, headers)
        served, shadow = self.route(context)
        stats = served.observer.stats
        try:
            one = self._one_row(served, context, payload)
            if one is not None:
                answer: dict[str, Any] | bytes | InferResponse = self._predict_one(
                    served, context, *one, shadow
                )
            else:
                columns = self.decode(served, context, payload)
                result = self.transform(served, context, columns)
                codes, values, raw = _predict_columns(served, result.matrix)
                request_id = self.record(served, context, columns, result, codes, values, raw)
                if shadow is not None:
                    self._submit_shadow(shadow, served, columns, result.matrix, raw, request_id)
                answer = self.encode(served, context, payload, result, codes, raw, request_id)
        except BaseException:
            stats.request(perf_counter() - start, True)
            raise
        stats.request(perf_counter() - start, False)
        return answer

    def route(self, context: RequestContext) -> tuple[Served, Rollout | None]:
        """The bundle that answers this request, and the shadow rollout to feed (if any).

        The champion and the rollout are each read once: a swap or a rollout change never mixes
        two states inside a request. Canary: the candidate when :meth:`Rollout.takes` says so;
        shadow: the champion, with the rollout returned. Over HTTP the answering version is noted
        on the request's exchange (the ``x-kubeloop-model-version`` header).
        """
        served = self._served
        if served is None:
            raise ModelNotReady(self.name)
        rollout = self._rollout
        shadow = None
        if rollout is not None:
            if rollout.mode == "shadow":
                shadow = rollout
            elif rollout.takes(context):
                served = rollout.candidate
        exchange = context.exchange
        if exchange is not None:
            exchange.version = served.version
        return served, shadow

    def _submit_shadow(
        self,
        rollout: Rollout,
        served: Served,
        inputs: Row | Columns,
        matrix: np.ndarray,
        raw: np.ndarray,
        request_id: str | None,
    ) -> None:
        scorer = self._shadow
        if scorer is not None:
            scorer.submit(rollout.candidate, served, inputs, matrix, raw, request_id)

    def _predict_one(
        self,
        served: Served,
        context: RequestContext,
        row: Row,
        result: TransformResult,
        shadow: Rollout | None = None,
    ) -> dict[str, Any]:
        """Predict, record and encode one row of the fast path, with Python scalars where numpy
        calls would cost more."""
        code, value, probabilities, raw = _predict_row(served, result.matrix)
        request_id = self.record(served, context, row, result, code, value, raw)
        if shadow is not None:
            self._submit_shadow(shadow, served, row, result.matrix, raw, request_id)
        return v1_row_response(
            served.class_list, code, value, probabilities, version=served.version
        )

    def explain(
        self, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """KServe's V1 ``:explain`` verb: contributions per input feature for every instance
        (see :mod:`kubeloop.serving.explain`); the same validation and 400s as ``:predict``,
        nothing recorded; routed like ``:predict`` (canary: the same version answers the same
        key)."""
        context = RequestContext.of(payload, headers)
        served = self.route(context)[0]
        one = self._one_row(served, context, payload)
        if one is not None:
            result = one[1]
        else:
            result = self.transform(served, context, self.decode(served, context, payload))
        raw = served.predict(result.matrix)
        return v1_explain_response(
            v1_explanations(served, result.matrix, raw), version=served.version
        )

    def _one_row(
        self, served: Served, context: RequestContext, payload: Any
    ) -> tuple[Row, TransformResult] | None:
        """Decode and transform on the single-row fast path, chosen here only: a V1 body of one
        row of plain values the transform takes as it is. ``None``: the columnar path decodes
        the body (or names the mistake)."""
        if context.protocol != "v1":
            return None
        row = served.decoder.v1_row(payload)
        if row is None:
            return None
        result = served.transform.transform_row(row)
        return None if result is None else (row, result)

    def decode(
        self, served: Served, context: RequestContext, payload: dict[str, Any] | InferRequest
    ) -> Columns:
        """Decode a V1 body or a V2 request into one column per feature (:mod:`.codec`).

        Raises:
            RequestError: a client mistake (400), counted with its reason.
        """
        try:
            if isinstance(payload, InferRequest):
                return served.decoder.from_v2(payload, context.v2_data)[0]
            return served.decoder.from_v1(payload)[0]
        except RequestError as error:
            raise self._reject(served, context, error) from None

    def transform(
        self, served: Served, context: RequestContext, columns: Columns
    ) -> TransformResult:
        """The model input of decoded columns (the bundle's :class:`FastTransform`).

        Raises:
            RequestError: a value the transform refuses (400 ``wrong_type``), counted.
        """
        try:
            return served.transform.transform_columns(columns)
        except DataValidationError as error:
            raise self._reject(served, context, RequestError("wrong_type", str(error))) from None

    def _reject(self, served: Served, context: RequestContext, error: RequestError) -> RequestError:
        metrics.INVALID_REQUESTS.labels(self.name, served.version, error.kind).inc()
        context.mark_rejected()
        return error

    def record(
        self,
        served: Served,
        context: RequestContext,
        inputs: Row | Columns,
        result: TransformResult,
        codes: int | np.ndarray | None,
        values: float | np.ndarray,
        raw: np.ndarray,
    ) -> str | None:
        """Count a predicted request in the metrics and log it when sampled: the one record of
        the fast path and the columnar path alike.

        Args:
            served: The bundle the request was served from.
            context: The request's context (its id for the payload log).
            inputs: The decoded request: one :data:`Row` of Python scalars (the fast path),
                else one column per feature.
            result: The transform's output (repairs; the category codes of columns).
            codes: The predicted class codes: an ``int`` for one row of the fast path (0 for
                regression), else an array (``None`` for regression).
            values: The predicted probability or value: a ``float`` for the fast path's row,
                else an array.
            raw: The model's output.

        Returns:
            The request id in the payload log, or ``None`` when not logged.
        """
        observer = served.observer
        one = isinstance(codes, int) and isinstance(values, float)
        if isinstance(codes, int) and isinstance(values, float):
            # the fast path's row: Python scalars, counted without numpy
            observer.input_row(inputs)
            if result.imputed or result.unknown:
                observer.repairs(result.imputed, result.unknown)
            observer.output_row(codes, values)
        else:
            assert not isinstance(codes, int) and isinstance(values, np.ndarray)
            observer.inputs(inputs, raw.shape[0], result.codes)
            observer.repairs(result.imputed, result.unknown)
            observer.outputs(codes, values)
        log = self._payload_log
        if log is None or not log.sampled():
            return None
        request_id = context.request_id()
        log.log(
            model=self.name,
            version=served.version,
            request_id=request_id,
            rows=raw.shape[0],
            inputs={name: [value] for name, value in inputs.items()} if one else inputs,
            outputs=output_columns(served.classes, codes, raw),
        )
        return request_id

    def encode(
        self,
        served: Served,
        context: RequestContext,
        payload: dict[str, Any] | InferRequest,
        result: TransformResult,
        codes: np.ndarray | None,
        raw: np.ndarray,
        request_id: str | None,
    ) -> dict[str, Any] | bytes | InferResponse:
        """The answer in the request's protocol (:mod:`.codec`); a V2 request may ask for
        explanations too (:mod:`kubeloop.serving.explain`)."""
        outputs = output_columns(served.classes, codes, raw)
        if not isinstance(payload, InferRequest):
            return v1_response(served.classes, outputs, version=served.version)
        if wants_explanation(payload):
            outputs.update(explain_outputs(served, result.matrix))
        return v2_response(
            payload, outputs, model=self.name, version=served.version, request_id=request_id
        )


def _predict_row(
    served: Served, matrix: np.ndarray
) -> tuple[int, float, list[float] | None, np.ndarray]:
    """Predict the fast path's row: its class code (0 for regression), its probability or
    value, every class's probability (multiclass only), and the model's output."""
    raw = served.predict(matrix)
    classes = served.class_list
    if len(classes) == 2:
        value = float(raw[0])
        return (1 if value >= 0.5 else 0), value, None, raw
    if len(classes) > 2:
        probabilities = raw[0].tolist()
        value = max(probabilities)
        return probabilities.index(value), value, probabilities, raw
    return 0, float(raw[0]), None, raw


def _predict_columns(
    served: Served, matrix: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Predict rows together: their class codes (``None`` for regression), the probability
    of each predicted class (or the value), and the model's output."""
    raw = served.predict(matrix)
    classes = len(served.classes)
    if classes == 2:
        return (raw >= 0.5).astype(np.intp), raw, raw
    if classes > 2:
        return raw.argmax(axis=1), raw.max(axis=1), raw
    return None, raw, raw
