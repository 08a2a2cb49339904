"""Training: XGBoost through Ray Train plus linear and random-forest baselines.

Where XGBoost trains (this process or Ray Train workers) is chosen by :mod:`.engine`. Every name
here is imported on first use: ``from kubeloop.training.engine import parse_workers`` loads
neither XGBoost nor Ray (the CLI's option parsing and light pipeline steps rely on it), and Ray
is imported only when XGBoost is trained.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubeloop.training.candidates import (
        CANDIDATE_NAMES,
        TUNED,
        Candidate,
        TrainConfig,
        train_candidates,
        xgboost_params,
    )
    from kubeloop.training.distributed import train_xgboost_distributed
    from kubeloop.training.engine import (
        AUTO,
        Engine,
        Workers,
        ensure_ray,
        parse_workers,
        resolve_engine,
        shared_local_ray,
    )

__all__ = [
    "AUTO",
    "CANDIDATE_NAMES",
    "TUNED",
    "Candidate",
    "Engine",
    "TrainConfig",
    "Workers",
    "ensure_ray",
    "parse_workers",
    "resolve_engine",
    "shared_local_ray",
    "train_candidates",
    "train_xgboost_distributed",
    "xgboost_params",
]

# Where each exported name lives.
_HOME = {
    **dict.fromkeys(
        (
            "CANDIDATE_NAMES",
            "TUNED",
            "Candidate",
            "TrainConfig",
            "train_candidates",
            "xgboost_params",
        ),
        "candidates",
    ),
    "train_xgboost_distributed": "distributed",
    **dict.fromkeys(
        (
            "AUTO",
            "Engine",
            "Workers",
            "ensure_ray",
            "parse_workers",
            "resolve_engine",
            "shared_local_ray",
        ),
        "engine",
    ),
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'kubeloop.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kubeloop.training.{module}"), name)
