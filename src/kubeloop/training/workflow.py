"""The whole of ``kubeloop train``: data in, a verified model bundle out.

Every stage is one call into its module; this file only sequences them. Nothing is written until
every stage has succeeded, and then the bundle is written atomically by :mod:`kubeloop.bundle`.

The steps after the data stage are shared with the pipeline: :func:`prepare_inputs` (preprocessor
+ matrices), :func:`train_all` (candidates), :func:`finish_bundle` (test metrics, choice,
``metrics.json``, profile, plots, bundle). :func:`run_training` chains them in memory; the KFP
steps (:mod:`kubeloop.pipelines.steps.data`, :mod:`~kubeloop.pipelines.steps.evaluate`) keep
results on disk.
Each of those steps is a Python process of its own, so the heavy parts (XGBoost and Ray,
plotting, the bundle) are imported by the functions that use them: the features step imports no
XGBoost.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kubeloop.bundle.preprocessor import PreprocessorSpec
from kubeloop.bundle.schema import Schema, Task
from kubeloop.console import Meter, ProgressFn, quiet
from kubeloop.data import PARTS, Dataset, Part, build_dataset, load_dataset, split_parts
from kubeloop.errors import ConfigError, TrainingError
from kubeloop.features import FastTransform, preprocessor_spec
from kubeloop.names import check_name

if TYPE_CHECKING:
    from kubeloop.bundle import Bundle
    from kubeloop.training import Candidate, TrainConfig

__all__ = [
    "PARTS",
    "SUMMARY_METRICS",
    "Matrix",
    "Packaged",
    "TrainResult",
    "candidate_rows",
    "class_count",
    "finish_bundle",
    "prepare_inputs",
    "run_training",
    "train_all",
    "trained_on_text",
]

# The metrics every candidate is compared on, per task (the CLI's and the KFP UI's tables).
SUMMARY_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("roc_auc", "pr_auc", "f1", "accuracy", "precision", "recall", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}

Matrix = tuple[np.ndarray, np.ndarray]  # (model inputs after FastTransform, encoded target)
# Most test rows the bundle's global importance is computed on (:func:`_importance_rows`).
IMPORTANCE_ROWS = 500


@dataclass(frozen=True)
class TrainResult:
    """What :func:`run_training` produced.

    Attributes:
        bundle: The written, verified bundle.
        chosen: Name of the candidate that became the bundle's model.
        candidates: Test metrics of every candidate, by name.
        notes: What the data stage reported (coercions, dropped columns).
    """

    bundle: Bundle
    chosen: str
    candidates: dict[str, dict[str, Any]]
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Packaged:
    """What :func:`finish_bundle` produced.

    Attributes:
        bundle: The written, verified bundle.
        chosen: The candidate that became the bundle's model.
        candidates: Test metrics of every candidate, by name (training order).
        test_prediction: The chosen model's prediction on the test matrix.
    """

    bundle: Bundle
    chosen: Candidate
    candidates: dict[str, dict[str, Any]]
    test_prediction: np.ndarray


def class_count(schema: Schema) -> int:
    """The models' number of classes: the schema's classes, 1 for regression."""
    return len(schema.classes) if schema.task == "classification" else 1


def prepare_inputs(
    schema: Schema, parts: Mapping[str, Part], *, progress: ProgressFn | None = None
) -> tuple[PreprocessorSpec, dict[str, Matrix]]:
    """Fit the preprocessor on ``parts["train"]`` and turn every part into ``(x, y)``.

    The preprocessor's statistics come from the training rows alone
    (:func:`~kubeloop.features.preprocessor_spec`: no throw-away transform); the matrices are
    float32, the type XGBoost reads (its predictions are the same as from float64), made chunk
    by chunk (:meth:`FastTransform.transform`) so that only the matrices are new.

    Args:
        schema: The data's schema.
        parts: Split name -> rows; must hold ``"train"``.
        progress: Told rows/s and the time left when the matrices take more than a few seconds.

    Returns:
        The preprocessor spec and, per part name, its model-input matrix (float32) and target.
    """
    train = parts["train"]
    spec = preprocessor_spec(train.X, schema, rows=train.rows)
    transform = FastTransform(spec)
    meter = Meter(progress or quiet, "features", sum(len(part.y) for part in parts.values()))
    matrices = {
        name: (
            transform.transform(part.X, dtype=np.float32, rows=part.rows, meter=meter),
            np.asarray(part.y),
        )
        for name, part in parts.items()
    }
    if meter.elapsed > 3.0:
        meter.finish()
    return spec, matrices


def train_all(
    schema: Schema,
    matrices: Mapping[str, Matrix],
    *,
    config: TrainConfig,
    progress: ProgressFn | None = None,
) -> list[Candidate]:
    """Train every candidate of ``config`` on ``matrices["train"]``, scored on ``"validation"``."""
    from kubeloop.training import train_candidates

    return train_candidates(
        matrices["train"],
        matrices["validation"],
        task=schema.task,
        n_classes=class_count(schema),
        config=config,
        progress=progress,
    )


def finish_bundle(
    candidates: Sequence[Candidate],
    *,
    schema: Schema,
    preprocessor: PreprocessorSpec,
    train_features: pd.DataFrame | None,
    matrices: Mapping[str, Matrix],
    out: Path,
    name: str,
    params: Mapping[str, Any],
    data_hash: str,
    progress: ProgressFn | None = None,
    feature_profile: dict[str, dict[str, Any]] | None = None,
) -> Packaged:
    """Test every candidate, keep the best by validation score and write it as a bundle.

    ``metrics.json`` holds the chosen model's test metrics at the top level, plus ``model``,
    ``split``, ``validation_scores`` and every candidate's test metrics under ``candidates``.

    Args:
        candidates: The trained candidates.
        schema: The data's schema.
        preprocessor: The spec the matrices were built with.
        train_features: The training rows' features (the reference profile's data);
            ``None`` when ``feature_profile`` is given.
        matrices: Split name -> ``(x, y)``; must hold ``"train"`` and ``"test"``.
        out: The bundle directory to create (must not exist).
        name: The model name recorded in the bundle.
        params: Recorded in the manifest, over the chosen candidate's own params.
        data_hash: The source data's sha256.
        progress: Called with one line per step.
        feature_profile: The training features' profile, made before training
            (:func:`~kubeloop.bundle.profile.profile_features`).

    Returns:
        The written and verified bundle, the chosen candidate and every candidate's test metrics.

    Raises:
        TrainingError: ``candidates`` is empty.
    """
    from kubeloop.bundle import load_bundle, write_bundle
    from kubeloop.bundle.explain import Explainer, global_importance
    from kubeloop.bundle.models import predict_in_chunks
    from kubeloop.bundle.profile import build_reference_profile
    from kubeloop.training.candidates import TUNED
    from kubeloop.training.evaluation import curve_points, evaluate, write_plots

    say = progress or quiet
    if not candidates:
        raise TrainingError("No candidates were trained; name at least one candidate.")
    x_test, y_test = matrices["test"]
    chosen = max(candidates, key=lambda c: c.validation_score)
    predictions = {c.name: predict_in_chunks(c.model, x_test) for c in candidates}
    tested = {
        c.name: evaluate(schema.task, y_test, predictions[c.name], classes=schema.classes)
        for c in candidates
    }
    say(f"chosen: {chosen.name} (best validation score {chosen.validation_score:.4f})")
    # One batch: XGBoost's own TreeSHAP (same values, nothing to compile on the critical path).
    explainer = Explainer(chosen.model, preprocessor, schema.feature_names, tables=False)
    explained = _importance_rows(len(x_test))
    importance = global_importance(explainer.explain(x_test[explained]))
    metrics = {
        **tested[chosen.name],
        "model": chosen.name,
        "split": "test",
        "validation_scores": {c.name: float(c.validation_score) for c in candidates},
        "selection": chosen.selection or {"method": "holdout"},
        "candidates": tested,
        "trained_on": {c.name: c.trained_on for c in candidates},
        # mean |contribution| (TreeSHAP / linear terms, margin space) per input feature
        "global_importance": {
            "split": "test",
            "rows": len(explained),
            "features": [
                {"feature": name, "mean_abs_contribution": value}
                for name, value in sorted(importance.items(), key=lambda kv: -kv[1])
            ],
        },
        "curves": curve_points(
            schema.task, y_test, predictions[chosen.name], classes=schema.classes
        ),
    }
    tuning = next((c.tuning for c in candidates if c.tuning), None)
    if tuning is not None:
        # The record sits on the default XGBoost when the search gave no model.
        metrics["tuning"] = {**tuning, "chosen": chosen.name == TUNED}
        say(
            f"tuning: {tuning['trial_count']} trials in {tuning['used_s']:.0f} s of "
            f"{tuning['budget_s']:g} s; tuned XGBoost "
            + ("chosen" if chosen.name == TUNED else "not chosen")
        )
    engine = next((c.params for c in candidates if "engine" in c.params), None)
    if engine is not None:  # where XGBoost trained: this process, or which Ray nodes
        metrics["engine"] = {
            "kind": engine["engine"], "workers": engine["workers"], **engine.get("ray", {})
        }  # fmt: skip
    x_train, _ = matrices["train"]
    profile = build_reference_profile(
        train_features, schema, predict_in_chunks(chosen.model, x_train), features=feature_profile
    )
    with tempfile.TemporaryDirectory(prefix="kubeloop-plots-") as plot_dir:
        plots = write_plots(
            Path(plot_dir),
            task=schema.task,
            y_true=y_test,
            prediction=predictions[chosen.name],
            importance=chosen.model.feature_importance(preprocessor.output_columns),
            classes=schema.classes,
            contributions=importance,
        )
        path = write_bundle(
            Path(out),
            name=name,
            schema=schema,
            preprocessor=preprocessor,
            model=chosen.model,
            reference_profile=profile,
            metrics=metrics,
            plots=plots,
            params={**chosen.params, **params, **_tuning_params(tuning)},
            data_hash=data_hash,
        )
    return Packaged(load_bundle(path), chosen, tested, predictions[chosen.name])


def _importance_rows(rows: int) -> np.ndarray:
    """The test rows the global importance is computed on: all of them up to
    :data:`IMPORTANCE_ROWS`, else that many drawn without replacement (seeded, in order).

    TreeSHAP costs trees x leaves x depth^2 per row: on the loaded 2-core machine a tuned model
    of 1,800 128-leaf trees took 256 s for California's 4,128 test rows, one of 1,435 64-leaf
    trees 15 s for 1,000 rows. For the default model there, 500 drawn rows give every column's
    share of the importance within 0.012 of all 4,128 rows' and the same order.
    """
    if rows <= IMPORTANCE_ROWS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(0).choice(rows, IMPORTANCE_ROWS, replace=False))


def _tuning_params(tuning: Mapping[str, Any] | None) -> dict[str, Any]:
    """The search's headline numbers for the manifest (the trials stay in ``metrics.json``)."""
    if tuning is None:
        return {}
    return {
        "tune_budget_s": tuning["budget_s"],
        "tune_used_s": tuning["used_s"],
        "tune_trials": tuning["trial_count"],
        "tune_best_params": tuning["best_params"],
    }


