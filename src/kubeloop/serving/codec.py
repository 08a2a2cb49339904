"""The V1 and V2 codec: request bodies in, response bodies out (the decode and encode steps).

Decoding turns a V1 body or a V2 request into one numpy column per feature, or, for a one-row
V1 body of plain values, into one :data:`Row` of Python scalars (the single-row fast path), or
refuses it (HTTP 400). Every refusal is a :class:`RequestError` (a ``kserve.errors.InvalidInput``,
so KServe answers 400 over REST and ``INVALID_ARGUMENT`` over gRPC) whose message names the
feature and the fix, and whose ``kind`` is the ``reason`` label of
``kubeloop_invalid_requests_total``.

Numeric columns come out as float64 arrays (``null``/NaN = missing, imputed later); categorical
columns as lists of the values sent (``str``, numbers, ``None``): the fast transform normalises
them with :func:`kubeloop.data.normalize_category`. Lists, not object arrays: the transform and
the drift counters read Python objects anyway, and a 10,000-row column would be copied into an
array and back for nothing.

Encoding turns the model's output into a V1 answer (``{"predictions": [...], "model_version"}``),
a V2 answer (JSON bytes serialised here, or KServe's ``InferResponse`` for gRPC, the binary
extension and a choice of outputs) or a V1 ``:explain`` answer.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from kubeloop.bundle.schema import Schema
from kubeloop.serving._http import show as _show

__all__ = [
    "Columns",
    "RequestDecoder",
    "RequestError",
    "Row",
    "output_columns",
    "v1_explain_response",
    "v1_response",
    "v1_row_response",
    "v2_response",
]

Columns = dict[str, np.ndarray | list[Any]]
"""A decoded request: one column per feature (numeric: float64 array; categorical: list)."""
Row = dict[str, Any]
"""A decoded one-row V1 request: ``{feature: value}`` with Python scalars (the fast path)."""

_NUMBER_TYPES = frozenset({int, float, type(None)})
_CATEGORY_TYPES = frozenset({str, int, float, bool, type(None)})
_NUMERIC_DATATYPES = frozenset(
    {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16"}
) | {"UINT8"}
# Categories may come as numbers too (a 0/1 column read by pandas): normalize_category maps
# 1 and 1.0 to "1".
_CATEGORY_DATATYPES = _NUMERIC_DATATYPES | {"BYTES", "BOOL"}
_MAX_EXACT_INT = 2**53
_TEXT_ONLY = frozenset({str})


class RequestError(InvalidInput):
    """A client mistake; ``kind`` is the ``reason`` label of the invalid-request counter."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _missing_features(template: str, missing: Sequence[str], fix: str) -> RequestError:
    """The one 400 for absent features: names the first (``{name}`` in the template), counts
    the rest, says the fix."""
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return RequestError("missing_feature", f"{template.format(name=repr(missing[0]))}{more}; {fix}")


