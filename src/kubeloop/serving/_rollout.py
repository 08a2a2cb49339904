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
  response path (:class:`ShadowScorer`: on the event loop, up to 50 ms later, in
  batches whose single rows share one predict call, and at most a quarter of each second;
  pairs beyond that are dropped and counted in ``kubeloop_shadow_dropped_total``). Per row it
  records whether the decision flipped (classification) and the score difference candidate -
  champion, in the candidate version's rollout moments, and counts the candidate's drift bins
  and predictions (its ``kubeloop_requests_total`` counts only requests it answered: none).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

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
_SHARE = 0.25  # share of each second the shadow candidate may spend scoring
_LINGER = 0.05  # seconds a shadow pair waits for others before the loop scores them


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


class _Pair(NamedTuple):
    """One answered request for the shadow candidate (see :meth:`ShadowScorer.submit`)."""

    candidate: Served
    champion: Served
    inputs: dict[str, Any]
    matrix: np.ndarray
    raw: np.ndarray
    request_id: str | None

    @property
    def single_row(self) -> bool:
        """Whether the request was one row of the fast path (``inputs`` holds Python scalars,
        not columns)."""
        value = next(iter(self.inputs.values()), None)
        return self.raw.shape[0] == 1 and not isinstance(value, list | np.ndarray)


