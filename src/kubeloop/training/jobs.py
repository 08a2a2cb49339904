"""A driver outside the cluster: ``kubeloop train`` submitted as a Ray job (the Ray Jobs API).

With ``RAY_ADDRESS`` (or ``--ray-address``) set to the head's Jobs API, ``http://head:8265``, the
command does not become a Ray driver itself (that needs the cluster's network): it submits the
same ``kubeloop train`` as a Ray job, whose entrypoint runs on the head as the cluster's driver,
and streams the job's log until it ends. Data and bundle therefore travel by URL: ``--data``
must be a URL the cluster reads and ``--out`` one it writes (``s3://...``); the job writes the
bundle there. The job's runtime environment carries the submitting shell's ``AWS_*`` (storage
access) and ``KUBELOOP_*`` settings; the head's image must have kubeloop installed (the component
image does).

The command's exit status is the job's: 0 when it succeeded, the entrypoint's own status when it
failed (2: bad data, as locally), 1 for anything else. Ctrl-C stops the job.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

from kubeloop.errors import ConfigError, TrainingError
from kubeloop.training.storage import is_url

__all__ = ["FORWARDED_PREFIXES", "is_jobs_address", "job_environment", "submit_training_job"]

# What of the submitting shell's environment the job gets: storage access and kubeloop's own
# settings (checkpoint storage, checkpoint rounds...).
FORWARDED_PREFIXES = ("AWS_", "KUBELOOP_")
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_EXIT = re.compile(r"exit code (\d+)")


def is_jobs_address(address: str | None) -> TypeGuard[str]:
    """Whether a Ray address is a head's Jobs API (``http(s)://host:8265``)."""
    return address is not None and address.startswith(("http://", "https://"))


def job_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a submitted job carries from here (:data:`FORWARDED_PREFIXES`)."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k.startswith(FORWARDED_PREFIXES)}


def submit_training_job(
    address: str,
    train_args: Sequence[str],
    *,
    data: str,
    out: str,
    write: Callable[[str], Any],
    say: Callable[[str], None],
) -> int:
    """Submit ``kubeloop train <train_args>`` as a Ray job, stream its log, return its status.

    Args:
        address: The Jobs API, ``http(s)://head:8265``.
        train_args: The ``train`` command's arguments as the job will run them (``--data`` and
            ``--out`` among them, as URLs).
        data: The ``--data`` value (checked to be a URL before anything is submitted).
        out: The ``--out`` value (the same).
        write: Where the job's log goes, chunk by chunk as it arrives.
        say: One line about the job (submitted, how it ended).

    Raises:
        ConfigError: ``data`` or ``out`` is a local path (the cluster cannot read or write it).
        TrainingError: The Jobs API could not be reached or refused the job.
    """
    for flag, value in (("--data", data), ("--out", out)):
        if not value or not is_url(value):
            raise ConfigError(
                f"With a Ray Jobs API address ({address}) the training runs on the cluster: "
                f"{flag} must be a URL the cluster can reach (s3://bucket/key...), not "
                f"{value or 'unset'!r}."
            )
    from ray.job_submission import JobSubmissionClient

    entrypoint = shlex.join(["kubeloop", "train", *train_args])
    submission_id = f"kubeloop-train-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}"
    try:
        client = JobSubmissionClient(address)
        job = client.submit_job(
            entrypoint=entrypoint,
            submission_id=submission_id,
            runtime_env={"env_vars": job_environment()},
            metadata={"kubeloop": "train"},
        )
    except Exception as exc:  # ConnectionError, RuntimeError (a refusal), ValueError...
        raise TrainingError(
            f"Could not submit the training to the Ray Jobs API at {address}: {exc}"
        ) from None
    say(f"submitted Ray job {job} to {address}: {entrypoint}; its log follows")
    try:
        asyncio.run(_stream(client, job, write))
        status, message = _final(client, job)
    except KeyboardInterrupt:
        client.stop_job(job)
        say(f"interrupted: stopped Ray job {job}")
        raise
    if status == "SUCCEEDED":
        say(f"Ray job {job} succeeded; the bundle is at {out}")
        return 0
    say(f"Ray job {job} ended {status}: {message}")
    found = _EXIT.search(message or "")
    return int(found.group(1)) if found and int(found.group(1)) else 1


async def _stream(client: Any, job: str, write: Callable[[str], Any]) -> None:
    async for chunk in client.tail_job_logs(job):
        write(chunk)


def _final(client: Any, job: str, *, wait_s: float = 30.0) -> tuple[str, str]:
    """The job's end state and message (the log can end a moment before the state is final)."""
    deadline = time.monotonic() + wait_s
    while True:
        info = client.get_job_info(job)
        status = str(getattr(info.status, "value", info.status))
        if status in _TERMINAL or time.monotonic() > deadline:
            return status, info.message or ""
        time.sleep(0.5)