class RequestDecoder:
    """Validate requests against one bundle's schema.

    Args:
        schema: The served bundle's schema (feature order and kinds).
        categories: The trained categories of each categorical feature. A BYTES column made of
            these alone skips the per-value type check (one set lookup per value instead).
    """

    def __init__(
        self, schema: Schema, categories: Mapping[str, Collection[str]] | None = None
    ) -> None:
        self._known = {name: frozenset(values) for name, values in (categories or {}).items()}
        self._names = schema.feature_names
        self._name_set = frozenset(self._names)
        self._numeric = frozenset(schema.numeric_features)
        self._order = ", ".join(self._names)
        self._kinds = [(name, name in self._numeric) for name in self._names]

    # -- V1 -------------------------------------------------------------------------------

    def from_v1(self, body: Any) -> tuple[Columns, int]:
        """Decode ``{"instances": [...]}`` (objects by feature name, or lists in schema order)."""
        if not isinstance(body, dict) or "instances" not in body:
            raise RequestError(
                "malformed_request",
                'A V1 request is a JSON object {"instances": [...]}, one instance per row, each '
                f"an object by feature name or a list in this order: {self._order}.",
            )
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError(
                "malformed_request", '"instances" must be a non-empty list with one entry per row.'
            )
        if isinstance(instances[0], dict):
            raw = self._v1_objects(instances)
        elif isinstance(instances[0], list):
            raw = self._v1_lists(instances)
        else:
            raise RequestError(
                "malformed_request",
                f"Instance 0 is {type(instances[0]).__name__}; each instance must be an object "
                f"{{feature: value}} or a list of values in this order: {self._order}.",
            )
        return {name: self._column(name, values) for name, values in raw.items()}, len(instances)

    def v1_row(self, body: Any) -> Row | None:
        """A one-instance V1 body as ``{feature: value}`` with Python scalars, or ``None``.

        The single-row fast path: no numpy column per feature. Numeric values come out as
        ``float`` (NaN for ``null``), categorical values as sent (``str`` or ``None``). Anything
        else (several rows, a value of another type, infinity, a missing or unknown feature)
        gives ``None``, and :meth:`from_v1` then decodes the body or names the mistake.
        """
        if type(body) is not dict:
            return None
        instances = body.get("instances")
        if type(instances) is not list or len(instances) != 1:
            return None
        instance = instances[0]
        if type(instance) is list:
            if len(instance) != len(self._names):
                return None
            instance = dict(zip(self._names, instance, strict=True))
        elif type(instance) is not dict or instance.keys() != self._name_set:
            return None
        row: Row = {}
        for name, numeric in self._kinds:
            value = instance[name]
            kind = type(value)
            if numeric:
                if kind is float:
                    if value in (math.inf, -math.inf):
                        return None
                elif kind is int:
                    if not -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
                        return None  # a huge integer: the general path decides
                    value = float(value)
                elif value is None:
                    value = math.nan
                else:
                    return None
            elif kind is not str and value is not None:
                return None
            row[name] = value
        return row

    def _v1_objects(self, instances: list[Any]) -> dict[str, list[Any]]:
        names = self._name_set
        for i, instance in enumerate(instances):
            if type(instance) is not dict:
                raise RequestError(
                    "malformed_request",
                    f"Instance {i} is {type(instance).__name__}; mix no lists and objects: send "
                    "every instance as an object {feature: value}.",
                )
            if instance.keys() != names:
                missing = [n for n in self._names if n not in instance]
                if missing:
                    raise _missing_features(
                        f"Instance {i} is missing feature {{name}}",
                        missing,
                        "send every feature (null for an unknown numeric value).",
                    )
                unknown = sorted(k for k in instance if k not in names)
                raise RequestError(
                    "unknown_feature",
                    f"Instance {i} has unknown feature {_show(unknown[0])}; the model's features "
                    f"are: {self._order}.",
                )
        return {name: [instance[name] for instance in instances] for name in self._names}

    def _v1_lists(self, instances: list[Any]) -> dict[str, list[Any]]:
        width = len(self._names)
        for i, instance in enumerate(instances):
            if type(instance) is not list or len(instance) != width:
                size = len(instance) if isinstance(instance, list) else type(instance).__name__
                raise RequestError(
                    "wrong_shape",
                    f"Instance {i} has {size} values; the model takes {width} features in this "
                    f"order: {self._order}.",
                )
        return {name: [row[j] for row in instances] for j, name in enumerate(self._names)}

    # -- V2 -------------------------------------------------------------------------------

    def from_v2(
        self, request: InferRequest, data: Sequence[Any] | None = None
    ) -> tuple[Columns, int]:
        """Decode one V2 input tensor per feature (shape ``[N]`` or ``[N, 1]``).

        ``data``: the ``data`` list of every input in request order when the HTTP guard parsed
        the JSON body already (:attr:`RequestContext.v2_data
        <kubeloop.serving._context.RequestContext.v2_data>`); the tensors' own data otherwise.
        """
        if data is not None and len(data) != len(request.inputs):
            data = None
        by_name: dict[str, tuple[Any, Any]] = {}
        for i, tensor in enumerate(request.inputs):
            if tensor.name in by_name:
                raise RequestError(
                    "malformed_request", f"Input {_show(tensor.name)} appears twice; send it once."
                )
            by_name[tensor.name] = (tensor, tensor.data if data is None else data[i])
        unknown = [name for name in by_name if name not in self._name_set]
        if unknown:
            raise RequestError(
                "unknown_feature",
                f"Input {_show(unknown[0])} is not a feature of this model; send one input per "
                f"feature: {self._order}.",
            )
        missing = [name for name in self._names if name not in by_name]
        if missing:
            raise _missing_features(
                "Input for feature {name} is missing", missing, "send one input tensor per feature."
            )
        rows: int | None = None
        columns: Columns = {}
        for name in self._names:
            tensor, tensor_data = by_name[name]
            count = self._v2_rows(name, tensor.shape)
            if rows is None:
                rows = count
            elif count != rows:
                raise RequestError(
                    "wrong_shape",
                    f"Input {name!r} has {count} rows but {self._names[0]!r} has {rows}; every "
                    "input needs one value per row.",
                )
            values, types = self._v2_values(name, tensor, tensor_data, count)
            columns[name] = self._column(name, values, types)
        if not rows:
            raise RequestError("wrong_shape", "The request holds no rows; send at least one.")
        return columns, rows

    def _v2_rows(self, name: str, shape: Sequence[Any]) -> int:
        dims = list(shape)
        if (len(dims) == 1 or (len(dims) == 2 and dims[1] == 1)) and all(
            type(d) is int and d >= 0 for d in dims
        ):
            return int(dims[0])
        raise RequestError(
            "wrong_shape",
            f"Input {name!r} has shape {_show(dims)}; use [N] (or [N, 1]) for N rows.",
        )

    def _v2_values(
        self, name: str, tensor: Any, data: Any, rows: int
    ) -> tuple[list[Any], frozenset[type] | set[type] | None]:
        """The tensor's values (``data``: its JSON values, if any) as a flat list, and their
        types when already computed."""
        datatype = str(tensor.datatype).upper()
        allowed = _NUMERIC_DATATYPES if name in self._numeric else _CATEGORY_DATATYPES
        if datatype not in allowed:
            want = "FP64, FP32 or INT64" if name in self._numeric else "BYTES"
            raise RequestError(
                "wrong_datatype",
                f"Input {name!r} has datatype {datatype[:40]}; this feature takes {want}.",
            )
        if data is None or (rows and not len(data)):  # binary extension / gRPC raw contents
            try:
                values = tensor.as_numpy().reshape(-1).tolist()
            except Exception as exc:  # struct.error, ValueError, ...: the client's bytes
                raise RequestError(
                    "wrong_shape",
                    f"Input {name!r} cannot be read as {datatype}: {_show(str(exc), 120)}.",
                ) from None
        else:
            values = data if type(data) is list else list(data)
            if values and type(values[0]) is list:
                values = [v for row in values for v in (row if type(row) is list else [row])]
        if len(values) != rows:
            raise RequestError(
                "wrong_shape",
                f"Input {name!r} declares {rows} rows but holds {len(values)} values; make the "
                "shape match the data.",
            )
        if datatype != "BYTES":
            return values, None
        known = self._known.get(name)
        try:
            if known is not None and known.issuperset(values):
                return values, _TEXT_ONLY
        except TypeError:  # unhashable values (lists, objects): the type check names them
            pass
        types = set(map(type, values))
        if bytes not in types:
            return values, types
        try:
            values = [v.decode("utf-8") if type(v) is bytes else v for v in values]
        except UnicodeDecodeError:
            raise RequestError(
                "wrong_type", f"Input {name!r} holds bytes that are not UTF-8 text."
            ) from None
        return values, None

    # -- both -----------------------------------------------------------------------------

    def _column(
        self, name: str, values: list[Any], types: frozenset[type] | set[type] | None = None
    ) -> np.ndarray | list[Any]:
        if len(values) == 1:  # a single-row request: plain type checks, one small array
            value = values[0]
            kind = type(value)
            if name in self._numeric:
                if value is None or (
                    (kind is float or kind is int) and value not in (math.inf, -math.inf)
                ):
                    return np.array(values, dtype=np.float64)
            elif kind is str or value is None:
                return values
        if types is None:
            types = set(map(type, values))
        if name in self._numeric:
            if not types <= _NUMBER_TYPES:
                bad = next(v for v in values if type(v) not in _NUMBER_TYPES)
                raise RequestError(
                    "wrong_type",
                    f"Feature {name!r} takes a number (or null when unknown); got {_show(bad)} "
                    f"({type(bad).__name__}).",
                )
            column = np.array(values, dtype=np.float64)
            if np.isinf(column).any():
                raise RequestError(
                    "wrong_type",
                    f"Feature {name!r} is infinite; send a finite number (or null when unknown).",
                )
            return column
        if not types <= _CATEGORY_TYPES:
            bad = next(v for v in values if type(v) not in _CATEGORY_TYPES)
            raise RequestError(
                "wrong_type",
                f"Feature {name!r} takes a category (text, or null when unknown); got "
                f"{_show(bad)} ({type(bad).__name__}).",
            )
        if float in types and any(type(v) is float and math.isinf(v) for v in values):
            raise RequestError("wrong_type", f"Feature {name!r} holds an infinite number.")
        return values


