"""The model bundle: one immutable directory, the contract between every stage.

A bundle holds ``schema.json``, ``preprocessor.json``, the model file (``model.ubj`` or
``model.json``), ``reference_profile.json``, ``metrics.json``, plots (``*.svg``) and, written
last, ``manifest.json`` with the sha256 of every other file. It is written into a hidden temp
directory beside the destination (``.<name>.tmp-<random>``), fsynced, then renamed into place,
so a reader sees either no bundle or a complete one; on any error nothing is left behind.

Loading refuses, with a :class:`~kubeloop.errors.BundleError` naming the file:

- before anything is read: a bundle directory that is a symbolic link, and any entry that is a
  symbolic link (even to a valid file), a subdirectory, a special file or a regular file with
  more than one hard link (it could be changed through a name outside the bundle);
- a model name or version in the manifest that breaks :data:`kubeloop.names.NAME_RULE`;
- a missing or unreadable ``manifest.json``, or an unknown bundle format;
- any pickle-like file: a name ending ``.pkl``, ``.pickle`` or ``.joblib``, or content that
  starts like a binary pickle (byte ``0x80`` then a protocol number 2-5);
- a listed file that is missing or whose sha256 differs, and any file the manifest does not list
  (nothing unlisted may ride along, not even a subdirectory).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from kubeloop.bundle import PLOT_TYPES
from kubeloop.bundle.preprocessor import PreprocessorSpec
from kubeloop.bundle.schema import Schema
from kubeloop.errors import BundleError, KubeloopError
from kubeloop.names import check_name

if TYPE_CHECKING:  # loaded by load_bundle: verifying and registering need no XGBoost
    from kubeloop.bundle.models import TabularModel

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "Bundle",
    "load_bundle",
    "verify_bundle",
    "write_bundle",
]

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
_DATA_FILES = ("schema.json", "preprocessor.json", "reference_profile.json", "metrics.json")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_LIBRARIES = ("numpy", "pandas", "scikit-learn", "xgboost", "kubeloop")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle."""

    path: Path
    manifest: dict[str, Any]
    schema: Schema
    preprocessor: PreprocessorSpec
    model: TabularModel
    reference_profile: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def name(self) -> str:
        """The model name recorded in the manifest."""
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        """The version id, ``v<UTC YYYYMMDDHHMMSS>-<6 hex of the model file's sha256>``."""
        return str(self.manifest["version"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """``json.dumps`` hook: numpy scalars and arrays become plain Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _write_json(path: Path, content: Any) -> None:
    try:
        text = json.dumps(content, indent=2, allow_nan=False, default=_plain)
    except (TypeError, ValueError) as exc:
        raise BundleError(
            f"cannot write {path.name}: {exc}; pass plain JSON values (use None, not NaN/inf)."
        ) from exc
    path.write_text(text + "\n", encoding="utf-8")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libraries() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _LIBRARIES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def _fill(
    directory: Path,
    *,
    documents: Mapping[str, Any],
    model: TabularModel,
    plots: Sequence[Path],
    header: Mapping[str, Any],
) -> None:
    """Write every bundle file into the (empty) temp ``directory``, manifest last."""
    for filename, content in documents.items():
        _write_json(directory / filename, content)
    model_path = Path(model.save(directory))
    if model_path.parent.resolve() != directory.resolve() or model_path.name != model.filename:
        raise BundleError(
            f"model.save wrote {model_path}, expected {model.filename} inside the bundle directory."
        )
    for plot in plots:
        target = directory / Path(plot).name
        if target.suffix.lower() not in PLOT_TYPES or target.exists():
            raise BundleError(
                f"plot {plot} must be a {' or '.join(PLOT_TYPES)} file whose name differs from "
                "every other bundle file."
            )
        shutil.copyfile(plot, target)
    files = {p.name: _sha256(p) for p in sorted(directory.iterdir())}
    _refuse_pickles(directory, list(files))
    created = datetime.now(UTC).replace(microsecond=0)
    manifest = {
        "format": BUNDLE_FORMAT,
        "name": header["name"],
        "version": f"v{created:%Y%m%d%H%M%S}-{files[model.filename][:6]}",
        "created": created.isoformat().replace("+00:00", "Z"),
        "task": header["task"],
        "model": {"kind": model.kind, "file": model.filename, "n_classes": model.n_classes},
        "data_hash": header["data_hash"],
        "params": dict(header["params"]),
        "libraries": _libraries(),
        "files": files,
    }
    _write_json(directory / MANIFEST, manifest)
    for path in directory.iterdir():
        _fsync(path)
    _fsync(directory)


def write_bundle(
    destination: Path,
    *,
    name: str,
    schema: Schema,
    preprocessor: PreprocessorSpec,
    model: TabularModel,
    reference_profile: Mapping[str, Any],
    metrics: Mapping[str, Any],
    plots: Sequence[Path] = (),
    params: Mapping[str, Any] = _EMPTY,
    data_hash: str,
) -> Path:
    """Write a bundle atomically at ``destination`` (which must not exist yet).

    Args:
        destination: The bundle directory to create; its parent is created when missing.
        name: The model name (:data:`kubeloop.names.NAME_RULE`; it becomes a path segment
            and a metric label).
        schema, preprocessor, model: The fitted pieces; ``model.save`` writes the model file.
        reference_profile: From :func:`kubeloop.bundle.profile.build_reference_profile`.
        metrics: Held-out metrics (plain JSON values; ``None`` for undefined ones).
        plots: PNG files to copy in under their own names.
        params: Training parameters recorded in the manifest.
        data_hash: sha256 of the training data.

    Returns:
        ``destination``.

    Raises:
        BundleError: ``destination`` exists, an argument is invalid, or writing failed; no
            directory is left behind.
    """
    destination = Path(destination)
    check_name(name, error=BundleError)
    if not data_hash:
        raise BundleError("data_hash is empty; pass the sha256 of the training data.")
    if destination.exists():
        raise BundleError(
            f"bundle destination {destination} already exists; bundles are immutable, "
            "write to a new directory."
        )
    made = [p for p in reversed(destination.parents) if not p.exists()]  # removed on failure
    destination.parent.mkdir(parents=True, exist_ok=True)
    temp = destination.parent / f".{destination.name}.tmp-{secrets.token_hex(4)}"
    temp.mkdir()
    try:
        contents = (schema.to_dict(), preprocessor.to_dict(), reference_profile, metrics)
        header = {"name": name, "task": schema.task, "data_hash": data_hash, "params": params}
        _fill(
            temp,
            documents=dict(zip(_DATA_FILES, contents, strict=True)),
            model=model,
            plots=plots,
            header=header,
        )
        if destination.exists():  # appeared while writing; rename would replace an empty dir
            raise BundleError(f"bundle destination {destination} appeared while writing.")
        os.rename(temp, destination)
    except BaseException as exc:
        shutil.rmtree(temp, ignore_errors=True)
        for parent in reversed(made):
            with contextlib.suppress(OSError):
                parent.rmdir()
        if isinstance(exc, (KubeloopError, KeyboardInterrupt, SystemExit)):
            raise
        raise BundleError(f"writing bundle {destination} failed: {exc}") from exc
    _fsync(destination.parent)
    return destination


_PICKLE_ADVICE = (
    "pickles can run code when loaded, so bundles must not hold them. Rebuild the bundle with "
    "`kubeloop train`."
)


def _refuse_pickle_names(directory: Path, names: Sequence[str]) -> None:
    for name in names:
        if name.lower().endswith(_PICKLE_SUFFIXES):
            raise BundleError(f"bundle file {directory / name} is a pickle; {_PICKLE_ADVICE}")


def _refuse_pickle_content(path: Path, head: bytes) -> None:
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise BundleError(f"bundle file {path} is a pickle; {_PICKLE_ADVICE}")


def _refuse_pickles(directory: Path, names: Sequence[str]) -> None:
    _refuse_pickle_names(directory, names)
    for name in names:
        with (directory / name).open("rb") as handle:
            _refuse_pickle_content(directory / name, handle.read(2))


def _open_directory(path: Path) -> int:
    """A descriptor of the bundle directory itself (refused when it is a link or no directory)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise BundleError(
            f"{path / MANIFEST} not found; {path} is not a complete model bundle."
        ) from None
    except OSError as exc:
        raise BundleError(f"bundle {path} cannot be read: {exc}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise BundleError(
            f"bundle directory {path} is a symbolic link (to {os.path.realpath(path)}); a bundle "
            "must be the directory itself, so that nothing outside it is loaded. Pass the real "
            "directory."
        )
    if not stat.S_ISDIR(info.st_mode):
        raise BundleError(f"{path} is not a directory; a model bundle is a directory.")
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise BundleError(f"bundle {path} cannot be opened: {exc}") from exc


def _plain_file_problem(info: os.stat_result) -> str | None:
    """Why an ``lstat`` result is not a plain file owned by the bundle alone, or ``None``."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link; a link could point at any file outside the bundle"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory; bundles hold files only"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_nlink > 1:
        return (
            f"has {info.st_nlink} hard links; a hard-linked file can be changed through its "
            "other name outside the bundle"
        )
    return None


def _scan(path: Path, directory: int) -> list[str]:
    """Names in the bundle, after refusing links, subdirectories and special files (``lstat``
    only: nothing is opened or read before every entry passed)."""
    names = []
    with os.scandir(directory) as entries:
        for entry in entries:
            problem = _plain_file_problem(entry.stat(follow_symlinks=False))
            if problem is not None:
                raise BundleError(
                    f"bundle file {path / entry.name} {problem}. Bundles hold only regular files "
                    "inside their own directory; restore the bundle from the registry or retrain."
                )
            names.append(entry.name)
    return sorted(names)


def _read(path: Path, directory: int, name: str) -> bytes:
    """The bytes of one bundle file, opened without following links and checked again."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=directory)
    except OSError as exc:
        raise BundleError(f"bundle file {path / name} cannot be opened: {exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        problem = _plain_file_problem(os.fstat(handle.fileno()))
        if problem is not None:  # replaced after the scan
            raise BundleError(f"bundle file {path / name} {problem}.")
        return handle.read()


def verify_bundle(path: Path) -> dict[str, Any]:
    """Check a bundle's manifest and every file against it; return the manifest.

    Before anything is read, every entry is checked with ``lstat``: a symbolic link (even to a
    valid file), a hard-linked file, a subdirectory or a special file refuses the bundle.

    Raises:
        BundleError: naming the file that is a link, missing, extra, pickle-like or altered, or
            the manifest's model name or version when they break :data:`kubeloop.names.NAME_RULE`.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    directory = _open_directory(path)
    try:
        present = _scan(path, directory)
        if MANIFEST not in present:
            raise BundleError(f"{manifest_path} not found; {path} is not a complete model bundle.")
        present.remove(MANIFEST)
        _refuse_pickle_names(path, present)
        contents = {name: _read(path, directory, name) for name in [MANIFEST, *present]}
    finally:
        os.close(directory)
    try:
        manifest = json.loads(contents[MANIFEST])
        files: dict[str, str] = dict(manifest["files"])
        version = manifest["format"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{manifest_path} is not a valid bundle manifest: {exc}") from exc
    if version != BUNDLE_FORMAT:
        raise BundleError(
            f"{manifest_path} has bundle format {version!r}; this kubeloop reads format "
            f"{BUNDLE_FORMAT}. Upgrade kubeloop or retrain the model."
        )
    check_name(manifest.get("name"), what=f"{manifest_path}: model name", error=BundleError)
    check_name(manifest.get("version"), what=f"{manifest_path}: version", error=BundleError)
    for name in present:
        _refuse_pickle_content(path / name, contents[name][:2])
    for name in sorted(files):
        if name != Path(name).name or name in ("", ".", "..", MANIFEST):
            raise BundleError(f"{manifest_path} lists {name!r}, which is not a bundle file name.")
        if name not in contents:
            raise BundleError(f"bundle file {path / name} listed in the manifest is missing.")
    extra = [name for name in present if name not in files]
    if extra:
        raise BundleError(
            f"bundle {path} holds file(s) the manifest does not list: {extra}; bundles are "
            "immutable, remove them or retrain."
        )
    for name, expected in sorted(files.items()):
        if hashlib.sha256(contents[name]).hexdigest() != expected:
            raise BundleError(
                f"bundle file {path / name} does not match its sha256 in the manifest; the bundle "
                "was altered or corrupted. Restore it from the registry or retrain."
            )
    return dict(manifest)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BundleError(f"bundle file {path} is not valid JSON: {exc}") from exc


def load_bundle(path: Path) -> Bundle:
    """Verify a bundle (:func:`verify_bundle`) and load its pieces.

    Raises:
        BundleError: verification fails, or a file cannot be turned into its object.
    """
    path = Path(path)
    manifest = verify_bundle(path)
    from kubeloop.bundle.models import load_model

    try:
        schema = Schema.from_dict(_read_json(path / "schema.json"))
        preprocessor = PreprocessorSpec.from_dict(_read_json(path / "preprocessor.json"))
        spec = manifest["model"]
        model = load_model(
            path, kind=spec["kind"], task=manifest["task"], n_classes=int(spec["n_classes"])
        )
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"bundle {path} cannot be loaded: {exc}") from exc
    if schema.task != manifest["task"]:
        raise BundleError(
            f"bundle {path}: schema.json says task {schema.task!r} but the manifest says "
            f"{manifest['task']!r}; the bundle is inconsistent, retrain."
        )
    return Bundle(
        path=path,
        manifest=manifest,
        schema=schema,
        preprocessor=preprocessor,
        model=model,
        reference_profile=_read_json(path / "reference_profile.json"),
        metrics=_read_json(path / "metrics.json"),
    )
