"""The KFP v2 pipelines, split by role.

- :mod:`kubeloop.pipelines.steps` -- step logic: what each step does (no kfp);
- :mod:`kubeloop.pipelines.components` -- KFP glue: components and pipeline definitions;
- :mod:`kubeloop.pipelines.launch` -- launchers: local runs (``kfp.local``) or a KFP server.

The entry point for callers (CLI, monitor, demo) is :func:`start_training_run`, given one
:class:`RunRequest`; both are loaded lazily so that importing a submodule (as every pipeline step
does) stays cheap, and ``RunRequest`` alone loads no kfp.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunOutcome", "RunRequest", "run_state", "start_training_run"]


def __getattr__(name: str) -> Any:
    if name == "RunRequest":
        from kubeloop.pipelines.launch.request import RunRequest

        return RunRequest
    if name in __all__:
        from kubeloop.pipelines.launch import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'kubeloop.pipelines' has no attribute {name!r}")