class ShadowScorer:
    """Scores shadow pairs with the candidate off the response path, on the serving thread.

    Requests served on the event loop (HTTP, gRPC) leave their pair in a list and the loop
    scores what gathered ``linger`` seconds after the first: the cost lands on few requests,
    between responses, instead of on every one (a second thread would take the interpreter lock
    from the response path at random moments: measured +130-230 us on a single-row p50). A
    direct call (no running loop) is scored at once.

    What gathered is scored in batches: the single-row pairs of one candidate and champion whose
    transform the candidate shares (its input is the champion's matrix) are stacked into one
    predict call, then each row is recorded with Python scalars exactly as when scored alone
    (:meth:`_score_rows`: the same metric updates in the same order; the columnar path's numpy
    calls per metric were measured to cost more than they save on a handful of rows). Every
    other pair (several rows, or a transform of the candidate's own) is scored alone.

    The candidate's time is bounded: when scoring has taken more than ``share`` of the current
    second, the rest of that second's pairs are dropped and counted in
    ``kubeloop_shadow_dropped_total`` (as are pairs the candidate fails on). A batch is scored
    or dropped whole, each of its pairs counted.

    Args:
        model: The served model name (metric label, payload log).
        payload_log: Where the candidate's scores of logged requests go (``"shadow": true``).
        share: Share of each second the candidate may spend scoring.
        linger: Seconds the first pair waits for others before the loop scores them.
    """

    def __init__(
        self,
        model: str,
        payload_log: PayloadLogger | None,
        *,
        share: float = _SHARE,
        linger: float = _LINGER,
    ) -> None:
        self._model = model
        self._payload_log = payload_log
        self._share = share
        self._linger = linger
        self._pending: list[_Pair] = []
        self._window = 0.0  # start of the current second
        self._spent = 0.0  # seconds scored in it
        self._same: tuple[Any, Any, bool] | None = None  # (champion, candidate, same transform)
        self._failed: set[str] = set()

    def submit(
        self,
        candidate: Served,
        champion: Served,
        inputs: dict[str, Any],
        matrix: np.ndarray,
        raw: np.ndarray,
        request_id: str | None,
    ) -> None:
        """Have the candidate score one answered request, soon after its response.

        Args:
            candidate: The candidate bundle.
            champion: The bundle that answered.
            inputs: The decoded request (a fast-path row or one column per feature).
            matrix: The champion's transformed rows.
            raw: The champion's output.
            request_id: The request's id in the payload log (``None``: not logged).
        """
        pair = _Pair(candidate, champion, inputs, matrix, raw, request_id)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._run([pair])
            return
        if not self._pending:
            loop.call_later(self._linger, self._flush)
        self._pending.append(pair)

    def _flush(self) -> None:
        """Score the pairs that gathered, batch by batch (:meth:`_batches`)."""
        pending, self._pending = self._pending, []
        for pairs in self._batches(pending):
            self._run(pairs)

    def _batches(self, pending: list[_Pair]) -> list[list[_Pair]]:
        """``pending`` in scoring units, in order of their first pair: the single-row pairs of
        each (candidate, champion) whose matrix the candidate takes as it is, together; every
        other pair alone."""
        batches: list[list[_Pair]] = []
        together: dict[tuple[int, int], list[_Pair]] = {}
        for pair in pending:
            candidate, champion = pair.candidate, pair.champion
            if not (pair.single_row and self._transform_of(candidate, champion)):
                batches.append([pair])
                continue
            batch = together.get((id(candidate), id(champion)))
            if batch is None:
                batch = together[(id(candidate), id(champion))] = []
                batches.append(batch)
            batch.append(pair)
        return batches

    def _run(self, pairs: list[_Pair]) -> None:
        """Score one pair, or a batch of :meth:`_batches`, within the candidate's share of the
        second; pairs dropped (share spent, or the candidate failed) are counted one by one."""
        candidate = pairs[0].candidate
        start = time.perf_counter()
        if start - self._window >= 1.0:
            self._window, self._spent = start, 0.0
        elif self._spent > self._share:
            metrics.SHADOW_DROPPED.labels(self._model, candidate.version).inc(len(pairs))
            return
        try:
            if len(pairs) == 1:
                self._score(pairs[0])
            else:
                self._score_rows(pairs)
        except Exception as exc:  # a candidate that cannot score these pairs: counted
            metrics.SHADOW_DROPPED.labels(self._model, candidate.version).inc(len(pairs))
            if candidate.version not in self._failed:
                self._failed.add(candidate.version)
                _log.warning(
                    "shadow candidate %s could not score a request: %s", candidate.version, exc
                )
        self._spent += time.perf_counter() - start

    def _score_row(self, pair: _Pair) -> bool:
        """Score a fast-path row with Python scalars (fewer numpy calls); ``False`` when the
        candidate's transform needs the columnar path."""
        candidate, champion, row, matrix, _, _ = pair
        if not self._transform_of(candidate, champion):
            result = candidate.transform.transform_row(row)
            if result is None:
                return False
            matrix = result.matrix
        self._record_row(pair, candidate.predict(matrix))
        return True

    def _score_rows(self, pairs: list[_Pair]) -> None:
        """Score single-row pairs of one candidate and champion that share the champion's
        transform (:meth:`_batches`): one predict of their stacked matrices, then each row
        recorded as when scored alone (:meth:`_record_row`). Not the columnar path's numpy
        calls per metric: for a handful of rows they cost more than they save."""
        matrix = np.concatenate([pair.matrix for pair in pairs])
        candidate_raw = pairs[0].candidate.predict_rows(matrix)
        for index, pair in enumerate(pairs):
            self._record_row(pair, candidate_raw[index : index + 1])

    def _record_row(self, pair: _Pair, candidate_raw: np.ndarray) -> None:
        """Record the candidate's output for a fast-path row (Python scalars): whether the
        decision flipped, the score difference candidate - champion, the row's drift bins and
        the candidate's prediction; and its line in the payload log when the request is
        logged."""
        candidate, champion, row, _, raw, request_id = pair
        champion_code, champion_score = _row_decision(champion, raw)
        code, score = _row_decision(candidate, candidate_raw)
        flip = None
        if candidate.class_list and champion.class_list:
            flip = 1.0 if candidate.class_list[code] != champion.class_list[champion_code] else 0.0
        observer = candidate.observer
        observer.stats.shadow_row(flip, score - champion_score)
        observer.input_row(row)
        observer.output_row(code, score)
        if self._payload_log is not None and request_id is not None:
            codes = np.array([code]) if candidate.class_list else None
            columns = {name: [value] for name, value in row.items()}
            self._log_pair(candidate, request_id, 1, columns, codes, candidate_raw)

    def _transform_of(self, candidate: Served, champion: Served) -> bool:
        """Whether the candidate's transform is the champion's (its matrix is reused)."""
        same = self._same
        if same is None or same[0] is not champion or same[1] is not candidate:
            equal = candidate.transform.spec == champion.transform.spec
            same = self._same = (champion, candidate, equal)
        return same[2]

    def _score(self, pair: _Pair) -> None:
        candidate, champion, inputs, matrix, raw, request_id = pair
        rows = raw.shape[0]
        one = pair.single_row
        if one and self._score_row(pair):
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
        if self._payload_log is not None and request_id is not None:
            self._log_pair(candidate, request_id, rows, columns, codes, candidate_raw)

    def _log_pair(
        self,
        candidate: Served,
        request_id: str,
        rows: int,
        columns: dict[str, Any],
        codes: np.ndarray | None,
        candidate_raw: np.ndarray,
    ) -> None:
        """Write the candidate's scores of a logged request to the payload log."""
        assert self._payload_log is not None
        self._payload_log.log(
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
