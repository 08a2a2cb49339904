"""Run the training pipeline on this machine through ``kfp.local`` (no cluster, no Docker).

Every step runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``), with the
artifacts under ``<kubeloop home>/kfp-local``. When a step fails, the kubeloop error it raised is
found in the step's output and raised again here with the same class and message, so
``kubeloop pipeline run --local`` fails with e.g. the validate step's ``DataValidationError``.
"""

from __future__ import annotations

import io
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from kubeloop import errors
from kubeloop.console import ProgressFn, quiet
from kubeloop.errors import KubeloopError, TrainingError

__all__ = ["run_pipeline_locally", "step_error"]

# "kubeloop.errors.DataValidationError: Column 'x' ..." — the last line of a step's traceback.
_ERROR_LINE = re.compile(r"^(?:kubeloop\.errors\.)?(\w+Error): (.+)$")
_TASK_LINE = re.compile(r"Task '([\w-]+)' finished with status FAILURE")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Tee(io.TextIOBase):
    """Write to the real stream and keep a copy (the steps' output is printed to stdout)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


@contextmanager
def _captured() -> Iterator[tuple[_Tee, _Tee]]:
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = saved


def step_error(output: str) -> KubeloopError | None:
    """The kubeloop error a failed step raised, rebuilt from its output (``None`` if none)."""
    output = _ANSI.sub("", output)
    failed = _TASK_LINE.findall(output)
    where = f" (pipeline step '{failed[-1]}')" if failed else ""
    for line in reversed(output.splitlines()):
        match = _ERROR_LINE.match(line.strip())
        if match is None:
            continue
        cls = getattr(errors, match.group(1), None)
        if isinstance(cls, type) and issubclass(cls, KubeloopError):
            return cls(f"{match.group(2)}{where}")
    return None


def run_pipeline_locally(
    arguments: Mapping[str, Any],
    *,
    pipeline_root: Path,
    progress: ProgressFn = quiet,
    echo: bool = True,
) -> str:
    """Run the pipeline with ``arguments`` via ``kfp.local`` and return its output (the gate JSON).

    Args:
        arguments: Pipeline parameters (``data``, ``target``, ``registry_root``...).
        pipeline_root: Where ``kfp.local`` keeps the steps' artifacts.
        progress: Called with one human line per milestone.
        echo: Show the steps' own output (the CLI does; the monitor may not want it).

    Raises:
        KubeloopError: The subclass a step raised (e.g. ``DataValidationError`` from validate).
        TrainingError: A step failed without a kubeloop error.
    """
    from kfp import local

    from kubeloop.pipelines.pipeline import build_pipeline

    pipeline_root = Path(pipeline_root).absolute()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        workspace_root=str(pipeline_root / ".workspace"),
        raise_on_error=True,
    )
    pipeline = build_pipeline()
    progress(f"kfp.local: running {len(arguments)} parameters, artifacts in {pipeline_root}")
    with _captured() as (out, err), warnings.catch_warnings():
        # Expected here: the steps name the project image (not a "python" image) and set
        # display names, which only the cluster backend uses.
        warnings.filterwarnings(
            "ignore", message=".*non-Python base image", category=RuntimeWarning
        )
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
        if not echo:
            out._stream = err._stream = io.StringIO()  # keep the copy, print nothing
        try:
            task = pipeline(**arguments)
        except Exception as exc:
            found = step_error(out.copy.getvalue() + "\n" + err.copy.getvalue())
            if found is not None:
                raise found from None
            raise TrainingError(f"the local pipeline run failed: {exc}") from exc
    return str(task.output)
