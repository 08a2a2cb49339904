"""The KFP v2 pipelines, split by role.

- :mod:`kubeloop.pipelines.steps` -- step logic: what each step does (no kfp);
- :mod:`kubeloop.pipelines.components` -- KFP glue: components and pipeline definitions;
- :mod:`kubeloop.pipelines.launch` -- launchers: local runs (``kfp.local``) or a KFP server.

The entry point for callers (CLI, monitor, demo) is :func:`start_training_run`, given one
:class:`RunRequest`; both are loaded lazily so that importing a submodule (as every pipeline step
does) stays cheap, and ``RunRequest`` alone loads no kfp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubeloop import lazy_exports

if TYPE_CHECKING:
    from kubeloop.pipelines.launch.request import RunRequest
    from kubeloop.pipelines.launch.runs import RunOutcome, run_state, start_training_run

__all__ = ["RunOutcome", "RunRequest", "run_state", "start_training_run"]

__getattr__ = lazy_exports(
    __name__,
    {
        "RunRequest": "launch.request",
        "RunOutcome": "launch.runs",
        "run_state": "launch.runs",
        "start_training_run": "launch.runs",
    },
)
