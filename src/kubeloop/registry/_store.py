"""The model registry: immutable bundle versions and one ``champion`` pointer per model.

Layout, the same on a local disk and in object storage (``s3://`` on a cluster, any fsspec URL)::

    <root>/<model>/versions/<version>/   a verified bundle, never modified
    <root>/<model>/champion              {"version": ..., "updated": ..., "previous": ...,
                                          "candidate": {"version", "mode", "percent", "started"}}
    <root>/<model>/transition            the journal of a promotion or rollback in progress
                                          (:mod:`kubeloop.registry.rollout`)

The pointer names the champion and, during a staged rollout, a *candidate* served beside it
(``mode`` ``"canary"``: it answers ``percent``% of requests; ``"shadow"``: it scores the same rows
off the response path, ``percent`` 0). Every change of champion or candidate is one write of the
pointer: :meth:`Registry.promote`, :meth:`Registry.start_candidate`, :meth:`Registry.end_candidate`
and :meth:`Registry.rollback`.

Writers never leave a half-written state a reader could pick up: locally a version is copied
into a hidden temp sibling and renamed into place, and the pointer is written to a temp file and
``os.replace``-d; in object storage every bundle file is uploaded before ``manifest.json`` (readers
verify against the manifest) and the pointer is a single PUT, which object stores apply atomically.

In object storage the endpoint and credentials come from the standard variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) or ``storage_options``.
A missing bucket or refused credentials are one :class:`RegistryError` at the first operation,
before anything is written.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from kubeloop.bundle import MANIFEST, verify_bundle
from kubeloop.errors import (
    BundleError,
    RegistryError,
    check_choice,
    check_range,
    parameter_error,
)
from kubeloop.names import NAME_RULE, check_name, is_valid_name, shown

__all__ = [
    "CANDIDATE_MODES",
    "BeforeWrite",
    "Registry",
    "default_registry_root",
    "kubeloop_home",
    "read_champion",
]

DEFAULT_HOME = "kubeloop-home"
_CHAMPION = "champion"
_TRANSITION = "transition"
_VERSIONS = "versions"
CANDIDATE_MODES = ("canary", "shadow")
# Called with (the pointer record now, the record about to be written) just before a pointer
# write: kubeloop.registry.rollout writes its journal there.
BeforeWrite = Callable[[dict[str, Any] | None, dict[str, Any]], None]
_BUCKET_STORES = frozenset({"s3", "s3a", "gs", "gcs"})


def kubeloop_home() -> Path:
    """The embedded default's working directory: ``$KUBELOOP_HOME`` or ``./kubeloop-home``."""
    return Path(os.environ.get("KUBELOOP_HOME") or DEFAULT_HOME).absolute()


