"""``BundleModel``: a KServe predictor for kubeloop bundles (V1, V2 REST and V2 gRPC).

The request path uses no pandas and no scikit-learn: request -> one numpy column per feature
(:mod:`._decode`) -> :class:`kubeloop.features.FastTransform` -> ``model.predict`` (XGBoost's
``inplace_predict`` or the linear model's dot product). Everything derived from one bundle sits
in an immutable :class:`Served`; a request reads ``self._served`` once, so a hot swap (one
reference assignment) never mixes two versions inside a request.

A bundle is served as soon as it is verified: its trees are compiled for the few-row path
(:class:`kubeloop.serving.forest.CompiledForest`, a numba kernel: about a second for the first
bundle of
a process) on a background thread, and serve few-row requests once proven equal
(:meth:`Served.compile_forest`); until then XGBoost predicts every request.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kserve.errors import ModelNotReady
from kserve.model import Model
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from kubeloop.bundle import load_bundle
from kubeloop.bundle.models import XGBoostModel
from kubeloop.errors import DataValidationError
from kubeloop.features import TransformResult
from kubeloop.serving import metrics
from kubeloop.serving._decode import Columns, RequestError
from kubeloop.serving._http import mark_rejected, take_v2_data
from kubeloop.serving._payload_log import PayloadLogger
from kubeloop.serving._served import Served
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
        self._forest_released = threading.Event()
        if not hold_forest:
            self._forest_released.set()
        self.on_start: Callable[[], None] | None = None
        self.on_stop: Callable[[], None] | None = None

    @property
    def served(self) -> Served | None:
        """The bundle being served now (``None`` before :meth:`load`)."""
        return self._served

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

    def swap(self, path: Path) -> Served:
        """Load the bundle at ``path`` beside the current one, then switch to it atomically.

        On any failure the current bundle keeps serving and the failure is counted.
        """
        try:
            served = Served.prepare(
                load_bundle(path),
                self.name,
                drift_counters=self._drift_counters,
                compile_forest=False,
            )
        except Exception:
            metrics.MODEL_LOAD_FAILURES.labels(self.name).inc()
            raise
        previous, self._served = self._served, served
        metrics.MODEL_INFO.labels(self.name, served.version).set(1)
        if previous is not None and previous.version != served.version:
            metrics.MODEL_INFO.remove(self.name, previous.version)
        _log.info("serving %s version %s from %s", self.name, served.version, path)
        if isinstance(served.bundle.model, XGBoostModel):
            threading.Thread(
                target=self._add_forest, args=(served,), name="kubeloop-forest", daemon=True
            ).start()
        return served

    def release_forest(self) -> None:
        """Let loaded bundles' trees be compiled now (see ``hold_forest``)."""
        self._forest_released.set()

    def _add_forest(self, served: Served) -> None:
        """Compile ``served``'s trees, unless another bundle replaced it meanwhile (a failed or
        unequal compile is logged, and XGBoost keeps serving)."""
        self._forest_released.wait()
        if self._served is served:
            served.compile_forest()

    def unload(self) -> None:
        """Stop serving (the model-repository extension's unload): not ready until a load."""
        previous, self._served = self._served, None
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

    # -- inference ------------------------------------------------------------------------

    def _reject(self, error: RequestError) -> RequestError:
        metrics.INVALID_REQUESTS.labels(self.name, error.kind).inc()
        mark_rejected()
        return error

    def predict(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | bytes | InferResponse:
        """Predict a V1 body or a V2 request; client mistakes raise ``InvalidInput`` (400)."""
        served = self._served
        if served is None:
            raise ModelNotReady(self.name)
        v2 = isinstance(payload, InferRequest)
        if isinstance(payload, InferRequest) and not payload.from_grpc:
            data = take_v2_data()  # the values of a JSON body the HTTP guard parsed already
            if data is not None and len(data) == len(payload.inputs):
                for tensor, values in zip(payload.inputs, data, strict=True):
                    tensor.data = values
        if not v2:
            row = served.decoder.v1_row(payload)
            if row is not None:
                one = served.transform.transform_row(row)
                if one is not None:
                    return self._predict_row(served, row, one, payload, headers)
        columns, rows, result = self.decode(served, payload)
        raw = served.predict(result.matrix)
        codes: np.ndarray | None = None
        if len(served.classes) == 2:
            codes, value = (raw >= 0.5).astype(np.intp), raw
        elif len(served.classes) > 2:
            codes, value = raw.argmax(axis=1), raw.max(axis=1)
        else:
            value = raw
        served.observer.inputs(columns, rows, result.codes)
        served.observer.repairs(result.imputed, result.unknown)
        served.observer.outputs(codes, value)
        outputs: dict[str, Any] = (
            {"prediction": raw}
            if codes is None
            else {"label": served.classes[codes], "probability": raw}
        )
        request_id = None
        if self._payload_log is not None and self._payload_log.sampled():
            request_id = self._request_id(payload, headers)
            self._payload_log.log(
                model=self.name,
                version=served.version,
                request_id=request_id,
                rows=rows,
                inputs=columns,
                outputs=outputs,
            )
        if v2:
            if wants_explanation(payload):  # V2 explanations: see kubeloop.serving.explain
                outputs.update(explain_outputs(served, result.matrix))
            return self._v2_response(payload, served, outputs, request_id)
        return {
            "predictions": self._v1_predictions(served, outputs),
            "model_version": served.version,
        }

    def decode(
        self, served: Served, payload: dict[str, Any] | InferRequest
    ) -> tuple[Columns, int, TransformResult]:
        """Validate a V1 body or V2 request and transform it: columns, rows, model input.

        Raises:
            RequestError: a client mistake (400), counted with its reason.
        """
        try:
            columns, rows = (
                served.decoder.from_v2(payload)
                if isinstance(payload, InferRequest)
                else served.decoder.from_v1(payload)
            )
            result = served.transform.transform_columns(columns)
        except RequestError as error:
            raise self._reject(error) from None
        except DataValidationError as error:
            raise self._reject(RequestError("wrong_type", str(error))) from None
        return columns, rows, result

    def explain(
        self, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """KServe's V1 ``:explain`` verb: contributions per input feature for every instance
        (see :mod:`kubeloop.serving.explain`); the same validation and 400s as ``:predict``."""
        served = self._served
        if served is None:
            raise ModelNotReady(self.name)
        row = served.decoder.v1_row(payload)
        result = served.transform.transform_row(row) if row is not None else None
        if result is None:
            result = self.decode(served, payload)[2]
        raw = served.predict(result.matrix)
        return {
            "explanations": v1_explanations(served, result.matrix, raw),
            "model_version": served.version,
        }

    def _predict_row(
        self,
        served: Served,
        row: dict[str, Any],
        result: TransformResult,
        payload: Any,
        headers: dict[str, str] | None,
    ) -> dict[str, Any]:
        """A one-row V1 request, with Python scalars where numpy calls would cost more."""
        raw = served.predict(result.matrix)
        classes = served.class_list
        prediction: Any
        if len(classes) == 2:
            value = float(raw[0])
            code = 1 if value >= 0.5 else 0
            prediction = {"label": classes[code], "probability": value}
        elif len(classes) > 2:
            probabilities = raw[0].tolist()
            value = max(probabilities)
            code = probabilities.index(value)
            prediction = {
                "label": classes[code],
                "probability": dict(zip(classes, probabilities, strict=True)),
            }
        else:
            value, code = float(raw[0]), 0
            prediction = value
        served.observer.input_row(row)
        if result.imputed or result.unknown:
            served.observer.repairs(result.imputed, result.unknown)
        served.observer.output_row(code, value)
        if self._payload_log is not None and self._payload_log.sampled():
            self._payload_log.log(
                model=self.name,
                version=served.version,
                request_id=self._request_id(payload, headers),
                rows=1,
                inputs={name: [value] for name, value in row.items()},
                outputs=(
                    {"prediction": [value]}
                    if not classes
                    else {"label": [classes[code]], "probability": raw.tolist()}
                ),
            )
        return {"predictions": [prediction], "model_version": served.version}

    @staticmethod
    def _request_id(payload: Any, headers: dict[str, str] | None) -> str:
        if isinstance(payload, InferRequest) and payload.id:
            return str(payload.id)
        if headers and headers.get("x-request-id"):
            return headers["x-request-id"]
        return uuid.uuid4().hex

    @staticmethod
    def _v1_predictions(served: Served, outputs: dict[str, Any]) -> list[Any]:
        if "prediction" in outputs:
            return list(outputs["prediction"].tolist())
        labels = outputs["label"].tolist()
        probability = outputs["probability"]
        if probability.ndim == 1:
            return [
                {"label": label, "probability": p}
                for label, p in zip(labels, probability.tolist(), strict=True)
            ]
        classes = served.classes.tolist()
        return [
            {"label": label, "probability": dict(zip(classes, row, strict=True))}
            for label, row in zip(labels, probability.tolist(), strict=True)
        ]

    def _v2_response(
        self,
        request: InferRequest,
        served: Served,
        outputs: dict[str, Any],
        request_id: str | None,
    ) -> bytes | InferResponse:
        response_id = request.id or request_id or uuid.uuid4().hex
        tensors = {
            name: (
                "BYTES" if name == "label" else "FP64",
                list(values.shape),
                values,
            )
            for name, values in outputs.items()
        }
        if request.from_grpc or request.use_binary_outputs or request.request_outputs:
            # KServe's own encoders: raw contents for gRPC, the binary extension, output choice.
            return InferResponse(
                response_id=response_id,
                model_name=self.name,
                model_version=served.version,
                infer_outputs=[
                    # lists: KServe's gRPC encoder cannot take numpy arrays with raw contents
                    InferOutput(
                        name=name, shape=shape, datatype=datatype, data=values.reshape(-1).tolist()
                    )
                    for name, (datatype, shape, values) in tensors.items()
                ],
                from_grpc=request.from_grpc,
                use_binary_outputs=request.use_binary_outputs,
                requested_outputs=request.request_outputs,
            )
        # Plain JSON: serialise here with orjson. KServe would convert every value to a Python
        # object and FastAPI would walk them again (jsonable_encoder): ~100x slower for 10,000
        # rows. KServe sends bytes as they are; the HTTP guard adds the JSON content type.
        return orjson.dumps(
            {
                "id": response_id,
                "model_name": self.name,
                "model_version": served.version,
                "outputs": [
                    {
                        "name": name,
                        "shape": shape,
                        "datatype": datatype,
                        "data": (
                            values.reshape(-1).tolist()
                            if datatype == "BYTES"
                            else np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
                        ),
                    }
                    for name, (datatype, shape, values) in tensors.items()
                ],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
