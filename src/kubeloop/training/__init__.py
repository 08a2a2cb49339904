"""Training: XGBoost through Ray Train plus linear and random-forest baselines.

Ray is imported lazily (only when XGBoost is trained), so importing this package is cheap.
"""

from kubeloop.training.candidates import (
    CANDIDATE_NAMES,
    Candidate,
    TrainConfig,
    train_candidates,
    xgboost_params,
)
from kubeloop.training.distributed import ensure_ray, train_xgboost_distributed

__all__ = [
    "CANDIDATE_NAMES",
    "Candidate",
    "TrainConfig",
    "ensure_ray",
    "train_candidates",
    "train_xgboost_distributed",
    "xgboost_params",
]
