"""The evaluate step's core: the bundle + what the KFP UI shows about it.

The bundle is made by :func:`kubeloop.training.workflow.finish_bundle`, the same function that ends
``kubeloop train``, from the splits, features and candidates the earlier steps wrote.

KFP shows scalar ``Metrics``, a ``ClassificationMetrics`` ROC curve and confusion matrix, an
``HTML`` page with the bundle's plots and a ``Markdown`` table of every candidate. MLflow gets
the same numbers, the plots and the bundle from the register step, after the gate
(:func:`kubeloop.pipelines.steps.gate.record_run`): one MLflow client per pipeline run, whose
import and store cost seconds.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kubeloop.bundle import PLOT_TYPES, plot_files
from kubeloop.console import ProgressFn, quiet
from kubeloop.pipelines.steps.data import (
    load_matrices,
    load_meta,
    load_part,
    load_preprocessor,
    load_schema,
)
from kubeloop.registry.tracking import flatten_metrics
from kubeloop.training.workflow import (
    SUMMARY_METRICS,
    Packaged,
    finish_bundle,
    trained_on_text,
)

__all__ = [
    "EvaluationReport",
    "candidates_markdown",
    "evaluate_and_report",
    "plots_html",
    "tuning_markdown",
]


@dataclass(frozen=True)
class EvaluationReport:
    """Everything the evaluate component writes into its outputs."""

    version: str
    scalars: dict[str, float]
    roc: dict[str, list[float]] | None
    confusion: list[list[int]] | None
    classes: tuple[str, ...]
    html: str
    markdown: str


def plots_html(bundle_dir: Path, *, title: str) -> str:
    """One self-contained HTML page with every plot of the bundle inlined (as images)."""
    figures = []
    for plot in plot_files(Path(bundle_dir)):
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        media = PLOT_TYPES[plot.suffix.lower()]
        figures.append(
            f'<figure><img alt="{html.escape(plot.stem)}" src="data:{media};base64,{data}">'
            f"<figcaption>{html.escape(plot.stem)}</figcaption></figure>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>figure{display:inline-block;margin:8px}img{max-width:480px}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(figures)}</body></html>\n"
    )


def _cell(value: Any) -> str:
    return "–" if value is None else f"{float(value):.4f}"


def _param(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def _roc_points(y: np.ndarray, p: np.ndarray) -> dict[str, list[float]] | None:
    from sklearn.metrics import roc_curve

    if p.ndim != 1 or len(np.unique(y)) != 2:
        return None
    fpr, tpr, thresholds = roc_curve(y, p)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 101)).astype(int))
    thresholds = np.clip(thresholds, 0.0, 1.0)  # the first threshold is +inf
    return {
        "fpr": [float(v) for v in fpr[keep]],
        "tpr": [float(v) for v in tpr[keep]],
        "thresholds": [float(v) for v in thresholds[keep]],
    }


def candidates_markdown(packaged: Packaged) -> str:
    """A Markdown table: one row per candidate, the chosen one in bold."""
    columns = SUMMARY_METRICS[packaged.bundle.schema.task]
    trained = packaged.bundle.metrics.get("trained_on", {})
    lines = [
        f"# Candidates (test split) — bundle `{packaged.bundle.version}`",
        "",
        "| candidate | trained on | " + " | ".join(columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for name, values in packaged.candidates.items():
        label = f"**{name}** (chosen)" if name == packaged.chosen.name else name
        cells = " | ".join(_cell(values.get(c)) for c in columns)
        lines.append(f"| {label} | {trained_on_text(trained.get(name))} | {cells} |")
    ranked = packaged.bundle.metrics.get("global_importance", {}).get("features", [])
    if ranked:
        lines += [
            "",
            "## Global importance: mean |contribution| per input feature (test split)",
            "",
            "| feature | mean abs contribution |",
            "|---|---:|",
        ]
        lines += [f"| {r['feature']} | {_cell(r['mean_abs_contribution'])} |" for r in ranked[:15]]
    tuning = packaged.bundle.metrics.get("tuning")
    if tuning:
        lines += ["", *tuning_markdown(tuning)]
    return "\n".join(lines) + "\n"


def tuning_markdown(tuning: Mapping[str, Any]) -> list[str]:
    """The search's summary and its trials as Markdown lines."""
    lines = [
        f"## Hyperparameter search: {tuning['trial_count']} trials in {tuning['used_s']:.1f} s "
        f"(budget {tuning['budget_s']:g} s)",
        "",
        f"- tuned XGBoost chosen: **{'yes' if tuning.get('chosen') else 'no'}**; best validation "
        f"score {_cell(tuning['best_validation_score'])} vs default "
        f"{_cell(tuning['default_validation_score'])}",
        f"- best parameters: `{tuning['best_params']}`, {tuning['best_rounds']} rounds",
        "",
        "| trial | score | rounds | seconds | stopped early | parameters |",
        "|---:|---:|---:|---:|---|---|",
    ]
    for trial in tuning["trials"]:
        params = ", ".join(f"{k}={_param(v)}" for k, v in trial["params"].items())
        lines.append(
            f"| {trial['number']} | {_cell(trial['score'])} | {trial['rounds']} | "
            f"{trial['seconds']:.1f} | {'yes' if trial['stopped_early'] else 'no'} | {params} |"
        )
    return lines


def evaluate_and_report(
    splits_dir: Path,
    features_dir: Path,
    candidates_dir: Path,
    *,
    out: Path,
    model_name: str,
    params: Mapping[str, Any],
    progress: ProgressFn = quiet,
) -> EvaluationReport:
    """Score the candidates, write the bundle at ``out``, shape the outputs.

    Args:
        splits_dir, features_dir, candidates_dir: Outputs of the earlier steps.
        out: The bundle directory to create (must not exist).
        model_name: The model name recorded in the bundle.
        params: Pipeline parameters (data, target, seed, workers...), recorded in the manifest
            (and so in MLflow).
        progress: Called with one line per step.
    """
    # The train step's module brings Ray Train's configuration; only its loader is needed here.
    from kubeloop.pipelines.steps.train import load_candidates

    schema = load_schema(splits_dir)
    matrices = {name: load_matrices(features_dir, name) for name in ("train", "test")}
    packaged = finish_bundle(
        load_candidates(candidates_dir),
        schema=schema,
        preprocessor=load_preprocessor(features_dir),
        train_features=load_part(splits_dir, "train").X,
        matrices=matrices,
        out=Path(out),
        name=model_name,
        params=params,
        data_hash=str(load_meta(splits_dir)["data_hash"]),
        progress=progress,
    )
    version = packaged.bundle.version
    progress(f"bundle {version} written")
    chosen = packaged.candidates[packaged.chosen.name]
    scalars = {k: v for k, v in flatten_metrics(chosen).items() if k != "threshold"}
    confusion = chosen.get("confusion_matrix")
    roc = None
    if schema.task == "classification":
        roc = _roc_points(matrices["test"][1], packaged.test_prediction)
    return EvaluationReport(
        version=version,
        scalars=scalars,
        roc=roc,
        confusion=[[int(v) for v in row] for row in confusion] if confusion else None,
        classes=tuple(schema.classes),
        html=plots_html(out, title=f"{model_name} {version}"),
        markdown=candidates_markdown(packaged),
    )
