"""The deploy step: make the new champion serve.

Embedded: the champion pointer written by the register step *is* the deployment; a running
``kubeloop serve --registry DIR --model NAME`` notices it and hot-swaps. Cluster: patch the
KServe InferenceService so its predictor loads the new version (``storageUri``; optionally a
canary traffic percentage), then wait until the InferenceService reports Ready for the new
generation, with a timeout.

Two predictor shapes are supported: the ServingRuntime form (``spec.predictor.model.storageUri``,
a JSON merge patch) and a custom container that reads the ``STORAGE_URI`` environment variable
(a JSON patch replacing that one value, since a merge patch would replace the whole list).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubeloop.errors import ConfigError, KubeloopError
from kubeloop.pipelines._k8s import custom_objects_api

__all__ = [
    "ISVC_GROUP",
    "ISVC_PLURAL",
    "ISVC_VERSION",
    "DeployTimeoutError",
    "StoragePatch",
    "build_storage_patch",
    "deploy_champion",
    "deploy_inference_service",
    "is_ready",
]

ISVC_GROUP, ISVC_VERSION, ISVC_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


class DeployTimeoutError(KubeloopError, TimeoutError):
    """The InferenceService did not become Ready with the new model in time."""


@dataclass(frozen=True)
class StoragePatch:
    """A patch for the Kubernetes API: ``merge`` (a partial object) or ``json`` (operations)."""

    kind: str  # "merge" | "json"
    body: Any


def build_storage_patch(
    isvc: Mapping[str, Any], storage_uri: str, *, canary_percent: int | None = None
) -> StoragePatch:
    """The patch that points ``isvc``'s predictor at ``storage_uri``.

    Args:
        isvc: The current InferenceService (as returned by the API).
        storage_uri: The bundle location, e.g. ``s3://kubeloop/registry/churn/versions/v...``.
        canary_percent: 1-99 sends that share of traffic to the new revision (Knative mode);
            ``None`` or 0 leaves traffic splitting off.

    Raises:
        ConfigError: The predictor has neither ``model`` nor a container with ``STORAGE_URI``,
            or the canary percentage is out of range.
    """
    if canary_percent is not None and not 0 <= canary_percent <= 100:
        raise ConfigError(f"canary percent must be 0-100, got {canary_percent}.")
    canary = canary_percent if canary_percent else None
    name = isvc.get("metadata", {}).get("name", "?")
    predictor = isvc.get("spec", {}).get("predictor", {})
    if "model" in predictor:
        patch: dict[str, Any] = {"model": {"storageUri": storage_uri}}
        if canary is not None:
            patch["canaryTrafficPercent"] = canary
        return StoragePatch("merge", {"spec": {"predictor": patch}})
    for c_index, container in enumerate(predictor.get("containers") or []):
        for e_index, env in enumerate(container.get("env") or []):
            if env.get("name") == "STORAGE_URI":
                base = f"/spec/predictor/containers/{c_index}/env/{e_index}/value"
                ops: list[dict[str, Any]] = [{"op": "replace", "path": base, "value": storage_uri}]
                if canary is not None:
                    op = "replace" if "canaryTrafficPercent" in predictor else "add"
                    ops.append(
                        {"op": op, "path": "/spec/predictor/canaryTrafficPercent", "value": canary}
                    )
                return StoragePatch("json", ops)
    raise ConfigError(
        f"InferenceService {name!r} has no spec.predictor.model and no predictor container with "
        "a STORAGE_URI variable; deploy it with the kubeloop Helm chart."
    )


def is_ready(isvc: Mapping[str, Any]) -> bool:
    """Ready condition True for the current generation."""
    status = isvc.get("status") or {}
    generation = isvc.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def deploy_inference_service(
    name: str,
    namespace: str,
    storage_uri: str,
    *,
    canary_percent: int | None = None,
    timeout: float = 600.0,
    poll: float = 5.0,
    api: Any | None = None,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Patch the InferenceService to serve ``storage_uri`` and wait until it is Ready.

    Returns:
        One human line describing what was deployed.

    Raises:
        ConfigError: The InferenceService cannot be patched this way.
        DeployTimeoutError: It was not Ready within ``timeout`` seconds.
    """
    objects = custom_objects_api(api)
    args = (ISVC_GROUP, ISVC_VERSION, namespace, ISVC_PLURAL, name)
    patch = build_storage_patch(
        objects.get_namespaced_custom_object(*args), storage_uri, canary_percent=canary_percent
    )
    if patch.kind == "json":  # the client always sends merge-patch unless a header overrides it
        objects.api_client.set_default_header("Content-Type", "application/json-patch+json")
    try:
        objects.patch_namespaced_custom_object(*args, patch.body)
    finally:
        if patch.kind == "json":
            objects.api_client.default_headers.pop("Content-Type", None)
    if progress is not None:
        progress(f"patched InferenceService {namespace}/{name}: storageUri={storage_uri}")
    deadline = time.monotonic() + timeout
    while True:
        current = objects.get_namespaced_custom_object(*args)
        if is_ready(current):
            traffic = f", canary {canary_percent}%" if canary_percent else ""
            return f"InferenceService {namespace}/{name} Ready with {storage_uri}{traffic}"
        if time.monotonic() > deadline:
            conditions = (current.get("status") or {}).get("conditions") or []
            raise DeployTimeoutError(
                f"InferenceService {namespace}/{name} not Ready after {timeout:.0f}s with "
                f"{storage_uri} (conditions: {conditions}); check `kubectl -n {namespace} "
                f"describe inferenceservice {name}`."
            )
        time.sleep(poll)


def deploy_champion(
    version: str,
    *,
    registry_root: str,
    model_name: str,
    inference_service: str = "",
    namespace: str = "",
    canary_percent: int = 0,
    timeout: float = 600.0,
    rollout: str = "direct",
    progress: Callable[[str], None] | None = None,
) -> str:
    """The deploy step: embedded (no InferenceService named) or cluster (patch and wait).

    A canary or shadow candidate (``rollout``) is not deployed by a patch: every model server
    that follows the registry (``kubeloop serve --registry``, the chart's registry mode) loads
    it beside the champion from the pointer, and the monitor promotes or rolls it back.

    Returns:
        One human line describing the outcome.
    """
    from kubeloop.registry import Registry

    registry = Registry(registry_root)
    if rollout != "direct":
        candidate = registry.candidate(model_name)
        if candidate is None or candidate["version"] != version:
            raise ConfigError(
                f"deploy was asked for the {rollout} candidate {model_name} {version} but the "
                f"registry's candidate is {candidate and candidate['version']}; run the register "
                "step first."
            )
        share = f"{candidate['percent']}% of requests" if rollout == "canary" else "a shadow copy"
        return (
            f"{rollout}: {model_name} {version} is the candidate in {registry.root}; servers "
            f"following the registry give it {share} beside champion "
            f"{registry.champion(model_name)}; the monitor promotes or rolls it back."
        )
    champion = registry.champion(model_name)
    if champion != version:
        raise ConfigError(
            f"deploy was asked for {model_name} {version} but the registry champion is "
            f"{champion}; run the register step first."
        )
    if not inference_service:
        return (
            f"embedded: champion pointer of {model_name} is {version} in {registry.root}; a "
            f"running `kubeloop serve --registry {registry.root} --model {model_name}` hot-swaps "
            "to it."
        )
    return deploy_inference_service(
        inference_service,
        namespace or "default",
        registry.version_uri(model_name, version),
        canary_percent=canary_percent or None,
        timeout=timeout,
        progress=progress,
    )
