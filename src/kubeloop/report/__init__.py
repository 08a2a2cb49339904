"""One self-contained HTML report of the loop: model card, drift, history (``kubeloop report``).

The page has inline CSS and inline SVG charts drawn here from the bundle, the live counts, the
registry and the monitor's state; it needs no script and no network to open. Drift is computed
by :mod:`kubeloop.monitoring` (the same PSI and verdicts as the monitor).
"""

from kubeloop.report._page import (
    build_report,
    live_counts,
    monitor_report,
    registry_versions,
    write_report,
)

__all__ = ["build_report", "live_counts", "monitor_report", "registry_versions", "write_report"]
