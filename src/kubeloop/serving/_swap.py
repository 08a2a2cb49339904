"""Follow a registry's ``champion`` pointer and hot-swap the served bundle when it moves.

A daemon thread polls ``<root>/<model>/champion``. When it names a new version the bundle is
fetched, verified and warmed up beside the one being served (:meth:`BundleModel.swap`), then one
reference is replaced: requests in flight finish on the bundle they started with. A version that
fails to load is logged and counted once and not retried until the pointer moves again; a pointer
that cannot be read or names no valid version is logged once per distinct problem (not on every
poll); the previous bundle keeps serving.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from kubeloop.errors import KubeloopError
from kubeloop.registry import Registry
from kubeloop.serving import metrics
from kubeloop.serving.model import BundleModel

__all__ = ["ChampionWatcher"]

_log = logging.getLogger("kubeloop.serving")


class ChampionWatcher:
    """Poll a registry's champion pointer and swap ``model`` to each new champion.

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
        self._problem: str | None = None  # the pointer problem last reported
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def champion_path(self) -> Path:
        """A verified local directory of the current champion.

        Raises:
            RegistryError: no champion yet, or the champion's bundle is damaged.
        """
        return self._registry.fetch(self._name)

    def poll_once(self) -> bool:
        """Check the pointer once; swap when it names a new, loadable version.

        Returns:
            Whether a swap happened.
        """
        served = self._model.served
        if not self._model.ready:  # unloaded on request: only a load brings it back
            return False
        try:
            version = self._registry.champion(self._name)
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
        if version is None or (served is not None and version == served.version):
            self._failed = None
            return False
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

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll_once()
            metrics.CHAMPION_POLLS.labels(self._model.name).inc()

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
