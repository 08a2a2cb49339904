"""Batch scoring as a KFP component and a one-step pipeline, scheduled next to the training one.

The component is one :func:`kubeloop.batch.score_table` call (``kubeloop predict``) with the
registry's champion (or a fixed bundle); it writes the drift report as an artifact and the row
counts and drift share as KFP metrics. ``{time}`` in ``out`` becomes the run's scheduled time
(UTC, ``YYYYmmddTHHMMSSZ``), so each recurring run writes its own file.

(No ``from __future__ import annotations`` here: KFP reads the annotations at decoration time.)
"""

from pathlib import Path
from typing import Any

from kfp import compiler, dsl
from kfp.dsl import Artifact, Metrics, Output

from kubeloop.pipelines.image import DEFAULT_IMAGE, component_image

__all__ = [
    "BATCH_COMPONENT_PATH",
    "BATCH_PACKAGE_PATH",
    "BATCH_PIPELINE_NAME",
    "batch_predict",
    "build_batch_component",
    "build_batch_pipeline",
    "compile_batch",
]

BATCH_PIPELINE_NAME = "kubeloop-batch-scoring"
BATCH_PACKAGE_PATH = Path("pipelines") / "batch_scoring_pipeline.yaml"
BATCH_COMPONENT_PATH = Path("components") / "batch_predict.yaml"


def batch_predict(
    data: str,
    out: str,
    report: Output[Artifact],
    summary: Output[Metrics],
    model_name: str = "model",
    registry_root: str = "",
    model_dir: str = "",
    keep: str = "",
    chunk_rows: int = 100000,
    run_time: str = "",
) -> str:
    """Score ``data`` into ``out`` with the champion (or ``model_dir``); returns the version."""
    import json
    import re
    from pathlib import Path

    from kubeloop.batch import BatchOptions, score_table
    from kubeloop.console import Progress
    from kubeloop.quick_exit import exit_quickly_on_success

    stamp = re.sub(r"[^0-9A-Za-z]", "", run_time.split(".")[0]) or "now"
    options = BatchOptions(
        data=data, out=out.replace("{time}", stamp),
        model_dir=Path(model_dir) if model_dir else None,
        registry=None if model_dir else registry_root, model=None if model_dir else model_name,
        keep=tuple(c.strip() for c in keep.split(",") if c.strip()), chunk_rows=chunk_rows,
    )  # fmt: skip
    result = score_table(options, progress=Progress(prefix="batch"))
    print(
        f"scored {result.scored} of {result.rows} rows -> {result.out}; rejected {result.rejected}"
    )
    content = {
        "version": result.version, "rows": result.rows, "rejected": result.rejected,
        "out": result.out, "rejects": result.rejects,
        "drift": result.drift.to_dict() if result.drift else None,
    }  # fmt: skip
    Path(report.path).write_text(json.dumps(content, indent=1), encoding="utf-8")
    summary.log_metric("rows", float(result.rows))
    summary.log_metric("rejected", float(result.rejected))
    summary.log_metric("drift_share", float(result.drift.drift_share if result.drift else 0.0))
    exit_quickly_on_success()  # done: the step's process skips the module teardown
    return result.version


def build_batch_component(image: str | None = None) -> Any:
    """Wrap :func:`batch_predict` as a KFP component running in the project image."""
    return dsl.component(
        func=batch_predict, base_image=image or component_image(), install_kfp_package=False
    )


def build_batch_pipeline(
    image: str | None = None, *, s3_secret: str | None = None, s3_endpoint: str | None = None
) -> Any:
    """The batch-scoring pipeline: one ``batch-predict`` step (S3 access as the training one)."""
    from kubeloop.pipelines.components.pipeline import CLUSTER_REGISTRY, _object_storage

    component = build_batch_component(image)

    @dsl.pipeline(
        name=BATCH_PIPELINE_NAME,
        description="Score a table with the registry's champion (kubeloop predict): output "
        "columns, rejects with reasons, drift against the bundle's reference profile.",
    )
    def batch_scoring_pipeline(
        data: str,
        out: str,
        model_name: str = "model",
        registry_root: str = CLUSTER_REGISTRY,
        keep: str = "",
        chunk_rows: int = 100000,
    ) -> str:
        step = component(
            data=data,
            out=out,
            model_name=model_name,
            registry_root=registry_root,
            keep=keep,
            chunk_rows=chunk_rows,
            run_time=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
        )
        step.set_display_name("batch-predict")
        step.set_caching_options(enable_caching=False)
        _object_storage(step, s3_secret, s3_endpoint)
        return step.outputs["Output"]

    return batch_scoring_pipeline


def compile_batch(
    package: str | Path = BATCH_PACKAGE_PATH,
    component: str | Path = BATCH_COMPONENT_PATH,
    *,
    image: str = DEFAULT_IMAGE,
    s3_secret: str | None = None,
    s3_endpoint: str | None = None,
) -> list[Path]:
    """Compile the pipeline package and the component spec (deterministic)."""
    written = []
    for path, item in (
        (Path(package), build_batch_pipeline(image, s3_secret=s3_secret, s3_endpoint=s3_endpoint)),
        (Path(component), build_batch_component(image)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(item, str(path))
        written.append(path)
    return written
