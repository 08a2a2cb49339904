"""The evaluate step's core: bundle + what the KFP UI and MLflow show about it.

KFP shows scalar ``Metrics``, a ``ClassificationMetrics`` ROC curve and confusion matrix, an
``HTML`` page with the bundle's plots and a ``Markdown`` table of every candidate; MLflow gets
the same numbers, the plots and the bundle (:func:`kubeloop.tracking.log_training_run`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeloop.console import ProgressFn, quiet
from kubeloop.pipelines.gating import Evaluation, evaluate_candidates
from kubeloop.tracking import flatten_metrics, log_training_run

__all__ = ["EvaluationReport", "candidates_markdown", "evaluate_and_report", "plots_html"]

_TABLE = {
    "classification": ("roc_auc", "pr_auc", "f1", "accuracy", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}


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
    mlflow_run_id: str


def plots_html(bundle_dir: Path, *, title: str) -> str:
    """One self-contained HTML page with every PNG of the bundle inlined."""
    figures = []
    for png in sorted(Path(bundle_dir).glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        figures.append(
            f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(png.stem)}</figcaption></figure>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>figure{display:inline-block;margin:8px}img{max-width:480px}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(figures)}</body></html>\n"
    )


def _cell(value: Any) -> str:
    return "–" if value is None else f"{float(value):.4f}"


def candidates_markdown(evaluation: Evaluation) -> str:
    """A Markdown table: one row per candidate, the chosen one in bold."""
    columns = _TABLE[evaluation.task]
    lines = [
        f"# Candidates (test split) — bundle `{evaluation.version}`",
        "",
        "| candidate | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, values in evaluation.candidates.items():
        label = f"**{name}** (chosen)" if name == evaluation.chosen else name
        lines.append(f"| {label} | " + " | ".join(_cell(values.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def evaluate_and_report(
    splits_dir: Path,
    features_dir: Path,
    candidates_dir: Path,
    *,
    out: Path,
    model_name: str,
    params: Mapping[str, Any],
    mlflow_uri: str = "",
    progress: ProgressFn = quiet,
) -> EvaluationReport:
    """Evaluate, write the bundle at ``out``, log the MLflow run, and shape the KFP outputs.

    Args:
        splits_dir, features_dir, candidates_dir: Outputs of the earlier steps.
        out: The bundle directory to create.
        model_name: The model name recorded in the bundle.
        params: Pipeline parameters, recorded in the manifest and in MLflow.
        mlflow_uri: The tracking store; empty means :func:`kubeloop.tracking.default_tracking_uri`.
        progress: Called with one line per step.
    """
    evaluation = evaluate_candidates(
        splits_dir,
        features_dir,
        candidates_dir,
        out=out,
        model_name=model_name,
        params={k: v for k, v in params.items() if k in ("seed", "workers", "num_boost_round")},
        progress=progress,
    )
    progress(f"bundle {evaluation.version} written")
    run_id = log_training_run(
        out,
        params=params,
        tracking_uri=mlflow_uri or None,
        tags={"kubeloop.chosen": evaluation.chosen},
    )
    progress(f"MLflow run {run_id} logged")
    scalars = {
        key: value
        for key, value in flatten_metrics(evaluation.metrics).items()
        if key != "threshold"
    }
    confusion = evaluation.metrics.get("confusion_matrix")
    return EvaluationReport(
        version=evaluation.version,
        scalars=scalars,
        roc=evaluation.roc,
        confusion=[[int(v) for v in row] for row in confusion] if confusion else None,
        classes=evaluation.classes,
        html=plots_html(out, title=f"{model_name} {evaluation.version}"),
        markdown=candidates_markdown(evaluation),
        mlflow_run_id=run_id,
    )
