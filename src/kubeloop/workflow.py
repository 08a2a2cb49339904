"""The whole of ``kubeloop train``: data in, a verified model bundle out.

Every stage is one call into its module; this file only sequences them. Nothing is written until
every stage has succeeded, and then the bundle is written atomically by :mod:`kubeloop.bundle`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kubeloop.bundle import Bundle, load_bundle, write_bundle
from kubeloop.console import ProgressFn, quiet
from kubeloop.data import Dataset, Task, build_dataset, load_dataset, split_dataset
from kubeloop.errors import ConfigError
from kubeloop.evaluation import evaluate, write_plots
from kubeloop.features import FastTransform, fit_preprocessor
from kubeloop.profile import build_reference_profile
from kubeloop.training import Candidate, TrainConfig, train_candidates

__all__ = ["SUMMARY_METRICS", "TrainResult", "candidate_rows", "run_training"]

# The metrics every candidate is compared on, per task (the CLI's table shows these).
SUMMARY_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("roc_auc", "pr_auc", "f1", "accuracy", "precision", "recall", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}


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


def _load(data: str | Path | pd.DataFrame, *, target: str, task: Task | str) -> Dataset:
    if isinstance(data, pd.DataFrame):
        return build_dataset(data, target=target, task=task)  # type: ignore[arg-type]
    return load_dataset(data, target=target, task=task)  # type: ignore[arg-type]


def run_training(
    data: str | Path | pd.DataFrame,
    *,
    target: str,
    out: str | Path,
    task: Task | str = "auto",
    config: TrainConfig | None = None,
    name: str = "model",
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Validate data, prepare features, train every candidate and write the best as a bundle.

    Args:
        data: A CSV/Parquet path (or fsspec URL) or an in-memory frame.
        target: The column to predict.
        out: The bundle directory to create; it must not exist yet.
        task: ``"auto"``, ``"classification"`` or ``"regression"``.
        config: Training settings (workers, seed, boosting rounds...).
        name: The model name recorded in the bundle.
        progress: Called with one line per step.

    Returns:
        The written bundle and every candidate's test metrics.

    Raises:
        DataValidationError: The data cannot be trained on; nothing was written.
        ConfigError: ``out`` already exists.
    """
    config = config or TrainConfig()
    say = progress or quiet
    out = Path(out)
    if out.exists():
        raise ConfigError(
            f"Output directory '{out}' already exists; choose a new --out or remove it."
        )

    say(f"loading data (target '{target}', task {task})")
    dataset = _load(data, target=target, task=task)
    schema = dataset.schema
    for note in dataset.notes:
        say(note)
    splits = split_dataset(dataset, seed=config.seed)
    say(
        f"{schema.task}: {len(schema.features)} features; rows train {len(splits.train.y)}, "
        f"validation {len(splits.validation.y)}, test {len(splits.test.y)}"
    )

    _, spec = fit_preprocessor(splits.train.X, schema)
    transform = FastTransform(spec)
    x_train, x_val, x_test = (
        transform.transform(part.X) for part in (splits.train, splits.validation, splits.test)
    )
    say(f"features prepared: {x_train.shape[1]} model inputs")

    n_classes = len(schema.classes) if schema.task == "classification" else 1
    candidates = train_candidates(
        (x_train, splits.train.y),
        (x_val, splits.validation.y),
        task=schema.task,
        n_classes=n_classes,
        config=config,
        progress=say,
    )
    chosen = max(candidates, key=lambda c: c.validation_score)
    test_metrics = {
        c.name: evaluate(
            schema.task, splits.test.y, c.model.predict(x_test), classes=schema.classes
        )
        for c in candidates
    }
    say(f"chosen: {chosen.name} (best validation score {chosen.validation_score:.4f})")

    metrics = _metrics_document(chosen, candidates, test_metrics)
    profile = build_reference_profile(splits.train.X, schema, chosen.model.predict(x_train))
    with tempfile.TemporaryDirectory(prefix="kubeloop-plots-") as plot_dir:
        plots = write_plots(
            Path(plot_dir),
            task=schema.task,
            y_true=splits.test.y,
            prediction=chosen.model.predict(x_test),
            importance=chosen.model.feature_importance(spec.output_columns),
            classes=schema.classes,
        )
        path = write_bundle(
            out,
            name=name,
            schema=schema,
            preprocessor=spec,
            model=chosen.model,
            reference_profile=profile,
            metrics=metrics,
            plots=plots,
            params={**chosen.params, "seed": config.seed, "workers": config.workers},
            data_hash=dataset.data_hash,
        )
    bundle = load_bundle(path)
    say(f"bundle written: {path} (version {bundle.version})")
    return TrainResult(
        bundle=bundle, chosen=chosen.name, candidates=test_metrics, notes=dataset.notes
    )


def _metrics_document(
    chosen: Candidate, candidates: list[Candidate], test_metrics: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """metrics.json: the chosen model's test metrics at the top level, every candidate below."""
    return {
        **test_metrics[chosen.name],
        "model": chosen.name,
        "split": "test",
        "validation_scores": {c.name: float(c.validation_score) for c in candidates},
        "candidates": test_metrics,
    }


def candidate_rows(result: TrainResult) -> list[dict[str, Any]]:
    """One table row per candidate (chosen marked), with the task's summary metrics."""
    task = result.bundle.schema.task
    rows = []
    for name, values in result.candidates.items():
        row: dict[str, Any] = {"candidate": f"{name} *" if name == result.chosen else name}
        # Undefined metrics (None, e.g. AUC on a one-class split) stay out: shown as "-".
        row.update({m: values[m] for m in SUMMARY_METRICS[task] if values.get(m) is not None})
        rows.append(row)
    return rows
