"""A staged rollout inside the model server: a candidate beside the champion.

The registry's champion pointer may name a ``candidate`` (``kubeloop.registry``); the champion
watcher (:mod:`._swap`) loads it beside the champion, verified and warmed like a hot swap, and
hands :class:`~kubeloop.serving.model.BundleModel` one frozen :class:`Rollout`. A request reads
the model's rollout once, like the served bundle, and is routed before anything is decoded:

- **canary**: the candidate answers ``percent`` % of requests. A request with a key (the V2
  ``id``, else the ``x-request-id`` header) is sticky: it goes to the candidate when
  :func:`rollout_bucket` of the key (``blake2b(key)`` as a big-endian integer, mod 10,000) is
  below ``percent * 100``; a request without a key is routed at random.
- **shadow**: the champion answers every request; the candidate scores the same rows off the
  response path (:class:`ShadowScorer`: a bounded queue and one daemon thread that wakes at
  most every 5 ms and scores what gathered, so the response path rarely waits for it; a full
  queue drops the pair and counts it in ``kubeloop_shadow_dropped_total``). Per row it records
  whether the decision flipped (classification) and the score difference candidate - champion,
  in the candidate version's rollout moments, and counts the candidate's drift bins and
  predictions (its ``kubeloop_requests_total`` counts only requests it answered: none).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from kubeloop.serving import metrics
from kubeloop.serving.codec import output_columns

if TYPE_CHECKING:
    from kubeloop.serving._context import RequestContext
    from kubeloop.serving._payload_log import PayloadLogger
    from kubeloop.serving._served import Served

__all__ = ["BUCKETS", "Mode", "Rollout", "ShadowScorer", "rollout_bucket"]

_log = logging.getLogger("kubeloop.serving")

Mode = Literal["canary", "shadow"]
BUCKETS = 10_000
_LINGER = 0.005  # seconds the shadow thread lets pairs gather before scoring them


def rollout_bucket(key: str) -> int:
    """The canary bucket of a request key: ``blake2b(key)`` (64-byte digest of the UTF-8 key,
    read as a big-endian integer) mod 10,000. The candidate answers buckets below
    ``percent * 100``."""
    digest = blake2b(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class Rollout:
    """The candidate served beside the champion, and how requests reach it (never changed:
    the watcher replaces the whole object).

    Attributes:
        candidate: The candidate bundle, loaded, verified and warmed.
        mode: ``canary`` or ``shadow``.
        percent: Share of requests the candidate answers in canary mode (0 in shadow mode).
        threshold: ``round(percent * 100)``: buckets below it go to the candidate.
    """

    candidate: Served
    mode: Mode
    percent: float
    threshold: int

    @classmethod
    def of(cls, candidate: Served, mode: Mode, percent: float) -> Rollout:
        """A rollout of ``candidate`` (``percent`` ignored, i.e. 0, in shadow mode)."""
        percent = float(percent) if mode == "canary" else 0.0
        return cls(candidate, mode, percent, round(percent * 100))

    def takes(self, context: RequestContext) -> bool:
        """Whether the candidate answers this request (canary mode only)."""
        key = context.v2_id
        if not key:
            headers = context.headers
            key = headers.get("x-request-id") if headers else None
        if key:
            return rollout_bucket(key) < self.threshold
        return random.random() * BUCKETS < self.threshold


def _decisions(served: Served, raw: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Each row's predicted class code (``None`` for regression) and score."""
    classes = len(served.classes)
    if classes == 2:
        return (raw >= 0.5).astype(np.intp), raw
    if classes > 2:
        return raw.argmax(axis=1), raw.max(axis=1)
    return None, raw


