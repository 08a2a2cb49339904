"""Run the training pipeline on this machine through ``kfp.local`` (no cluster).

By default every step runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``).
With ``runner="docker"`` every step runs in the component image through ``kfp.local.DockerRunner``
(a Docker engine, or podman's Docker API socket named by ``DOCKER_HOST``), the same container
command KFP's launcher runs on a cluster. The artifacts are under ``<kubeloop home>/kfp-local``.
When a step fails, the kubeloop error it raised is found in the step's output and raised again
here with the same class and message, so ``kubeloop pipeline run --local`` fails with e.g. the
validate step's ``DataValidationError``.
"""

from __future__ import annotations

import io
import os
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
from kubeloop.pipelines.launch.request import Runner

__all__ = ["LOCAL_IMAGE", "Runner", "run_pipeline_locally", "step_error"]

# What `make images` tags the component image as; the docker runner's default.
LOCAL_IMAGE = "kubeloop/kubeloop-components:dev"
# Passed from this environment into the step containers (S3 endpoint and credentials, MLflow).
_PASSED_ENV = re.compile(r"^(AWS_\w+|MLFLOW_TRACKING_\w+|KUBELOOP_(HOME|REGISTRY))$")

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


def _container_settings(arguments: Mapping[str, Any], pipeline_root: Path) -> dict[str, Any]:
    """Docker-SDK ``containers.run`` settings of the steps' containers.

    Host networking (the S3 server and MLflow may listen on loopback), this process's user (files
    in the mounted kubeloop home stay writable here), the kubeloop home read-write and a local
    data file (or folder) read-only, both at the same paths, and the passed environment. The data
    file alone is mounted, not its folder: a folder such as ``/tmp`` would hide the container's
    own, where every step writes its program.
    """
    home = pipeline_root.parent
    volumes = {str(home): {"bind": str(home), "mode": "rw"}}
    data = str(arguments.get("data", ""))
    if data and "://" not in data:
        source = str(Path(data).absolute())
        volumes.setdefault(source, {"bind": source, "mode": "ro"})
    return {
        "network_mode": "host",
        "user": f"{os.getuid()}:{os.getgid()}",
        "volumes": volumes,
        "environment": {k: v for k, v in os.environ.items() if _PASSED_ENV.match(k)},
        "shm_size": "1g",  # Ray's object store
    }


def _print_lines(text: bytes) -> bytearray:
    """Print the complete lines of ``text``; return what follows the last newline."""
    *lines, rest = bytes(text).split(b"\n")
    for line in lines:
        print(line.decode(errors="replace"))
    return bytearray(rest)


@contextmanager
def _failures_seen(settings: Mapping[str, Any]) -> Iterator[None]:
    """Run kfp.local's step containers so that a failing step is seen as failed.

    kfp 2.17's ``DockerRunner`` starts every container with ``auto_remove=True``; a container
    that exits quickly (a failing step) is then gone before ``wait()``, which kfp reads as exit
    status 0. It also looks an image up by comparing names literally, while podman names local
    images ``localhost/NAME:TAG``, and pulls when it finds none. For the time of one run this
    swaps kfp's container function for one that looks the image up through the engine, keeps
    the container until its exit status is read, then removes it. Volumes and environment
    variables from ``settings`` are added to kfp's own.
    """
    import docker
    from kfp.local import docker_task_handler

    def run_container(
        client: docker.DockerClient,
        image: str,
        command: list[str],
        volumes: dict[str, Any],
        **run_args: Any,
    ) -> int:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise errors.ConfigError(
                f"image {image!r} is not in the local container engine; build it with "
                "`make images` (or name another one with --image)."
            ) from None
        environment = {**settings["environment"], **run_args.pop("environment", {})}
        container = client.containers.run(
            image=image,
            command=command,
            detach=True,
            volumes={**settings["volumes"], **volumes},
            environment=environment,
            **{k: v for k, v in settings.items() if k not in ("volumes", "environment")},
            **run_args,
        )
        try:
            # The stream's chunks are not lines (podman splits a line at any byte), and kfp.local
            # indents every write: only whole lines are printed, or an error line would arrive
            # cut into indented pieces that nobody can read back (step_error).
            shown, pending = bytearray(), bytearray()
            for chunk in container.logs(stream=True, follow=True):
                shown += chunk
                pending = _print_lines(pending + chunk)
            status = int(container.wait()["StatusCode"])
            # podman's follow stream can end before the last lines of a container that exits
            # at once (a failing step's error): what it did not deliver is shown from the log.
            pending = _print_lines(pending + container.logs()[len(shown) :])
            if pending:
                print(pending.decode(errors="replace"))
            return status
        finally:
            container.remove(force=True)

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def run_pipeline_locally(
    arguments: Mapping[str, Any],
    *,
    pipeline_root: Path,
    progress: ProgressFn = quiet,
    echo: bool = True,
    runner: Runner = "subprocess",
    image: str | None = None,
) -> str:
    """Run the pipeline with ``arguments`` via ``kfp.local`` and return its output (the gate JSON).

    Args:
        arguments: Pipeline parameters (``data``, ``target``, ``registry_root``...).
        pipeline_root: Where ``kfp.local`` keeps the steps' artifacts.
        progress: Called with one human line per milestone.
        echo: Show the steps' own output (the CLI does; the monitor may not want it).
        runner: ``"subprocess"`` (steps in this Python) or ``"docker"`` (steps in ``image``
            through ``DOCKER_HOST``'s engine).
        image: The component image of the docker runner (default ``$KUBELOOP_IMAGE``, else
            :data:`LOCAL_IMAGE`).

    Raises:
        KubeloopError: The subclass a step raised (e.g. ``DataValidationError`` from validate).
        TrainingError: A step failed without a kubeloop error.
        ConfigError: Unknown runner, or no container engine / image for the docker runner.
    """
    from kfp import local

    from kubeloop.pipelines.components.pipeline import build_pipeline

    pipeline_root = Path(pipeline_root).absolute()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    if runner == "subprocess":
        chosen: Any = local.SubprocessRunner(use_venv=False)
        seen: Any = _no_change()
    elif runner == "docker":
        image = image or os.environ.get("KUBELOOP_IMAGE") or LOCAL_IMAGE
        settings = _container_settings(arguments, pipeline_root)
        _check_engine()
        chosen, seen = local.DockerRunner(), _failures_seen(settings)
        progress(f"kfp.local: steps run in containers of {image}")
    else:
        raise errors.ConfigError(f"runner must be 'subprocess' or 'docker' (got {runner!r}).")
    local.init(
        runner=chosen,
        pipeline_root=str(pipeline_root),
        workspace_root=str(pipeline_root / ".workspace"),
        raise_on_error=True,
    )
    pipeline = build_pipeline(image if runner == "docker" else None)
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
            with seen:
                task = pipeline(**arguments)
        except errors.ConfigError:
            raise
        except Exception as exc:
            found = step_error(out.copy.getvalue() + "\n" + err.copy.getvalue())
            if found is not None:
                raise found from None
            raise TrainingError(f"the local pipeline run failed: {exc}") from exc
    return str(task.output)


@contextmanager
def _no_change() -> Iterator[None]:
    yield


def _check_engine() -> None:
    """A clear error when no container engine answers at ``DOCKER_HOST`` (or Docker's socket)."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or "the default Docker socket"
        raise errors.ConfigError(
            f"--runner docker needs a container engine; none answers at {where} ({exc}). Start "
            "Docker, or podman's Docker API (`podman system service --time=0 unix:///PATH`) "
            "and set DOCKER_HOST=unix:///PATH."
        ) from None
