"""MLflow tracking: one MLflow run per pipeline run, and the ``champion``/``candidate`` aliases.

Every training run logs its parameters, held-out metrics (the chosen model's and every
candidate's), the plots and the whole bundle. A run's bundle becomes a model version of the
registered model (tagged ``kubeloop.version`` with the kubeloop version id) when it is registered
(:func:`register_run_version`) or promoted (:func:`promote_run`, which the pipeline calls after
the gate passed). The aliases follow the kubeloop registry's pointer: :func:`promote_run` moves
``champion``, and :func:`set_aliases` -- called by every promotion and rollback of
:mod:`kubeloop.registry.rollout` -- makes ``champion`` and ``candidate`` name the pointer's
versions, so MLflow and the kubeloop registry name the same champion and candidate.

Embedded default: a sqlite store under the kubeloop home (``<home>/mlflow/mlflow.db``, artifacts in
``<home>/mlflow/artifacts``). On a cluster ``MLFLOW_TRACKING_URI`` points at the MLflow server.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubeloop.bundle import plot_files
from kubeloop.errors import ConfigError
from kubeloop.registry import kubeloop_home

__all__ = [
    "CANDIDATE_ALIAS",
    "CHAMPION_ALIAS",
    "DEFAULT_EXPERIMENT",
    "champion_model_version",
    "default_tracking_uri",
    "existing_store",
    "flatten_metrics",
    "log_training_run",
    "model_aliases",
    "prepare_store",
    "promote_run",
    "record_rollout_decision",
    "register_run_version",
    "set_aliases",
]

CHAMPION_ALIAS = "champion"
CANDIDATE_ALIAS = "candidate"
_KUBELOOP_VERSION_TAG = "kubeloop.version"
DEFAULT_EXPERIMENT = "kubeloop"
_BUNDLE_ARTIFACTS = "bundle"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a sqlite store under the kubeloop home."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    return f"sqlite:///{kubeloop_home() / 'mlflow' / 'mlflow.db'}"


def existing_store(tracking_uri: str | None = None) -> str | None:
    """The tracking URI (``tracking_uri`` or :func:`default_tracking_uri`) when its store
    exists, ``None`` when it is a sqlite file that does not (nothing was ever tracked there).

    Servers (``http://...``) and other stores count as existing. MLflow is not imported.
    """
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    return uri


def _client(tracking_uri: str | None) -> Any:
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def prepare_store(tracking_uri: str) -> None:
    """Create a sqlite tracking store that does not exist yet, with all of MLflow's tables.

    MLflow creates a new store's tables on first use (a hundred migrations: seconds). This
    builds the store under a temporary name beside its place, in a process of its own (its
    connections and MLflow's log lines end with it), and links it into place only if none is
    there by then: a pipeline step that opens the store first makes its own, and no process ever
    sees half a store. Other stores (an existing file, a server): nothing to do.

    Raises:
        subprocess.CalledProcessError: MLflow could not create the store.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".new-store-", dir=path.parent) as folder:
        draft = f"sqlite:///{Path(folder) / path.name}"
        subprocess.run(
            [sys.executable, "-c", _CREATE_STORE, draft], check=True, capture_output=True
        )
        with contextlib.suppress(FileExistsError):
            os.link(Path(folder) / path.name, path)


_CREATE_STORE = (
    "import sys; from mlflow.tracking import MlflowClient; "
    "MlflowClient(tracking_uri=sys.argv[1]).search_experiments(max_results=1)"
)


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if tracking_uri.startswith("sqlite:///"):  # keep artifacts beside the store, not in ./mlruns
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        location = (db.parent / "artifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of a (nested) metrics document as ``{"a.b": value}`` MLflow metrics.

    Lists (confusion matrices, curves) and ``None`` values are left out.
    """
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        elif (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        ):
            flat[name] = float(value)
    return flat


_BATCH = 100  # values of each kind per log_batch call (MLflow allows 100 params, 1000 metrics)


def _log_values(
    client: Any, run_id: str, params: Mapping[str, Any], metrics: Mapping[str, Any]
) -> None:
    """Params and metrics through ``log_batch``: one store transaction per call instead of one
    per value (a sqlite store took seconds for the ~80 values of a run, one by one)."""
    from mlflow.entities import Metric, Param

    stamp = int(time.time() * 1000)
    param_list = [Param(key, str(value)[:500]) for key, value in params.items()]
    metric_list = [Metric(key, value, stamp, 0) for key, value in flatten_metrics(metrics).items()]
    for start in range(0, max(len(param_list), len(metric_list)), _BATCH):
        client.log_batch(
            run_id,
            params=param_list[start : start + _BATCH],
            metrics=metric_list[start : start + _BATCH],
        )


def log_training_run(
    bundle_dir: str | Path,
    *,
    params: Mapping[str, Any],
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log one training run: parameters, the bundle's metrics, plots and the bundle itself.

    Args:
        bundle_dir: The written bundle (its ``manifest.json`` and ``metrics.json`` are read).
        params: Pipeline parameters (data URI, target, workers, margin...).
        tracking_uri: The MLflow store; default :func:`default_tracking_uri`.
        experiment: Experiment name (created on first use).
        run_name: Shown in the MLflow UI; default the bundle version.
        tags: Extra run tags.

    Returns:
        The MLflow run id.
    """
    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    metrics = json.loads((bundle_dir / "metrics.json").read_text(encoding="utf-8"))
    uri = tracking_uri or default_tracking_uri()
    client = _client(uri)
    run = client.create_run(
        _experiment_id(client, experiment, uri),
        run_name=run_name or str(manifest["version"]),
        tags={
            "kubeloop.model": str(manifest["name"]),
            "kubeloop.version": str(manifest["version"]),
            "kubeloop.task": str(manifest["task"]),
            "kubeloop.data_hash": str(manifest["data_hash"]),
            "kubeloop.chosen": str(metrics.get("model", "")),
            **dict(tags or {}),
        },
    )
    run_id = str(run.info.run_id)
    try:
        _log_values(client, run_id, {**manifest.get("params", {}), **params}, metrics)
        for plot in plot_files(bundle_dir):
            client.log_artifact(run_id, str(plot), artifact_path="plots")
        _log_tuning(client, run_id, metrics.get("tuning"))
        client.log_artifacts(run_id, str(bundle_dir), artifact_path=_BUNDLE_ARTIFACTS)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _log_tuning(client: Any, run_id: str, tuning: Mapping[str, Any] | None) -> None:
    """The search's best parameters as ``tune.best.*`` params and its trials as a JSON table."""
    if not tuning:
        return
    params = {f"tune.best.{key}": str(value) for key, value in tuning["best_params"].items()}
    _log_values(client, run_id, {**params, "tune.chosen": str(bool(tuning.get("chosen")))}, {})
    client.log_dict(run_id, {"trials": tuning["trials"]}, "tuning/trials.json")


def register_run_version(
    model_name: str,
    run_id: str,
    *,
    version: str,
    tracking_uri: str | None = None,
) -> str:
    """Register the run's bundle as a model version (once per run); no alias is moved.

    Args:
        model_name: The registered model (created on first use).
        run_id: The MLflow run logged by :func:`log_training_run`.
        version: The kubeloop bundle version (stored as the ``kubeloop.version`` tag, by which
            :func:`set_aliases` finds the model version).
        tracking_uri: The MLflow store; default :func:`default_tracking_uri`.

    Returns:
        The MLflow model version number of the run's bundle.
    """
    from mlflow.exceptions import MlflowException

    if not run_id:
        raise ConfigError("registering a model version needs the MLflow run id of its bundle.")
    client = _client(tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name)
    for existing in client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'"):
        return str(existing.version)
    run = client.get_run(run_id)
    created = client.create_model_version(
        model_name,
        source=f"{run.info.artifact_uri}/{_BUNDLE_ARTIFACTS}",
        run_id=run_id,
        tags={_KUBELOOP_VERSION_TAG: version},
    )
    return str(created.version)


def promote_run(
    model_name: str,
    run_id: str,
    *,
    version: str,
    tracking_uri: str | None = None,
) -> str:
    """Register the run's bundle as a model version and point the ``champion`` alias at it.

    Args:
        model_name: The registered model (created on first use).
        run_id: The MLflow run logged by :func:`log_training_run`.
        version: The kubeloop bundle version (stored as a model-version tag).
        tracking_uri: The MLflow store; default :func:`default_tracking_uri`.

    Returns:
        The MLflow model version number that now carries the alias.
    """
    if not run_id:
        raise ConfigError("promote_run needs the MLflow run id logged for this bundle.")
    model_version = register_run_version(
        model_name, run_id, version=version, tracking_uri=tracking_uri
    )
    client = _client(tracking_uri)
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, model_version)
    client.set_tag(run_id, "kubeloop.promoted", "true")
    return model_version


def _model_versions(client: Any, model_name: str) -> dict[str, str]:
    """MLflow model version number -> the kubeloop version it holds (its ``kubeloop.version``)."""
    found = client.search_model_versions(f"name='{model_name}'")
    return {
        str(entry.version): str(entry.tags[_KUBELOOP_VERSION_TAG])
        for entry in found
        if entry.tags and entry.tags.get(_KUBELOOP_VERSION_TAG)
    }


def model_aliases(model_name: str, *, tracking_uri: str | None = None) -> dict[str, str | None]:
    """The kubeloop versions the ``champion`` and ``candidate`` aliases name now.

    Returns:
        ``{"champion": version or None, "candidate": version or None}`` (``None``: no such
        alias, no registered model, or a model version without a ``kubeloop.version`` tag).
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        aliases = dict(client.get_registered_model(model_name).aliases or {})
    except MlflowException:
        aliases = {}
    held = _model_versions(client, model_name) if aliases else {}
    return {
        alias: held.get(str(aliases[alias])) if alias in aliases else None
        for alias in (CHAMPION_ALIAS, CANDIDATE_ALIAS)
    }


def set_aliases(
    model_name: str,
    *,
    champion_version: str | None,
    candidate_version: str | None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Make the ``champion`` and ``candidate`` aliases name these kubeloop versions.

    Each kubeloop version id is mapped to the MLflow model version tagged with it (the newest
    when several are). An alias whose version is ``None`` is removed. A version never
    registered in MLflow (no tracked run registered it) is skipped with a note, and its alias
    removed rather than left naming another version. Aliases that already agree are not
    written, so calling this again is cheap and changes nothing.

    Args:
        model_name: The registered model.
        champion_version: The registry pointer's champion (``None``: no alias).
        candidate_version: The pointer's candidate (``None``: no alias).
        tracking_uri: The MLflow store; default :func:`default_tracking_uri`.

    Returns:
        ``{"champion": MLflow version or None, "candidate": MLflow version or None,
        "changed": [one line per alias moved or removed], "notes": [versions skipped...]}``.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    result: dict[str, Any] = {CHAMPION_ALIAS: None, CANDIDATE_ALIAS: None, "changed": []}
    try:
        aliases = {
            alias: str(number)
            for alias, number in (client.get_registered_model(model_name).aliases or {}).items()
        }
    except MlflowException:
        wanted = [v for v in (champion_version, candidate_version) if v is not None]
        result["notes"] = [
            f"MLflow has no registered model {model_name!r}: the aliases of "
            f"{', '.join(wanted) or 'no version'} were skipped"
        ]
        return result
    held = _model_versions(client, model_name)
    notes: list[str] = []
    for alias, wanted_version in (
        (CHAMPION_ALIAS, champion_version),
        (CANDIDATE_ALIAS, candidate_version),
    ):
        current = aliases.get(alias)
        if wanted_version is None:
            target = None
        elif held.get(str(current)) == wanted_version:
            target = current  # already names a model version of this kubeloop version
        else:
            numbers = [int(n) for n, kubeloop in held.items() if kubeloop == wanted_version]
            target = str(max(numbers)) if numbers else None
            if target is None:
                notes.append(
                    f"{wanted_version} was never registered in MLflow model {model_name!r}: "
                    f"alias {alias!r} skipped"
                )
        if target is None and current is not None:
            client.delete_registered_model_alias(model_name, alias)
            result["changed"].append(f"{alias} removed (was model version {current})")
        elif target is not None and target != current:
            client.set_registered_model_alias(model_name, alias, target)
            result["changed"].append(f"{alias} -> {wanted_version} (model version {target})")
        result[alias] = target
    result["notes"] = notes
    return result


def record_rollout_decision(
    model_name: str,
    version: str,
    decision: Mapping[str, Any],
    *,
    tracking_uri: str | None = None,
) -> bool:
    """Tag the MLflow run of a staged rollout's candidate with the monitor's decision
    (``kubeloop.rollout`` = promote/rollback, ``kubeloop.rollout_reason``) and log the whole
    decision as ``rollout/decision.json``.

    Returns:
        Whether the candidate has a run in this store (``False``: nothing was written).
    """
    client = _client(tracking_uri)
    found = [
        entry
        for entry in client.search_model_versions(f"name='{model_name}'")
        if (entry.tags or {}).get(_KUBELOOP_VERSION_TAG) == version
    ]
    if not found:
        return False
    run_id = found[0].run_id
    verdict = decision.get("verdict") or {}
    client.set_tag(run_id, "kubeloop.rollout", str(decision.get("action")))
    client.set_tag(run_id, "kubeloop.rollout_reason", "; ".join(verdict.get("reasons", []))[:5000])
    client.log_dict(run_id, dict(decision), "rollout/decision.json")
    return True


def champion_model_version(model_name: str, *, tracking_uri: str | None = None) -> dict[str, str]:
    """The model version the ``champion`` alias points at: ``{"version", "run_id", "kubeloop"}``.

    Raises:
        ConfigError: The model has no ``champion`` alias in this store.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        found = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as exc:
        raise ConfigError(
            f"MLflow model {model_name!r} has no '{CHAMPION_ALIAS}' alias in "
            f"{tracking_uri or default_tracking_uri()}; no run passed the gate yet."
        ) from exc
    return {
        "version": str(found.version),
        "run_id": str(found.run_id),
        "kubeloop": str(found.tags.get("kubeloop.version", "")),
    }
