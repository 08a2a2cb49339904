"""The pure cores of the gate and register pipeline steps.

Each step is its own Python process: the libraries each core needs are imported in it, so the
register step loads no pandas, XGBoost or scikit-learn (``bench/steps.py`` measures this). The
register step runs after every gate: it records the run in MLflow whatever the verdict (the only
step that loads MLflow: its import and store take seconds) and registers the challenger as the
champion only when the gate promoted it.

The gate scores the challenger and the current champion on the *same* held-out rows (the test
split of this run) with the one ranking rule of
:func:`kubeloop.training.evaluation.validation_score`, and
promotes only when the challenger is better by more than the margin. With no champion, or a
champion that cannot score this data (other task, classes or features), the challenger wins.
With no champion nothing is scored: the decision carries the challenger's own test score from its
``metrics.json`` (the same rows and measure), and the step loads no model library at all.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeloop.errors import KubeloopError, RegistryError

if TYPE_CHECKING:
    from kubeloop.bundle import Bundle
    from kubeloop.bundle.schema import Schema
    from kubeloop.data import Part

__all__ = ["GateDecision", "gate", "record_run", "register", "score_name"]


def score_name(schema: Schema) -> str:
    """What :func:`validation_score` measures for this schema (higher is better)."""
    if schema.task == "regression":
        return "neg_rmse"
    return "roc_auc" if len(schema.classes) <= 2 else "neg_log_loss"


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict; travels between steps (and to the CLI) as JSON."""

    promote: bool
    reason: str
    metric: str
    margin: float
    challenger_version: str
    challenger_score: float | None  # None: no champion, and the bundle records no test score
    champion_version: str | None = None
    champion_score: float | None = None

    def to_json(self) -> str:
        """The decision as one JSON object (the pipeline's output)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GateDecision:
        """Parse :meth:`to_json` output."""
        return cls(**json.loads(text))


def _score(bundle: Bundle, part: Part) -> float:
    from kubeloop.features import FastTransform
    from kubeloop.training.evaluation import validation_score

    frame = part.X[list(bundle.schema.feature_names)]
    matrix = FastTransform(bundle.preprocessor).transform(frame)
    return validation_score(bundle.schema.task, part.y, bundle.model.predict(matrix))


def _incomparable(champion: Bundle, schema: Schema) -> str | None:
    if champion.schema.task != schema.task:
        return f"the champion is a {champion.schema.task} model, this run is {schema.task}"
    if champion.schema.classes != schema.classes:
        return f"the champion's classes {list(champion.schema.classes)} differ from this data's"
    missing = sorted(set(champion.schema.feature_names) - set(schema.feature_names))
    if missing:
        return f"the champion needs features this data lacks: {missing[:5]}"
    return None


def gate(
    splits_dir: Path, bundle_dir: Path, *, registry_root: str, model_name: str, margin: float
) -> GateDecision:
    """Decide whether the challenger bundle replaces the registry's champion.

    Raises:
        RegistryError: The champion pointer names a version that is missing or damaged.
    """
    from kubeloop.bundle import load_bundle, verify_bundle
    from kubeloop.pipelines.steps.data import load_part, load_schema
    from kubeloop.registry import Registry

    schema = load_schema(splits_dir)
    registry = Registry(registry_root)
    champion_version = registry.champion(model_name)
    if champion_version is None:
        return GateDecision(
            promote=True,
            reason="no champion yet: the first model is promoted",
            metric=score_name(schema),
            margin=float(margin),
            challenger_version=verify_bundle(Path(bundle_dir))["version"],  # model not loaded
            challenger_score=_recorded_score(bundle_dir, score_name(schema)),
        )
    test = load_part(splits_dir, "test")
    challenger = load_bundle(Path(bundle_dir))
    challenger_score = _score(challenger, test)
    promoted = GateDecision(
        promote=True,
        reason="",  # set by each verdict below
        metric=score_name(schema),
        margin=float(margin),
        challenger_version=challenger.version,
        challenger_score=challenger_score,
        champion_version=champion_version,
    )
    champion = load_bundle(registry.fetch(model_name, champion_version))
    why = _incomparable(champion, schema)
    if why is not None:
        return replace(promoted, reason=f"promoted because {why}")
    try:
        champion_score = _score(champion, test)
    except (KubeloopError, ValueError, TypeError, KeyError) as exc:  # e.g. a column changed kind
        return replace(
            promoted, reason=f"promoted because the champion cannot score this data ({exc})"
        )
    better = challenger_score > champion_score + margin
    verdict = "beats" if better else "does not beat"
    reason = (
        f"challenger {challenger.version} {promoted.metric}={challenger_score:.4f} {verdict} "
        f"champion {champion_version} {promoted.metric}={champion_score:.4f} + margin "
        f"{margin:g} on the same {len(test.y)} held-out rows"
    )
    return replace(promoted, promote=better, reason=reason, champion_score=champion_score)


# Where a bundle's metrics.json holds each gate score (and its sign: higher is better).
_RECORDED = {
    "roc_auc": ("roc_auc", 1.0),
    "neg_log_loss": ("log_loss", -1.0),
    "neg_rmse": ("rmse", -1.0),
}


def _read(bundle_dir: Path, name: str) -> dict[str, Any]:
    content: dict[str, Any] = json.loads((Path(bundle_dir) / name).read_text(encoding="utf-8"))
    return content


def _recorded_score(bundle_dir: Path, metric: str) -> float | None:
    """The test score the bundle records for ``metric`` (``None`` if it records none)."""
    key, sign = _RECORDED[metric]
    value = _read(bundle_dir, "metrics.json").get(key)
    return None if value is None else sign * float(value)


def register(
    bundle_dir: Path,
    *,
    registry_root: str,
    model_name: str,
    mlflow_run_id: str = "",
    tracking_uri: str | None = None,
    rollout: str = "direct",
    percent: int = 0,
) -> str:
    """Store the bundle as a version, make it the champion and move MLflow's ``champion`` alias
    (``rollout`` "direct"), or make it the registry's canary/shadow candidate (serving
    ``percent`` % of requests in a canary) through :mod:`kubeloop.registry.rollout`.

    Returns:
        The registered version id.
    """
    from kubeloop.registry import Registry

    manifest = _read(bundle_dir, "manifest.json")
    if manifest.get("name") != model_name:
        raise RegistryError(
            f"bundle {bundle_dir} is named {manifest.get('name')!r}, not {model_name!r}; "
            "pass the same model name to every step."
        )
    registry = Registry(registry_root)
    version = registry.register(bundle_dir)
    if rollout != "direct":
        from kubeloop.registry.rollout import start_canary, start_shadow

        if mlflow_run_id:  # the candidate alias needs the model version
            from kubeloop.registry.tracking import register_run_version

            register_run_version(
                model_name, mlflow_run_id, version=version, tracking_uri=tracking_uri
            )
        if rollout == "canary":
            start_canary(registry, model_name, version, percent=percent, tracking_uri=tracking_uri)
        else:
            start_shadow(registry, model_name, version, tracking_uri=tracking_uri)
        return version
    registry.promote(model_name, version)
    if mlflow_run_id:
        from kubeloop.registry.tracking import promote_run

        promote_run(model_name, mlflow_run_id, version=version, tracking_uri=tracking_uri)
    return version


def record_run(
    bundle_dir: Path,
    decision: GateDecision,
    *,
    registry_root: str,
    model_name: str,
    tracking_uri: str | None = None,
    rollout: str = "direct",
    percent: int = 0,
) -> str:
    """Log the run to MLflow (tagged with the gate's verdict); when the gate promoted the
    challenger, :func:`register` it with that MLflow run (champion, or a staged ``rollout``'s
    candidate).

    Returns:
        The registered version id, or ``""`` when the champion stays.
    """
    from kubeloop.registry.tracking import log_training_run

    run_id = log_training_run(
        bundle_dir,
        params={"gate_margin": decision.margin},
        tracking_uri=tracking_uri,
        tags={
            "kubeloop.gate": "promote" if decision.promote else "keep",
            "kubeloop.gate_reason": decision.reason,
        },
    )
    if not decision.promote:
        return ""
    return register(
        bundle_dir,
        registry_root=registry_root,
        model_name=model_name,
        mlflow_run_id=run_id,
        tracking_uri=tracking_uri,
        rollout=rollout,
        percent=percent,
    )
