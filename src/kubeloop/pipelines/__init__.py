"""The KFP v2 pipelines, split by role.

- :mod:`kubeloop.pipelines.steps` -- step logic: what each step does (no kfp);
- :mod:`kubeloop.pipelines.components` -- KFP glue: components and pipeline definitions;
- :mod:`kubeloop.pipelines.launch` -- launchers: local runs (``kfp.local``) or a KFP server.

The entry point for callers (CLI, monitor, demo) is :func:`start_training_run`; it is loaded
lazily so that importing a submodule (as every pipeline step does) stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunOutcome", "run_state", "start_training_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kubeloop.pipelines.launch import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'kubeloop.pipelines' has no attribute {name!r}")