class ShadowScorer:
    """Scores shadow pairs with the candidate on one daemon thread, off the response path.

    Args:
        model: The served model name (metric label, payload log).
        payload_log: Where the candidate's scores of logged requests go (``"shadow": true``).
        capacity: Pairs waiting at most; beyond it a pair is dropped and counted.
    """

    def __init__(
        self, model: str, payload_log: PayloadLogger | None, *, capacity: int = 1024
    ) -> None:
        self._model = model
        self._payload_log = payload_log
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(capacity)
        self._same: tuple[Any, Any, bool] | None = None  # (champion, candidate, same transform)
        self._failed: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="kubeloop-shadow", daemon=True)
        self._thread.start()

    def submit(
        self,
        candidate: Served,
        champion: Served,
        inputs: dict[str, Any],
        matrix: np.ndarray,
        raw: np.ndarray,
        request_id: str | None,
    ) -> None:
        """Queue one answered request for the candidate (never blocks: a full queue drops it).

        Args:
            candidate: The candidate bundle.
            champion: The bundle that answered.
            inputs: The decoded request (a fast-path row or one column per feature).
            matrix: The champion's transformed rows.
            raw: The champion's output.
            request_id: The request's id in the payload log (``None``: not logged).
        """
        try:
            self._queue.put_nowait((candidate, champion, inputs, matrix, raw, request_id))
        except queue.Full:
            metrics.SHADOW_DROPPED.labels(self._model, candidate.version).inc()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued pair is scored (tests, shutdown); whether that happened."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self) -> None:
        """Score what is queued (a few seconds at most) and stop the thread."""
        self.drain(5.0)
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            return
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is not None:
                # let pairs gather: one wake-up (and one hand-over of the interpreter lock)
                # per batch instead of per request keeps the response path's p50 untouched
                time.sleep(_LINGER)
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
            stop = False
            for job in batch:
                try:
                    if job is None:
                        stop = True
                    else:
                        self._score(*job)
                except Exception as exc:  # a candidate that cannot score this pair: counted
                    version = job[0].version if job is not None else "?"
                    metrics.SHADOW_DROPPED.labels(self._model, version).inc()
                    if version not in self._failed:
                        self._failed.add(version)
                        _log.warning(
                            "shadow candidate %s could not score a request: %s", version, exc
                        )
                finally:
                    self._queue.task_done()
            if stop:
                return

    def _score_row(
        self,
        candidate: Served,
        champion: Served,
        row: dict[str, Any],
        matrix: np.ndarray,
        raw: np.ndarray,
        request_id: str | None,
    ) -> bool:
        """Score a fast-path row with Python scalars (few numpy calls: this thread shares the
        interpreter with the response path); ``False`` when the candidate's transform needs the
        columnar path."""
        if not self._transform_of(candidate, champion):
            result = candidate.transform.transform_row(row)
            if result is None:
                return False
            matrix = result.matrix
        candidate_raw = candidate.predict(matrix)
        champion_code, champion_score = _row_decision(champion, raw)
        code, score = _row_decision(candidate, candidate_raw)
        flip = None
        if candidate.class_list and champion.class_list:
            flip = 1.0 if candidate.class_list[code] != champion.class_list[champion_code] else 0.0
        observer = candidate.observer
        observer.stats.shadow_row(flip, score - champion_score)
        observer.input_row(row)
        observer.output_row(code, score)
        log = self._payload_log
        if log is not None and request_id is not None:
            codes = np.array([code]) if candidate.class_list else None
            log.log(
                model=self._model,
                version=candidate.version,
                request_id=request_id,
                rows=1,
                inputs={name: [value] for name, value in row.items()},
                outputs=output_columns(candidate.classes, codes, candidate_raw),
                shadow=True,
            )
        return True

    def _transform_of(self, candidate: Served, champion: Served) -> bool:
        """Whether the candidate's transform is the champion's (its matrix is reused)."""
        same = self._same
        if same is None or same[0] is not champion or same[1] is not candidate:
            equal = candidate.transform.spec == champion.transform.spec
            same = self._same = (champion, candidate, equal)
        return same[2]

    def _score(
        self,
        candidate: Served,
        champion: Served,
        inputs: dict[str, Any],
        matrix: np.ndarray,
        raw: np.ndarray,
        request_id: str | None,
    ) -> None:
        rows = raw.shape[0]
        one = rows == 1 and not isinstance(next(iter(inputs.values()), None), list | np.ndarray)
        if one and self._score_row(candidate, champion, inputs, matrix, raw, request_id):
            return
        columns: dict[str, Any] = (
            {
                name: np.array([value], dtype=np.float64)
                if name in _numeric(candidate)
                else [value]
                for name, value in inputs.items()
            }
            if one
            else inputs
        )
        if not self._transform_of(candidate, champion):
            matrix = candidate.transform.transform_columns(columns).matrix
        candidate_raw = candidate.predict(matrix)
        champion_codes, champion_scores = _decisions(champion, raw)
        codes, scores = _decisions(candidate, candidate_raw)
        flips = None
        if codes is not None and champion_codes is not None:
            flips = (candidate.classes[codes] != champion.classes[champion_codes]).astype(
                np.float64
            )
        observer = candidate.observer
        observer.stats.shadow(flips, scores - champion_scores)
        observer.inputs(columns, rows)
        observer.outputs(codes, scores)
        log = self._payload_log
        if log is not None and request_id is not None:
            log.log(
                model=self._model,
                version=candidate.version,
                request_id=request_id,
                rows=rows,
                inputs=columns,
                outputs=output_columns(candidate.classes, codes, candidate_raw),
                shadow=True,
            )


def _row_decision(served: Served, raw: np.ndarray) -> tuple[int, float]:
    """One row's predicted class code (0 for regression) and score, as Python scalars."""
    classes = len(served.class_list)
    if classes == 2:
        value = float(raw[0])
        return (1 if value >= 0.5 else 0), value
    if classes > 2:
        probabilities = raw[0].tolist()
        value = max(probabilities)
        return probabilities.index(value), value
    return 0, float(raw[0])


def _numeric(served: Served) -> frozenset[str]:
    return frozenset(served.bundle.schema.numeric_features)
