"""Follow a registry's ``champion`` pointer, and its candidate, and hot-swap what is served.

A daemon thread polls ``<root>/<model>/champion`` (at start, then every interval). When it
names a new version the bundle is fetched, verified and warmed up beside the one being served
(:meth:`BundleModel.swap`), then one reference is replaced: requests in flight finish on the
bundle they started with. A version that fails to load is logged and counted once and not
retried until the pointer moves again; a pointer that cannot be read or names no valid version
is logged once per distinct problem (not on every poll); the previous bundle keeps serving.

The same read gives the pointer's ``candidate`` (a staged rollout, :mod:`._rollout`): a new
candidate is fetched, verified and warmed the same way and then served beside the champion
(:meth:`BundleModel.start_rollout`); a changed mode or percent takes effect without a reload; a
candidate the pointer drops stops being served (:meth:`BundleModel.end_rollout`); a champion that
moves to the loaded candidate (a promotion) is installed without loading it again. A candidate
that fails to load is logged and counted once; whatever served before keeps serving.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from kubeloop.errors import KubeloopError
from kubeloop.registry import Registry
from kubeloop.serving import metrics
from kubeloop.serving.model import BundleModel

__all__ = ["ChampionWatcher"]

_log = logging.getLogger("kubeloop.serving")


class ChampionWatcher:
    """Poll a registry's champion pointer and serve its champion and candidate with ``model``.

    Args:
        model: The served model (already loaded).
        registry: The registry root (local path or fsspec URL).
        name: The model name inside the registry.
        interval: Seconds between polls.
    """

    def __init__(self, model: BundleModel, registry: str, name: str, *, interval: float) -> None:
        self._model = model
        self._registry = Registry(registry)
        self._name = name
        self._interval = interval
        self._failed: str | None = None
        self._failed_candidate: str | None = None
        self._problem: str | None = None  # the pointer problem last reported
        self._candidate_problem: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def champion_path(self) -> Path:
        """A verified local directory of the current champion.

        Raises:
            RegistryError: no champion yet, or the champion's bundle is damaged.
        """
        return self._registry.fetch(self._name)

    def poll_once(self) -> bool:
        """Read the pointer once; swap to a new, loadable champion, and start, change or drop
        the candidate as the pointer says.

        Returns:
            Whether the champion changed.
        """
        served = self._model.served
        if not self._model.ready:  # unloaded on request: only a load brings it back
            return False
        try:
            record = self._registry.champion_record(self._name)
        except (KubeloopError, OSError) as exc:
            if str(exc) != self._problem:
                self._problem = str(exc)
                _log.error(
                    "cannot follow the champion of %s; still serving %s: %s",
                    self._name,
                    served.version if served is not None else "nothing",
                    exc,
                )
            return False
        if self._problem is not None:
            self._problem = None
            _log.info("the champion pointer of %s is readable again", self._name)
        version = None if record is None else str(record["version"])
        swapped = self._follow_champion(version)
        self._follow_candidate(record)
        return swapped

    def _follow_champion(self, version: str | None) -> bool:
        served = self._model.served
        if version is None or (served is not None and version == served.version):
            self._failed = None
            return False
        rollout = self._model.rollout
        if rollout is not None and rollout.candidate.version == version:
            self._model.promote_candidate()  # loaded, verified and warm already
            self._failed = None
            return True
        if version == self._failed:
            return False
        try:
            try:
                path = self._registry.fetch(self._name, version)
            except Exception:
                metrics.MODEL_LOAD_FAILURES.labels(self._model.name).inc()
                raise
            self._model.swap(path)  # counts its own failures
        except Exception as exc:  # any broken bundle: keep serving the old one
            self._failed = version
            _log.error(
                "champion %s of %s failed to load; still serving %s: %s",
                version,
                self._name,
                served.version if served is not None else "nothing",
                exc,
            )
            return False
        self._failed = None
        return True

    def _follow_candidate(self, record: dict[str, Any] | None) -> None:
        try:
            entry = self._registry.candidate(self._name, record=record)
        except (KubeloopError, OSError) as exc:  # keep what serves; say so once
            if str(exc) != self._candidate_problem:
                self._candidate_problem = str(exc)
                _log.error(
                    "cannot follow the candidate of %s; serving as before: %s", self._name, exc
                )
            return
        if self._candidate_problem is not None:
            self._candidate_problem = None
            _log.info("the candidate entry of %s is readable again", self._name)
        model = self._model
        rollout, served = model.rollout, model.served
        if entry is None or served is None or entry["version"] == served.version:
            self._failed_candidate = None
            if rollout is not None:
                model.end_rollout()
            return
        version, mode = str(entry["version"]), entry["mode"]
        percent = float(entry.get("percent", 0))
        if rollout is not None and rollout.candidate.version == version:
            if rollout.mode != mode or (mode == "canary" and rollout.percent != percent):
                model.start_rollout(rollout.candidate, mode=mode, percent=percent)
            return
        if version == self._failed_candidate:
            return
        try:
            try:
                path = self._registry.fetch(self._name, version)
            except Exception:
                metrics.MODEL_LOAD_FAILURES.labels(model.name).inc()
                raise
            candidate = model.prepare(path)  # counts its own failures
        except Exception as exc:  # a broken candidate: whatever served keeps serving
            self._failed_candidate = version
            _log.error(
                "candidate %s of %s failed to load; serving %s: %s",
                version,
                self._name,
                "its champion alone"
                if rollout is None
                else f"candidate {rollout.candidate.version} still",
                exc,
            )
            return
        self._failed_candidate = None
        # Its trees compiled before it answers anything: a candidate's latency is compared with
        # the champion's, whose few-row path is the compiled forest.
        candidate.compile_forest()
        model.start_rollout(candidate, mode=mode, percent=percent)

    def _run(self) -> None:
        while True:
            self.poll_once()
            metrics.CHAMPION_POLLS.labels(self._model.name).inc()
            if self._stop.wait(self._interval):
                return

    def start(self) -> None:
        """Start polling in a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="kubeloop-champion-watcher", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for a swap in progress to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