def _load(
    data: str | Path | pd.DataFrame,
    *,
    target: str,
    task: Task | str,
    normalize_labels: bool,
    progress: ProgressFn,
) -> Dataset:
    if isinstance(data, pd.DataFrame):
        return build_dataset(
            data,
            target=target,
            task=task,  # type: ignore[arg-type]
            normalize_labels=normalize_labels,
        )
    return load_dataset(
        data,
        target=target,
        task=task,  # type: ignore[arg-type]
        normalize_labels=normalize_labels,
        progress=progress,
    )


def run_training(
    data: str | Path | pd.DataFrame,
    *,
    target: str,
    out: str | Path,
    task: Task | str = "auto",
    config: TrainConfig | None = None,
    name: str = "model",
    normalize_labels: bool = False,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Validate data, prepare features, train every candidate and write the best as a bundle.

    Args:
        data: A CSV/Parquet path (or fsspec URL) or an in-memory frame.
        target: The column to predict.
        out: The bundle directory to create; it must not exist yet.
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        config: Training settings (workers, seed, boosting rounds...).
        name: The model name recorded in the bundle (:data:`kubeloop.names.NAME_RULE`).
        normalize_labels: Merge target labels that differ only in case or surrounding spaces
            (see :func:`kubeloop.data.build_dataset`) instead of refusing them.
        progress: Called with one line per step.

    Returns:
        The written bundle and every candidate's test metrics.

    Raises:
        DataValidationError: The data cannot be trained on; nothing was written.
        ConfigError: ``out`` already exists, or ``name`` is not a valid model name.
    """
    from kubeloop.training import TrainConfig

    check_name(name)
    config = config or TrainConfig()
    say = progress or quiet
    out = Path(out)
    if out.exists():
        raise ConfigError(
            f"Output directory '{out}' already exists; choose a new --out or remove it."
        )

    say(f"loading data (target '{target}', task {task})")
    dataset = _load(data, target=target, task=task, normalize_labels=normalize_labels, progress=say)
    schema, notes, data_hash = dataset.schema, dataset.notes, dataset.data_hash
    for note in notes:
        say(note)
    parts = split_parts(dataset, seed=config.seed)
    say(
        f"{schema.task}: {len(schema.features)} features; rows "
        + ", ".join(f"{part} {len(rows.y)}" for part, rows in parts.items())
    )
    spec, matrices = prepare_inputs(schema, parts, progress=say)
    # The drift baseline of the features, then the features go: from here on only the
    # matrices hold the data (one copy of it, float32).
    features = _feature_profile(parts["train"], schema)
    del dataset, parts
    say(f"features prepared: {matrices['train'][0].shape[1]} model inputs")
    candidates = train_all(schema, matrices, config=config, progress=say)
    packaged = finish_bundle(
        candidates,
        schema=schema,
        preprocessor=spec,
        train_features=None,
        feature_profile=features,
        matrices=matrices,
        out=out,
        name=name,
        params={"seed": config.seed, "workers": config.workers, "tune_budget": config.tune_budget},
        data_hash=data_hash,
        progress=say,
    )
    bundle = packaged.bundle
    say(f"bundle written: {bundle.path} (version {bundle.version})")
    return TrainResult(
        bundle=bundle,
        chosen=packaged.chosen.name,
        candidates=packaged.candidates,
        notes=notes,
    )


def _feature_profile(train: Part, schema: Schema) -> dict[str, dict[str, Any]]:
    from kubeloop.bundle.profile import profile_features

    return profile_features(train.X, schema, rows=train.rows)


def candidate_rows(result: TrainResult) -> list[dict[str, Any]]:
    """One table row per candidate (chosen marked): what it was trained on and the task's
    summary metrics."""
    task = result.bundle.schema.task
    trained = result.bundle.metrics.get("trained_on", {})
    rows = []
    for name, values in result.candidates.items():
        row: dict[str, Any] = {"candidate": f"{name} *" if name == result.chosen else name}
        row["trained on"] = trained_on_text(trained.get(name))
        # Undefined metrics (None, e.g. AUC on a one-class split) stay out: shown as "-".
        row.update({m: values[m] for m in SUMMARY_METRICS[task] if values.get(m) is not None})
        rows.append(row)
    return rows


def trained_on_text(trained: dict[str, Any] | None) -> str:
    """What a candidate was trained on, for tables: ``"3,000,000 rows"`` or, for a baseline
    trained on a sample, ``"200,000 of 3,000,000 rows (sample)"``; ``"-"`` where it was not
    recorded (bundles made before it was)."""
    if not trained:
        return "-"
    if trained.get("sampled"):
        return f"{trained['rows']:,} of {trained['of']:,} rows (sample)"
    return f"{trained['rows']:,} rows"