def default_registry_root() -> str:
    """``$KUBELOOP_REGISTRY`` when set, else ``<kubeloop home>/registry``."""
    return os.environ.get("KUBELOOP_REGISTRY") or str(kubeloop_home() / "registry")


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Registry:
    """Bundle versions and champion pointers under one root (a path or an fsspec URL).

    Args:
        root: A local directory (created on first write) or a URL such as ``s3://bucket/registry``.
        storage_options: Passed to the fsspec filesystem (credentials, endpoint URL).
    """

    def __init__(self, root: str | Path, **storage_options: Any) -> None:
        self._fs, path = fsspec.core.url_to_fs(str(root), **storage_options)
        self._local = isinstance(self._fs, LocalFileSystem)
        self._root = str(Path(path).absolute()) if self._local else path.rstrip("/")
        self.root = self._root if self._local else self._fs.unstrip_protocol(self._root)
        self._reachable = self._local

    def _check_store(self) -> None:
        """Object storage: one clear error when the bucket is missing or access is refused."""
        if self._reachable:
            return
        protocols = (
            self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)
        )
        if not _BUCKET_STORES.intersection(protocols):
            self._reachable = True  # no buckets (e.g. memory://): nothing to check
            return
        bucket = self._root.split("/", 1)[0]
        where = os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint"
        try:
            self._fs.ls(bucket, detail=False, refresh=True)
        except FileNotFoundError:
            raise RegistryError(
                f"the registry {self.root} is unusable: bucket {bucket!r} does not exist at "
                f"{where}; create it first."
            ) from None
        except PermissionError as exc:
            raise RegistryError(
                f"the registry {self.root} is unusable: access to bucket {bucket!r} at {where} "
                f"was refused ({exc}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
            ) from None
        except OSError as exc:
            raise RegistryError(
                f"the registry {self.root} is unreachable at {where}: {exc}"
            ) from None
        self._reachable = True

    def __repr__(self) -> str:
        return f"Registry({self.root!r})"

    # -- paths ------------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        for part in parts:
            check_name(part, what="registry name (model or version)", error=RegistryError)
        return "/".join((self._root, *parts))

    def version_uri(self, model: str, version: str) -> str:
        """The full location of a version (a path locally, a URL such as ``s3://...`` remotely)."""
        path = self._join(model, _VERSIONS, version)
        return path if self._local else self._fs.unstrip_protocol(path)

    # -- reading ----------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the models that have at least one version."""
        self._check_store()
        if not self._fs.isdir(self._root):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(self._root, detail=False)]
        return sorted(n for n in names if not n.startswith(".") and self.versions(n))

    def versions(self, model: str) -> list[str]:
        """Complete versions of ``model``, oldest first (version ids sort by creation time)."""
        self._check_store()
        directory = self._join(model, _VERSIONS)
        if not self._fs.isdir(directory):
            return []
        found = []
        for entry in self._fs.ls(directory, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if not name.startswith(".") and self._fs.isfile(f"{directory}/{name}/{MANIFEST}"):
                found.append(name)
        return sorted(found)

    def manifest(self, model: str, version: str) -> dict[str, Any]:
        """The manifest of one version (not re-verified; :meth:`fetch` verifies)."""
        self._check_store()
        path = f"{self._join(model, _VERSIONS, version)}/{MANIFEST}"
        if not self._fs.isfile(path):
            raise RegistryError(
                f"model {model!r} has no version {version!r} in {self.root}; "
                f"known versions: {self.versions(model) or 'none'}."
            )
        return dict(json.loads(self._fs.cat_file(path)))

    def champion_record(self, model: str) -> dict[str, Any] | None:
        """The champion pointer's content, or ``None`` when the model has no champion yet."""
        self._check_store()
        path = self._join(model, _CHAMPION)
        if not self._fs.isfile(path):
            return None
        fix = (
            f"point it at one of the versions ({', '.join(self.versions(model)) or 'none yet'}) "
            f"with Registry({self.root!r}).promote({model!r}, VERSION), or let a training run "
            "promote one"
        )
        try:
            record = json.loads(self._fs.cat_file(path))
            version = record["version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(
                f"champion pointer {path} is not valid JSON with a 'version' ({exc}); {fix}."
            ) from exc
        if not is_valid_name(version):
            raise RegistryError(
                f"champion pointer {path} names version {shown(version)}, which is not a version "
                f"id ({NAME_RULE}); {fix}."
            )
        return dict(record)

    def champion(self, model: str) -> str | None:
        """The champion's version id, or ``None``."""
        record = self.champion_record(model)
        return None if record is None else str(record["version"])

    def champion_path(self, model: str) -> Path | None:
        """A verified local directory holding the champion bundle (downloaded when remote)."""
        version = self.champion(model)
        return None if version is None else self.fetch(model, version)

    def fetch(self, model: str, version: str | None = None, dest: Path | None = None) -> Path:
        """A local, verified copy of a version (the champion when ``version`` is ``None``).

        Local registries return the version directory itself; remote ones download it into
        ``dest`` (default: a per-user cache directory) once.

        Raises:
            RegistryError: No such version, no champion, or the stored bundle fails verification.
        """
        version = version or self.champion(model)
        if version is None:
            raise RegistryError(
                f"model {model!r} has no champion in {self.root}; run the training pipeline first."
            )
        self.manifest(model, version)  # raises RegistryError when absent
        source = self._join(model, _VERSIONS, version)
        if self._local:
            local = Path(source)
        else:
            cache = Path(tempfile.gettempdir()) / "kubeloop-registry-cache"
            local = Path(dest) if dest is not None else cache / model / version
            if not local.is_dir():
                temp = local.parent / f".{local.name}.tmp-{secrets.token_hex(4)}"
                temp.mkdir(parents=True)
                for remote in self._fs.ls(source, detail=False):
                    name = remote.rstrip("/").rsplit("/", 1)[-1]
                    (temp / name).write_bytes(self._fs.cat_file(remote))
                os.replace(temp, local)
        try:
            verify_bundle(local)
        except BundleError as exc:
            raise RegistryError(f"registry version {model}/{version} is damaged: {exc}") from exc
        return local

    # -- writing ----------------------------------------------------------------------------

    def register(self, bundle_dir: str | Path) -> str:
        """Store a verified bundle as a new version and return its version id.

        Idempotent: when an existing version of the same model has exactly the same files
        (same sha256 for every file), that version is returned and nothing is written.

        Raises:
            RegistryError: The bundle fails verification, or its version id is taken by
                different content.
        """
        bundle_dir = Path(bundle_dir)
        try:
            manifest = verify_bundle(bundle_dir)
        except BundleError as exc:
            raise RegistryError(f"cannot register {bundle_dir}: {exc}") from exc
        model, version = str(manifest["name"]), str(manifest["version"])
        for existing in self.versions(model):
            if self.manifest(model, existing).get("files") == manifest["files"]:
                return existing
        target = self._join(model, _VERSIONS, version)
        if self._fs.exists(target):
            raise RegistryError(
                f"version {version!r} of {model!r} already exists in {self.root} with different "
                "content; bundles are immutable, retrain to get a new version."
            )
        if self._local:
            self._copy_local(bundle_dir, Path(target))
        else:
            names = sorted(p.name for p in bundle_dir.iterdir() if p.name != MANIFEST)
            for name in [*names, MANIFEST]:  # manifest last: readers only see complete versions
                self._fs.pipe_file(f"{target}/{name}", (bundle_dir / name).read_bytes())
        return version

    @staticmethod
    def _copy_local(source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
        try:
            shutil.copytree(source, temp)
            verify_bundle(temp)
            os.rename(temp, target)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise

    def promote(
        self, model: str, version: str, *, before_write: BeforeWrite | None = None
    ) -> dict[str, Any]:
        """Make ``version`` the champion of ``model`` (one atomic write of the pointer).

        Any candidate is dropped: the promoted version may be the candidate itself, and a
        candidate is only ever compared with the champion it was started beside.

        Args:
            model: The model name.
            version: An existing, verified version.
            before_write: Called with the current and the new record just before the write
                (:mod:`kubeloop.registry.rollout` journals the transition there).

        Returns:
            The new pointer record; ``previous`` names the champion it replaced, if any
            (promoting the champion again keeps its ``previous``).

        Raises:
            RegistryError: The version does not exist or fails verification.
        """
        self.fetch(model, version)
        current = self.champion_record(model)
        record: dict[str, Any] = {"version": version, "updated": _now()}
        if current is not None and current["version"] != version:
            record["previous"] = current["version"]
        elif current is not None and current.get("previous") is not None:
            record["previous"] = current["previous"]
        return self._write_pointer(model, current, record, before_write)

    def candidate(
        self, model: str, *, record: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The candidate entry of the pointer (``version``, ``mode``, ``percent``, ``started``),
        or ``None`` when the model has no candidate (or no champion).

        Args:
            model: The model name.
            record: A champion record already read (:meth:`champion_record`), so that champion
                and candidate come from one read of the pointer; default: read it now.

        Raises:
            RegistryError: The pointer is unreadable, or its candidate entry is malformed (the
                message names the entry and how to drop it).
        """
        if record is None:
            record = self.champion_record(model)
        if record is None or record.get("candidate") is None:
            return None
        entry = record["candidate"]
        problem = _candidate_problem(entry)
        if problem is not None:
            raise RegistryError(
                f"the candidate entry of champion pointer {self._join(model, _CHAMPION)} "
                f"{problem}: {shown(entry)}; drop it with Registry({self.root!r})"
                f".end_candidate({model!r}) and start the rollout again."
            )
        return dict(entry)

    def start_candidate(
        self,
        model: str,
        version: str,
        *,
        mode: str,
        percent: float,
        before_write: BeforeWrite | None = None,
    ) -> dict[str, Any]:
        """Serve ``version`` beside the champion as the candidate of a staged rollout.

        The champion stays as it is. Starting the same candidate again (e.g. a larger canary
        share) replaces its entry; a different candidate must be promoted or ended first.

        Args:
            model: The model name; it must have a champion.
            version: An existing, verified version other than the champion.
            mode: ``"canary"`` (answers ``percent``% of requests) or ``"shadow"`` (scores the
                same rows off the response path).
            percent: The canary share, in (0, 100]; 0 in shadow mode.
            before_write: As in :meth:`promote`.

        Returns:
            The new pointer record.

        Raises:
            ConfigError: ``mode`` or ``percent`` is not allowed.
            RegistryError: No such version, no champion, the version is the champion, or
                another candidate is in place.
        """
        owner = "Registry.start_candidate"
        check_choice("mode", mode, CANDIDATE_MODES, owner=owner)
        if mode == "canary":
            check_range("percent", percent, owner=owner, low=0, high=100, closed="right")
        elif percent != 0:
            expected = "0 in shadow mode (a shadow candidate answers no requests)"
            raise parameter_error("percent", percent, owner=owner, expected=expected)
        self.fetch(model, version)
        current = self.champion_record(model)
        if current is None:
            raise RegistryError(
                f"model {model!r} has no champion in {self.root} to compare candidate {version!r} "
                f"with; promote it directly: Registry({self.root!r}).promote({model!r}, "
                f"{version!r})."
            )
        if current["version"] == version:
            raise RegistryError(
                f"version {version!r} is already the champion of {model!r}; a candidate must be "
                "another version."
            )
        existing = current.get("candidate")
        if isinstance(existing, dict) and existing.get("version") not in (None, version):
            raise RegistryError(
                f"model {model!r} already has candidate {shown(existing.get('version'))} in "
                f"{shown(existing.get('mode'))} mode; promote it or end it first "
                f"(Registry({self.root!r}).end_candidate({model!r}))."
            )
        share = 0 if mode == "shadow" else percent
        if float(share).is_integer():
            share = int(share)
        record = {key: value for key, value in current.items() if key != "candidate"}
        record["candidate"] = {
            "version": version,
            "mode": mode,
            "percent": share,
            "started": _now(),
        }
        return self._write_pointer(model, current, record, before_write)

    def end_candidate(
        self, model: str, *, before_write: BeforeWrite | None = None
    ) -> dict[str, Any]:
        """Drop the candidate (a rollback of the candidate); the champion stays as it is.

        A malformed candidate entry is dropped too.

        Returns:
            The new pointer record (the champion's, unchanged, without ``candidate``).

        Raises:
            RegistryError: The model has no candidate.
        """
        current = self.champion_record(model)
        if current is None or current.get("candidate") is None:
            raise RegistryError(
                f"model {model!r} has no candidate in {self.root}; nothing to end "
                f"(start one with Registry({self.root!r}).start_candidate(...))."
            )
        record = {key: value for key, value in current.items() if key != "candidate"}
        return self._write_pointer(model, current, record, before_write)

    def rollback(
        self, model: str, to: str | None = None, *, before_write: BeforeWrite | None = None
    ) -> dict[str, Any]:
        """Make ``to`` -- by default the pointer's ``previous`` -- the champion again.

        Any candidate is dropped. The record's ``previous`` becomes the champion rolled back
        from, so a second rollback returns to it.

        Args:
            model: The model name.
            to: The version to serve; default the previous champion.
            before_write: As in :meth:`promote`.

        Returns:
            The new pointer record.

        Raises:
            RegistryError: No champion; no previous champion recorded and no ``to``; ``to`` is
                unknown, damaged or already the champion.
        """
        current = self.champion_record(model)
        known = ", ".join(self.versions(model)) or "none"
        if current is None:
            raise RegistryError(
                f"model {model!r} has no champion in {self.root}; there is nothing to roll back "
                f"(known versions: {known}; promote one first)."
            )
        champion = str(current["version"])
        target = to if to is not None else current.get("previous")
        if target is None:
            raise RegistryError(
                f"champion {champion!r} of {model!r} records no previous champion; name the "
                f"version to roll back to with --to VERSION (Registry.rollback({model!r}, "
                f"to=VERSION)); known versions: {known}."
            )
        if not is_valid_name(target):
            raise RegistryError(
                f"cannot roll {model!r} back to {shown(target)}: not a version id ({NAME_RULE}); "
                f"known versions: {known}."
            )
        if target == champion:
            raise RegistryError(
                f"version {target!r} is already the champion of {model!r}; name another with "
                f"--to VERSION (known versions: {known})."
            )
        if target not in self.versions(model):
            raise RegistryError(
                f"cannot roll {model!r} back to {target!r}: {self.root} has no such version; "
                f"pass one of the known versions with --to VERSION: {known}."
            )
        self.fetch(model, target)  # verified before it is served
        record: dict[str, Any] = {"version": target, "updated": _now(), "previous": champion}
        return self._write_pointer(model, current, record, before_write)

    def _write_pointer(
        self,
        model: str,
        current: dict[str, Any] | None,
        record: dict[str, Any],
        before_write: BeforeWrite | None,
    ) -> dict[str, Any]:
        if before_write is not None:
            before_write(current, record)
        self._write_json(self._join(model, _CHAMPION), record)
        return record

    def _write_json(self, path: str, content: dict[str, Any]) -> None:
        """One atomic write: a fsync-ed temp file ``os.replace``-d locally, one PUT remotely."""
        payload = (json.dumps(content, indent=2, sort_keys=True) + "\n").encode()
        if self._local:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            temp = f"{path}.tmp-{secrets.token_hex(4)}"
            try:
                with open(temp, "wb") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            _fsync_directory(directory)  # the rename itself survives a power loss
        else:
            self._check_store()
            self._fs.pipe_file(path, payload)

    # -- the transition journal (kubeloop.registry.rollout) ----------------------------------

    def transition_record(self, model: str) -> dict[str, Any] | None:
        """The journal of an unfinished promotion or rollback of ``model``, or ``None``.

        Raises:
            RegistryError: The journal is not a JSON object (the message says how to remove it).
        """
        self._check_store()
        path = self._join(model, _TRANSITION)
        if not self._fs.isfile(path):
            return None
        try:
            record = json.loads(self._fs.cat_file(path))
        except ValueError as exc:
            record = exc
        if not isinstance(record, dict):
            raise RegistryError(
                f"transition journal {path} is not a JSON object ({shown(record)}); check that "
                "the champion pointer names the version that should serve, then delete the "
                "journal."
            )
        return record

    def write_transition(self, model: str, record: dict[str, Any]) -> None:
        """Write the journal of a transition (one atomic write, like the pointer)."""
        self._write_json(self._join(model, _TRANSITION), record)

    def clear_transition(self, model: str) -> None:
        """Remove the journal (nothing to do when there is none)."""
        path = self._join(model, _TRANSITION)
        if self._local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            _fsync_directory(os.path.dirname(path))
        elif self._fs.isfile(path):
            self._fs.rm_file(path)


def _fsync_directory(directory: str) -> None:
    """Make a rename or unlink in ``directory`` durable (POSIX; a no-op where unsupported)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _candidate_problem(entry: object) -> str | None:
    """What is wrong with a pointer's candidate entry, or ``None`` when it is well-formed."""
    if not isinstance(entry, dict):
        return "is not a JSON object"
    if not is_valid_name(entry.get("version")):
        return f"names version {shown(entry.get('version'))}, which is not a version id"
    mode = entry.get("mode")
    if mode not in CANDIDATE_MODES:
        return f"has mode {shown(mode)}, not one of {', '.join(CANDIDATE_MODES)}"
    percent = entry.get("percent")
    if (
        not isinstance(percent, (int, float))
        or isinstance(percent, bool)
        or not math.isfinite(percent)
    ):
        return f"has percent {shown(percent)}, which is not a number"
    if mode == "canary" and not 0 < percent <= 100:
        return f"has canary percent {percent!r}, outside (0, 100]"
    if mode == "shadow" and percent != 0:
        return f"has shadow percent {percent!r}; a shadow candidate's percent is 0"
    return None


def read_champion(root: str | Path, model: str) -> str | None:
    """The champion version of ``model`` under ``root`` (``None`` when there is none)."""
    return Registry(root).champion(model)
