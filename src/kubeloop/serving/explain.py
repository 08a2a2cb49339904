"""Explanations on the endpoint: KServe's V1 ``:explain`` verb and the V2 ``explain`` parameter.

Both decode, transform and validate the request exactly as ``:predict`` does (the same steps of
:class:`~kubeloop.serving.model.BundleModel`, the same 400s), then ask the bundle's
:class:`kubeloop.bundle.explain.Explainer` for one contribution per input feature in margin space.

V1 (``POST /v1/models/{name}:explain``) answers::

    {"explanations": [{"contributions": {feature: c}, "bias": b, "margin": m,
                       "probability": p}],          # "prediction": v for regression
     "model_version": "<bundle version>"}

with ``contributions``, ``bias``, ``margin`` and ``probability`` keyed by class for multiclass.

V2 (the Open Inference Protocol has no explain endpoint; its extension point is request
parameters and extra output tensors): ``"parameters": {"explain": true}`` on an ``/infer``
request adds three FP64 outputs after the usual ones: ``contributions`` ``[N, F]`` (``[N, K, F]``
for ``K`` classes; the last axis in the model's input order, as the metadata ``inputs`` list
them), ``bias`` and ``margin`` ``[N]`` (``[N, K]``). Asking for any of them in ``outputs`` does
the same.

Explanations are not recorded in the prediction metrics, drift counters or payload log: they
usually re-explain rows already predicted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from kserve.protocol.infer_type import InferRequest

if TYPE_CHECKING:
    from kubeloop.bundle.explain import Explainer, Explanation
    from kubeloop.serving._served import Served

__all__ = [
    "EXPLAIN_OUTPUTS",
    "explain_outputs",
    "explainer_of",
    "v1_explanations",
    "wants_explanation",
]

EXPLAIN_OUTPUTS = ("contributions", "bias", "margin")


def explainer_of(served: Served) -> Explainer:
    """The explainer of the served bundle, built on first use and kept with it (its TreeSHAP
    kernels, and numba with them, are imported then: a server that explains nothing never loads
    them)."""
    explainer = served.__dict__.get("_explainer")
    if explainer is None:
        from kubeloop.bundle.explain import Explainer

        bundle = served.bundle
        explainer = Explainer(bundle.model, bundle.preprocessor, bundle.schema.feature_names)
        object.__setattr__(served, "_explainer", explainer)  # Served is frozen: a cache slot
    return explainer


def _truthy(value: Any) -> bool:
    value = getattr(value, "bool_param", value)  # gRPC InferParameter
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return value is True or value == 1


def wants_explanation(request: InferRequest) -> bool:
    """Whether a V2 request asks for explanations (``explain`` parameter or an output name)."""
    parameters = request.parameters or {}
    if _truthy(parameters.get("explain", False)):
        return True
    return any(output.name in EXPLAIN_OUTPUTS for output in request.request_outputs or [])


def explain_outputs(served: Served, matrix: np.ndarray) -> dict[str, np.ndarray]:
    """The three V2 explanation tensors of the transformed rows ``matrix``."""
    explanation = explainer_of(served).explain(matrix)
    if len(served.classes) > 2:
        return {
            "contributions": explanation.contributions,
            "bias": explanation.bias,
            "margin": explanation.margin,
        }
    return {
        "contributions": explanation.contributions[:, 0, :],
        "bias": explanation.bias[:, 0],
        "margin": explanation.margin[:, 0],
    }


def v1_explanations(served: Served, matrix: np.ndarray, raw: np.ndarray) -> list[dict[str, Any]]:
    """One V1 explanation object per row (``raw``: the model's prediction of those rows)."""
    explanation: Explanation = explainer_of(served).explain(matrix)
    features = explanation.features
    contributions = explanation.contributions.tolist()
    bias, margin = explanation.bias.tolist(), explanation.margin.tolist()
    classes = served.class_list
    if len(classes) > 2:
        return [
            {
                "contributions": {
                    cls: dict(zip(features, row[k], strict=True)) for k, cls in enumerate(classes)
                },
                "bias": dict(zip(classes, bias[i], strict=True)),
                "margin": dict(zip(classes, margin[i], strict=True)),
                "probability": dict(zip(classes, probabilities, strict=True)),
            }
            for i, (row, probabilities) in enumerate(zip(contributions, raw.tolist(), strict=True))
        ]
    key = "probability" if classes else "prediction"
    return [
        {
            "contributions": dict(zip(features, row[0], strict=True)),
            "bias": bias[i][0],
            "margin": margin[i][0],
            key: value,
        }
        for i, (row, value) in enumerate(zip(contributions, raw.tolist(), strict=True))
    ]
