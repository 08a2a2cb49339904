"""Submit the training pipeline to a Kubeflow Pipelines API (``kfp.Client``).

One-off runs use ``create_run_from_pipeline_package``; the daily batch training is a recurring
run (``create_recurring_run``) with at most one run at a time and no catch-up. The package sent
is compiled on the fly from the same code as ``pipelines/training_pipeline.yaml``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubeloop.errors import ConfigError

__all__ = ["DEFAULT_EXPERIMENT", "kfp_cron", "run_state", "schedule_runs", "submit_run"]

DEFAULT_EXPERIMENT = "kubeloop"


def kfp_cron(expression: str) -> str:
    """KFP cron has a leading seconds field: ``"0 2 * * *"`` becomes ``"0 0 2 * * *"``.

    Raises:
        ConfigError: The expression has neither 5 nor 6 fields.
    """
    fields = expression.split()
    if len(fields) == 5:
        return " ".join(["0", *fields])
    if len(fields) == 6:
        return " ".join(fields)
    raise ConfigError(
        f"cron expression {expression!r} must have 5 fields (min hour day month weekday), "
        "e.g. '0 2 * * *' for 02:00 every day."
    )


def _client(host: str, client: Any | None) -> Any:
    if client is not None:
        return client
    import warnings

    import kfp

    with warnings.catch_warnings():  # "only works with KFP v2.0.0-beta.2 and later": we need v2
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host)


def _package(directory: str, *, batch: bool = False) -> str:
    """Compile for this cluster: ``KUBELOOP_IMAGE``, and S3 access from the submitter's env;
    the batch-scoring pipeline when ``batch``, else the training one."""
    from kubeloop.pipelines.components.pipeline import compile_pipeline
    from kubeloop.pipelines.image import component_image

    image = component_image()
    secret = os.environ.get("KUBELOOP_S3_CREDENTIALS_SECRET") or None
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    if batch:
        from kubeloop.pipelines.components.batch import compile_batch

        package = Path(directory) / "batch_scoring_pipeline.yaml"
        component = Path(directory) / "batch_predict.yaml"
        compile_batch(package, component, image=image, s3_secret=secret, s3_endpoint=endpoint)
        return str(package)
    path = compile_pipeline(
        Path(directory) / "training_pipeline.yaml",
        image=image,
        s3_secret=secret,
        s3_endpoint=endpoint,
    )
    return str(path)


def submit_run(
    host: str,
    arguments: Mapping[str, Any],
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    namespace: str | None = None,
    client: Any | None = None,
) -> str:
    """Create one pipeline run; returns its KFP run id.

    Args:
        host: The KFP API endpoint, e.g. ``http://ml-pipeline.kubeflow:8888``.
        arguments: Pipeline parameters.
        experiment: The KFP experiment (created when missing).
        run_name: Shown in the KFP UI (default: ``kubeloop-training <model>``).
        namespace: The KFP namespace (multi-user installs only).
        client: An existing ``kfp.Client`` (default: one for ``host``).
    """
    kfp_client = _client(host, client)
    with tempfile.TemporaryDirectory(prefix="kubeloop-kfp-") as directory:
        result = kfp_client.create_run_from_pipeline_package(
            _package(directory),
            arguments=dict(arguments),
            run_name=run_name or f"kubeloop-training {arguments.get('model_name', 'model')}",
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=False,
        )
    return str(result.run_id)


def schedule_runs(
    host: str,
    arguments: Mapping[str, Any],
    *,
    cron: str,
    name: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    namespace: str | None = None,
    client: Any | None = None,
    batch: bool = False,
) -> str:
    """Create a recurring run (cron schedule, one run at a time); returns its id.

    With ``batch`` the recurring run is the batch-scoring pipeline
    (:mod:`kubeloop.pipelines.components.batch`), else the training pipeline.
    """
    kfp_client = _client(host, client)
    experiment_id = kfp_client.create_experiment(experiment, namespace=namespace).experiment_id
    kind = "batch-scoring" if batch else "training"
    with tempfile.TemporaryDirectory(prefix="kubeloop-kfp-") as directory:
        result = kfp_client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name or f"kubeloop-{kind}-{arguments.get('model_name', 'model')}",
            description=(
                "kubeloop scheduled batch scoring (champion; drift in the report)"
                if batch
                else "kubeloop scheduled training (gate decides promotion)"
            ),
            cron_expression=kfp_cron(cron),
            max_concurrency=1,
            no_catchup=True,
            params=dict(arguments),
            pipeline_package_path=_package(directory, batch=batch),
            enabled=True,
            enable_caching=False,
        )
    return str(result.recurring_run_id)


def run_state(host: str, run_id: str, *, client: Any | None = None) -> str:
    """The KFP state of a run: ``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``, ..."""
    run = _client(host, client).get_run(run_id)
    return str(run.state or "PENDING")