# -- encoding -----------------------------------------------------------------------------


def output_columns(
    classes: np.ndarray, codes: int | np.ndarray | None, raw: np.ndarray
) -> dict[str, np.ndarray]:
    """The named outputs of predicted rows: ``prediction`` (regression), or ``label`` and
    ``probability`` (classification).

    Args:
        classes: The class labels (an object array; empty for regression).
        codes: The predicted class code of each row (an ``int`` for one row).
        raw: The model's output (probabilities, or values for regression).
    """
    if not len(classes) or codes is None:
        return {"prediction": raw}
    labels = classes[codes : codes + 1] if isinstance(codes, int) else classes[codes]
    return {"label": labels, "probability": raw}


def v1_row_response(
    classes: Sequence[str],
    code: int,
    value: float,
    probabilities: list[float] | None,
    *,
    version: str,
) -> dict[str, Any]:
    """The V1 answer for one row predicted on the fast path (Python scalars throughout).

    Args:
        classes: The class labels (empty for regression).
        code: The predicted class code. value: Its probability, or the regression value.
        probabilities: Every class's probability (multiclass), else ``None``.
        version: The served bundle version.
    """
    prediction: Any
    if probabilities is not None:
        prediction = {
            "label": classes[code],
            "probability": dict(zip(classes, probabilities, strict=True)),
        }
    elif classes:
        prediction = {"label": classes[code], "probability": value}
    else:
        prediction = value
    return {"predictions": [prediction], "model_version": version}


