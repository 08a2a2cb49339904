"""Directories in object storage (fsspec URLs: ``s3://bucket/key``, ``gs://...``, ``file://...``).

A bundle trained on a cluster has to leave it: the RayJob entrypoint and ``kubeloop train --out
s3://...`` write the bundle locally first, then copy it up with :func:`upload_dir`; the steps that
read a directory back use :func:`download_dir`. S3 settings come from the standard ``AWS_*``
variables (``AWS_ENDPOINT_URL`` for a server of one's own).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kubeloop.errors import ConfigError, TrainingError

__all__ = ["download_dir", "ensure_absent", "is_url", "upload_dir"]


def is_url(location: str | Path) -> bool:
    """Whether ``location`` is a storage URL (``scheme://...``) rather than a local path."""
    return "://" in str(location) and not str(location).startswith("file://")


def ensure_absent(url: str) -> None:
    """Refuse a storage URL that already holds something (a bundle is never written over).

    Raises:
        ConfigError: Something is at ``url``.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        raise ConfigError(f"{url} already exists; choose a new --out or remove it.")


def download_dir(url: str, dest: Path, *, only: Sequence[str] | None = None) -> Path:
    """Copy the files of a storage directory into ``dest``, streamed to disk (never whole in
    memory); ``only``: just these names (relative to the directory), the rest stay behind.

    Raises:
        TrainingError: A file named in ``only`` is not there.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    dest.mkdir(parents=True, exist_ok=True)
    relatives = [r[len(root) + 1 :] for r in fs.find(root)] if only is None else list(only)
    for relative in relatives:
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(f"{root}/{relative}", str(dest / relative))
        except FileNotFoundError:
            raise TrainingError(f"{url} has no {relative!r}; was the step before it run?") from None
    return dest


def upload_dir(source: Path, url: str) -> None:
    """Copy every file under ``source`` to the storage directory ``url``, one file at a time
    (streamed from disk)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{root.rstrip('/')}/{path.relative_to(source).as_posix()}")
