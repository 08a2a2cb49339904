"""The server's OpenAPI document, generated from the served bundle.

KServe's FastAPI app would publish a generic document (every KServe route, any model name, no
error answers). This one lists only the routes this server answers, for the one served model:
the V1 instance and the V2 input tensors come from the bundle's ``schema.json`` (names, kinds,
trained categories; the observed numeric range as documentation), and every error answer is
documented with the ``{"error": ...}`` body. It is rebuilt when the served version changes (hot
swap) and when the model-repository extension or the explain handler changes what is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubeloop.bundle.dates import format_seconds
from kubeloop.bundle.schema import FeatureInfo, Schema

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kubeloop.serving._surface import SurfaceState

__all__ = ["Surface", "build_openapi", "install_openapi"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_REF = "#/components/schemas/"
_NUMERIC_TYPES = ["FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8"]
_UNSIGNED = ["UINT64", "UINT32", "UINT16", "UINT8"]
_DESCRIPTIONS = {
    400: "Bad request: the body, a feature, a datatype or a shape is wrong (the message names it).",
    403: "The model-repository extension is off (see --enable-model-repository).",
    404: "No such model, version or route.",
    405: "Method not allowed on this route.",
    408: "The request body did not arrive within --body-timeout seconds.",
    413: "The body is larger than --max-request-bytes.",
    415: "Content-Encoding (e.g. gzip) is not accepted.",
    503: "Busy (over --max-concurrency requests in flight; see Retry-After) or no model loaded.",
}


@dataclass(frozen=True)
class Surface:
    """What this server serves, besides the model's schema.

    Attributes:
        name: The endpoint's model name.
        version: The served bundle's version.
        schema: The served bundle's schema.
        repository: Whether the model-repository extension (load/unload) is on.
        explain: Whether ``:explain`` has a handler.
    """

    name: str
    version: str
    schema: Schema
    repository: bool = False
    explain: bool = False


def _feature_schema(feature: FeatureInfo) -> dict[str, Any]:
    if feature.is_numeric:
        low, high = feature.minimum, feature.maximum
        observed = f" Observed in training: {low} to {high}." if low is not None else ""
        return {
            "type": ["number", "null"],
            "description": f"Numeric feature; null when unknown (imputed).{observed} Other finite "
            "values are served too; infinity is refused.",
            "examples": [v for v in (low, high) if v is not None] or [0],
        }
    if feature.kind == "datetime":
        also = f" or in the format {feature.date_format!r}" if feature.date_format else ""
        return {
            "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}],
            "description": "Date/time feature: ISO-8601 text (a time zone offset is allowed; the "
            f"local clock time is used){also}, or seconds since 1970-01-01 as a number; null "
            "when unknown (imputed).",
            "examples": [format_seconds(v) for v in (feature.minimum, feature.maximum) if v]
            or ["2024-03-01"],
        }
    other = "served as '__other__'" if feature.has_other else "served as unknown"
    return {
        "anyOf": [
            {"type": "string", "enum": list(feature.categories)},
            {"type": "string", "description": f"any other category: {other}"},
            {"type": "null"},
        ],
        "description": f"Categorical feature ({feature.kind}); trained categories: "
        f"{', '.join(feature.categories)}; null when unknown (imputed).",
        "examples": list(feature.categories[:3]),
    }


def _v2_input(feature: FeatureInfo) -> dict[str, Any]:
    numeric = feature.is_numeric
    value = _feature_schema(feature)
    if feature.is_categorical:
        value = {
            "anyOf": [*value["anyOf"], {"type": "number"}],
            "description": value["description"],
        }
    datatypes = _NUMERIC_TYPES + _UNSIGNED + ([] if numeric else ["BYTES", "BOOL"])
    return {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": feature.name},
            "shape": {
                "type": "array",
                "description": "[N] or [N, 1] for N rows",
                "items": {"type": "integer", "minimum": 0},
                "minItems": 1,
                "maxItems": 2,
            },
            "datatype": {
                "type": "string",
                "enum": datatypes,
                "description": "FP64 for numbers"
                if numeric
                else "BYTES for dates (ISO-8601 text)"
                if feature.kind == "datetime"
                else "BYTES for categories",
            },
            "data": {"type": "array", "items": value},
            "parameters": {"type": "object"},
        },
    }


def _components(surface: Surface) -> dict[str, Any]:
    schema = surface.schema
    features = schema.features
    classes = list(schema.classes)
    if schema.task == "regression":
        prediction: dict[str, Any] = {"type": "number"}
        outputs = ["prediction"]
    else:
        probability: dict[str, Any] = (
            {"type": "number", "description": f"probability of {classes[1]!r}"}
            if len(classes) == 2
            else {
                "type": "object",
                "properties": {c: {"type": "number"} for c in classes},
                "description": "probability per class",
            }
        )
        prediction = {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": classes},
                "probability": probability,
            },
        }
        outputs = ["label", "probability"]
    tensor = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "data": {"type": "array"},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "what is wrong and the fix"}},
        },
        "V1Instance": {
            "oneOf": [
                {
                    "type": "object",
                    "description": "one row by feature name (every feature, no other key)",
                    "properties": {f.name: _feature_schema(f) for f in features},
                    "required": [f.name for f in features],
                    "additionalProperties": False,
                },
                {
                    "type": "array",
                    "description": "one row as values in this order: "
                    + ", ".join(f.name for f in features),
                    "prefixItems": [_feature_schema(f) for f in features],
                    "minItems": len(features),
                    "maxItems": len(features),
                },
            ]
        },
        "V1Request": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": _REF + "V1Instance"},
                    "description": "all objects or all lists",
                }
            },
        },
        "V1Response": {
            "type": "object",
            "properties": {
                "predictions": {"type": "array", "items": prediction},
                "model_version": {"type": "string"},
            },
        },
        "V2Request": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {
                    "type": "array",
                    "description": "one tensor per feature, each feature once",
                    "items": {"oneOf": [_v2_input(f) for f in features]},
                    "minItems": len(features),
                    "maxItems": len(features),
                },
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "enum": outputs}},
                    },
                },
            },
        },
        "V2Response": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "outputs": {"type": "array", "items": tensor},
            },
        },
        "V2Metadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": tensor},
                "outputs": {"type": "array", "items": tensor},
            },
        },
        "Ready": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
    }


def _operation(
    summary: str,
    ok: str | None,
    errors: tuple[int, ...],
    *,
    body: str | None = None,
    parameters: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "OK"}
    if ok is not None:
        success["content"] = {"application/json": {"schema": {"$ref": _REF + ok}}}
    responses: dict[str, Any] = {"200": success}
    for status in errors:
        responses[str(status)] = {
            "description": _DESCRIPTIONS[status],
            "content": {"application/json": {"schema": _ERROR}},
        }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF + body}}},
        }
    return operation


_VERSION_QUERY = {
    "name": "model_version",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "the served version (else 404 naming it)",
}


def _paths(surface: Surface) -> dict[str, Any]:
    name, version = surface.name, surface.version
    query = (_VERSION_QUERY,)
    post = (400, 404, 408, 413, 415, 503)
    get = (404,)
    v2 = f"/v2/models/{name}"
    paths: dict[str, Any] = {
        "/": {"get": _operation("Liveness", None, ())},
        "/metrics": {"get": _operation("Prometheus metrics (text format)", None, ())},
        "/v1/models": {"get": _operation("Served model names", None, ())},
        f"/v1/models/{name}": {"get": _operation("V1 model readiness", "Ready", get)},
        f"/v1/models/{name}:predict": {
            "post": _operation(
                "V1 prediction", "V1Response", post, body="V1Request", parameters=query
            )
        },
        "/v2": {"get": _operation("V2 server metadata", None, ())},
        "/v2/health/live": {"get": _operation("V2 liveness", "Live", ())},
        "/v2/health/ready": {"get": _operation("V2 readiness", None, ())},
    }
    if surface.explain:
        paths[f"/v1/models/{name}:explain"] = {
            "post": _operation("V1 explanation", None, post, body="V1Request", parameters=query)
        }
    version_path = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "examples": [version]},
        "description": f"the served version ({version}); another one answers 404",
    }
    for prefix, params in ((v2, query), (f"{v2}/versions/{{version}}", (version_path,))):
        paths[prefix] = {
            "get": _operation("V2 model metadata", "V2Metadata", get, parameters=params)
        }
        paths[f"{prefix}/ready"] = {
            "get": _operation("V2 model readiness", "Ready", (404, 503), parameters=params)
        }
        paths[f"{prefix}/infer"] = {
            "post": _operation(
                "V2 inference", "V2Response", post, body="V2Request", parameters=params
            )
        }
    if surface.repository:
        for verb in ("load", "unload"):
            paths[f"/v2/repository/models/{name}/{verb}"] = {
                "post": _operation(f"Model repository: {verb}", None, (400, 404))
            }
    return paths


def build_openapi(surface: Surface) -> dict[str, Any]:
    """The OpenAPI 3.1 document of what this server serves for ``surface``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"kubeloop model server: {surface.name}",
            "version": surface.version,
            "description": "V1 and V2 (Open Inference Protocol) REST for one kubeloop bundle. "
            'Every error answer is {"error": "..."} naming the field and the problem. A missing '
            "value is null in JSON (NaN in binary or gRPC tensors); infinite values and the "
            "non-standard JSON tokens NaN/Infinity are refused (400).",
        },
        "paths": _paths(surface),
        "components": {"schemas": _components(surface)},
    }


def install_openapi(app: FastAPI, state: SurfaceState) -> None:
    """Serve :func:`build_openapi` of what ``state`` serves now at ``/openapi.json`` (rebuilt
    when the served version changes) and Swagger UI at ``/docs``."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    from kubeloop.serving._surface import has_explainer

    model = state.model
    built: dict[tuple[Any, ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        served = model.served
        if served is None and built:  # unloaded: the last document still describes the API
            return next(iter(built.values()))
        assert served is not None
        surface = Surface(
            name=model.name,
            version=served.version,
            schema=served.bundle.schema,
            repository=state.limits.model_repository,
            explain=has_explainer(model),
        )
        key = (surface.version, surface.repository, surface.explain)
        if key not in built:
            built.clear()
            built[key] = build_openapi(surface)
        return built[key]

    app.openapi = openapi  # type: ignore[method-assign]
    if app.docs_url is None:

        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{model.name} API")

        app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