def v1_response(
    classes: np.ndarray, outputs: Mapping[str, np.ndarray], *, version: str
) -> dict[str, Any]:
    """The V1 answer for rows predicted together (``outputs``: :func:`output_columns`)."""
    predictions: list[Any]
    if "prediction" in outputs:
        predictions = list(outputs["prediction"].tolist())
    else:
        labels = outputs["label"].tolist()
        probability = outputs["probability"]
        if probability.ndim == 1:
            predictions = [
                {"label": label, "probability": p}
                for label, p in zip(labels, probability.tolist(), strict=True)
            ]
        else:
            names = classes.tolist()
            predictions = [
                {"label": label, "probability": dict(zip(names, row, strict=True))}
                for label, row in zip(labels, probability.tolist(), strict=True)
            ]
    return {"predictions": predictions, "model_version": version}


def v1_explain_response(explanations: list[dict[str, Any]], *, version: str) -> dict[str, Any]:
    """The V1 ``:explain`` answer (``explanations``: one object per row)."""
    return {"explanations": explanations, "model_version": version}


def v2_response(
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
    *,
    model: str,
    version: str,
    request_id: str | None,
) -> bytes | InferResponse:
    """The V2 answer to ``request``: one tensor per output (``label`` BYTES, the rest FP64).

    Its id is the request's, else ``request_id`` (the payload log's), else a new one.
    """
    response_id = request.id or request_id or uuid.uuid4().hex
    tensors = {
        name: ("BYTES" if name == "label" else "FP64", list(values.shape), values)
        for name, values in outputs.items()
    }
    if request.from_grpc or request.use_binary_outputs or request.request_outputs:
        # KServe's own encoders: raw contents for gRPC, the binary extension, output choice.
        return InferResponse(
            response_id=response_id,
            model_name=model,
            model_version=version,
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
            "model_name": model,
            "model_version": version,
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
