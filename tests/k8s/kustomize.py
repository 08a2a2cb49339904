"""A small `kubectl kustomize` for the subset of kustomize that manifests/ uses.

No kustomize binary is available from a package registry here, so the tests build the
overlays with this instead. It refuses any kustomization field it does not implement, so a
kustomization that it builds is one whose meaning is unambiguous; the kind scripts build the
same directories with the real `kubectl apply -k`.

Supported: `resources` (files and directories), `labels` (`pairs`, `includeSelectors: false`),
`images` (`name`, `newName`, `newTag`, `digest`), `patches` (JSON 6902 operations `add`,
`replace`, `remove` on a `target` of kind and name).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED = {"apiVersion", "kind", "resources", "labels", "images", "patches"}


class KustomizeError(ValueError):
    """A kustomization this builder cannot build (or kustomize would reject)."""


def build(directory: Path) -> list[Manifest]:
    """Build the kustomization in `directory` into its list of objects."""
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{path}: fields not supported by this builder: {sorted(unknown)}")
    if spec.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{path}: kind must be Kustomization")

    objects: list[Manifest] = []
    for entry in spec.get("resources", []):
        if "://" in entry or entry.startswith("github.com/"):
            raise KustomizeError(f"{path}: remote resource {entry!r} cannot be built offline")
        target = (directory / entry).resolve()
        if target.is_dir():
            objects.extend(build(target))
        elif target.is_file():
            objects.extend(d for d in yaml.safe_load_all(target.read_text()) if d is not None)
        else:
            raise KustomizeError(f"{path}: resource {entry!r} does not exist")
    _check_unique(objects, path)

    for label_set in spec.get("labels", []):
        if label_set.get("includeSelectors") or label_set.get("includeTemplates"):
            raise KustomizeError(f"{path}: only includeSelectors/includeTemplates false")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])
    for image in spec.get("images", []):
        for obj in objects:
            _set_image(obj, image)
    for patch in spec.get("patches", []):
        _apply_patch(objects, patch, path)
    return objects


def _check_unique(objects: list[Manifest], path: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        meta = obj.get("metadata", {})
        key = (str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name")))
        if key in seen:
            raise KustomizeError(f"{path}: duplicate object {key}")
        seen.add(key)


def _set_image(node: Any, image: dict[str, str]) -> None:
    """Rewrite every container image named `image['name']`, at any depth (like kustomize)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"containers", "initContainers"} and isinstance(value, list):
                for container in value:
                    ref = container.get("image", "")
                    name = _image_name(ref)
                    if name != image["name"]:
                        continue
                    new_name = image.get("newName", name)
                    if image.get("digest"):
                        container["image"] = f"{new_name}@{image['digest']}"
                    elif image.get("newTag"):
                        container["image"] = f"{new_name}:{image['newTag']}"
                    else:
                        container["image"] = new_name + ref[len(name) :]
            _set_image(value, image)
    elif isinstance(node, list):
        for value in node:
            _set_image(value, image)


def _image_name(ref: str) -> str:
    """`registry:5000/repo/name:tag@sha256:...` -> `registry:5000/repo/name`."""
    without_digest = ref.split("@", 1)[0]
    head, _, last = without_digest.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def _apply_patch(objects: list[Manifest], patch: dict[str, Any], path: Path) -> None:
    target = patch.get("target") or {}
    if set(target) - {"kind", "name"} or not target:
        raise KustomizeError(f"{path}: a patch target is kind and/or name: {target}")
    operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise KustomizeError(f"{path}: only JSON 6902 patches (a list of operations)")
    matched = [
        obj
        for obj in objects
        if obj.get("kind") == target.get("kind", obj.get("kind"))
        and obj.get("metadata", {}).get("name") == target.get("name", obj["metadata"]["name"])
    ]
    if not matched:
        raise KustomizeError(f"{path}: patch target {target} matches no object")
    for obj in matched:
        for operation in operations:
            _json_patch(obj, operation, path)


def _json_patch(obj: Manifest, operation: dict[str, Any], path: Path) -> None:
    op = operation["op"]
    parts = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
    parent: Any = obj
    for part in parts[:-1]:
        try:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        except (KeyError, IndexError, ValueError) as error:
            raise KustomizeError(f"{path}: {operation['path']} does not exist") from error
    last = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace" and index < len(parent):
            parent[index] = copy.deepcopy(operation["value"])
        elif op == "remove" and index < len(parent):
            del parent[index]
        else:
            raise KustomizeError(f"{path}: cannot {op} {operation['path']}")
        return
    if op == "add":
        parent[last] = copy.deepcopy(operation["value"])
    elif op in {"replace", "remove"}:
        if last not in parent:
            raise KustomizeError(f"{path}: cannot {op} missing {operation['path']}")
        if op == "replace":
            parent[last] = copy.deepcopy(operation["value"])
        else:
            del parent[last]
    else:
        raise KustomizeError(f"{path}: unsupported operation {op!r}")
