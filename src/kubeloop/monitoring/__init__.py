"""Watch a served model: drift against its reference profile, performance, and retraining.

The staged rollout's sequential decision (:mod:`kubeloop.monitoring.sequential`: promote, roll
back or keep watching a candidate beside the champion) is pure numpy and exported here too.

The loop itself (:func:`kubeloop.monitoring.monitor.run_once`) and the KFP component
(:mod:`kubeloop.pipelines.components.monitor`) are imported from their modules; they load bundles
and
therefore XGBoost.
"""

from kubeloop.monitoring.decision import (
    Decision,
    MonitorState,
    TriggerPolicy,
    decide,
    load_state,
    save_state,
)
from kubeloop.monitoring.drift import (
    DEFAULT_PSI_THRESHOLD,
    PSI_EPSILON,
    chi_square,
    drift_share,
    ks_binned,
    ks_two_sample,
    psi,
    psi_rows,
)
from kubeloop.monitoring.report import (
    PREDICTION,
    DriftConfig,
    DriftReport,
    FeatureDrift,
    compare_profile,
    count_frame,
    reference_counts,
)
from kubeloop.monitoring.sequential import (
    DEFAULT_RULES,
    Moments,
    RolloutPolicy,
    RolloutVerdict,
    SignalResult,
    SignalRule,
    confidence_interval,
    fixed_horizon_n,
    judge,
    paired_interval,
)
from kubeloop.monitoring.sources import MetricsEndpoint, PrometheusAPI, Scrape, SourceError

__all__ = [
    "DEFAULT_PSI_THRESHOLD",
    "DEFAULT_RULES",
    "PREDICTION",
    "PSI_EPSILON",
    "Decision",
    "DriftConfig",
    "DriftReport",
    "FeatureDrift",
    "MetricsEndpoint",
    "Moments",
    "MonitorState",
    "PrometheusAPI",
    "RolloutPolicy",
    "RolloutVerdict",
    "Scrape",
    "SignalResult",
    "SignalRule",
    "SourceError",
    "TriggerPolicy",
    "chi_square",
    "compare_profile",
    "confidence_interval",
    "count_frame",
    "decide",
    "drift_share",
    "fixed_horizon_n",
    "judge",
    "ks_binned",
    "ks_two_sample",
    "load_state",
    "paired_interval",
    "psi",
    "psi_rows",
    "reference_counts",
    "save_state",
]
