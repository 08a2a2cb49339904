"""Optional payload log: sampled requests with their predictions, as JSON Lines.

The monitor reads it for KS/chi-squared tests on raw values and joins delayed labels by
``request_id``. One line per logged request (columnar, one list per feature)::

    {"ts": "2026-01-01T12:00:00.123456Z", "model": "churn", "version": "v2026...-abc123",
     "request_id": "...", "rows": 2,
     "inputs": {"tenure": [3.0, null], "Contract": ["Month-to-month", "Two year"]},
     "outputs": {"label": ["Yes", "No"], "probability": [0.81, 0.07]}}

``version`` is the version that answered the request. In shadow mode (a staged rollout,
:mod:`._rollout`) the candidate's scores of a logged request follow as a record of their own
with the candidate's version, the same ``request_id`` and ``"shadow": true``.

Missing numeric values are ``null``. When the file would grow past ``max_bytes`` it is renamed
to ``<file>.1`` (replacing the previous one) and a new file is started, so at most about twice
``max_bytes`` is kept on disk.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from kubeloop.errors import ConfigError

__all__ = ["PayloadLogger"]


def _plain(values: Any) -> Any:
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f":
            return [None if v != v else v for v in values.tolist()]
        return values.tolist()
    return values


class PayloadLogger:
    """Append sampled request/response pairs to a JSON Lines file, size-capped with rotation.

    Args:
        path: The log file (its directory is created).
        sample_rate: Share of requests logged, in ``[0, 1]``.
        max_bytes: Size at which the file is rotated to ``<path>.1``.
        seed: Seed of the sampling generator (tests).

    Raises:
        ConfigError: ``sample_rate`` outside ``[0, 1]`` or ``max_bytes`` not positive.
    """

    def __init__(
        self,
        path: Path,
        *,
        sample_rate: float = 1.0,
        max_bytes: int = 100 * 1024 * 1024,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ConfigError(f"--payload-sample-rate must be within [0, 1]; got {sample_rate}.")
        if max_bytes <= 0:
            raise ConfigError(f"--payload-max-bytes must be positive; got {max_bytes}.")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self.max_bytes = max_bytes
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 - kept open
        self._size = self.path.stat().st_size

    def sampled(self) -> bool:
        """Whether the current request should be logged."""
        return self.sample_rate >= 1.0 or self._random.random() < self.sample_rate

    def log(
        self,
        *,
        model: str,
        version: str,
        request_id: str,
        rows: int,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        shadow: bool = False,
    ) -> None:
        """Write one line (inputs/outputs: column name -> array or list; ``shadow``: the
        candidate's scores of a request the champion answered, marked ``"shadow": true``)."""
        record = {
            "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "model": model,
            "version": version,
            "request_id": request_id,
            "rows": rows,
            "inputs": {name: _plain(values) for name, values in inputs.items()},
            "outputs": {name: _plain(values) for name, values in outputs.items()},
        }
        if shadow:
            record["shadow"] = True
        line = orjson.dumps(record) + b"\n"
        with self._lock:
            if self._file is None:
                return
            if self._size and self._size + len(line) > self.max_bytes:
                self._file.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._file = open(self.path, "ab")  # noqa: SIM115 - kept open
                self._size = 0
            self._file.write(line)
            self._file.flush()
            self._size += len(line)

    def close(self) -> None:
        """Flush and close the file; later calls to :meth:`log` are ignored."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
