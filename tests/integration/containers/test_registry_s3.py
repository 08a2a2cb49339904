"""The registry on a real S3 server (SeaweedFS on loopback), not an in-memory filesystem.

Endpoint and credentials come from the standard AWS variables, as on a cluster.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import pytest

from kubeloop.bundle import MANIFEST
from kubeloop.errors import RegistryError
from kubeloop.registry import Registry
from tests.unit.test_registry import _bundle

from .conftest import S3Server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROUNDS = 25


def _objects(server: S3Server, bucket: str) -> dict[str, str]:
    """Every object under the bucket with its ETag (what changed, if anything)."""
    fs = server.fs()
    return {path: str(info.get("ETag")) for path, info in fs.find(bucket, detail=True).items()}


@pytest.fixture
def registry(s3_env: S3Server) -> Registry:
    return Registry(f"s3://{s3_env.new_bucket()}/registry")


def test_versions_are_immutable_and_reregistering_is_idempotent(
    registry: Registry, s3_env: S3Server, tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path)
    version = registry.register(bundle)
    bucket = registry.root.removeprefix("s3://").split("/")[0]
    stored = _objects(s3_env, bucket)
    assert len(stored) == len(list(bundle.iterdir()))

    assert registry.register(bundle) == version  # same content: nothing written
    assert Registry(registry.root).register(bundle) == version  # another client, same answer
    assert _objects(s3_env, bucket) == stored

    # Different content under a version id that is taken: refused, the stored version intact.
    forged = shutil.copytree(bundle, tmp_path / "forged")
    (forged / "metrics.json").write_text('{"roc_auc": 0.99}', encoding="utf-8")
    manifest = json.loads((forged / MANIFEST).read_text(encoding="utf-8"))
    digest = hashlib.sha256((forged / "metrics.json").read_bytes()).hexdigest()
    manifest["files"]["metrics.json"] = digest
    (forged / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(RegistryError, match=r"already exists .* with different content"):
        registry.register(forged)
    assert _objects(s3_env, bucket) == stored
    assert registry.fetch("churn", version, dest=tmp_path / "back").is_dir()


def _promote_many(root: str, version: str, barrier: Any, queue: Any) -> None:
    """One writer process: wait for the others, then promote ``version`` ROUNDS times."""
    registry = Registry(root)
    barrier.wait(timeout=120)
    records = [registry.promote("churn", version) for _ in range(ROUNDS)]
    queue.put(records)


def test_racing_promotions_end_with_one_and_readers_see_whole_pointers(
    registry: Registry, tmp_path: Path
) -> None:
    """Two processes promote different versions at the same time while this one reads: every
    read is one whole record some writer wrote (never a mix, never missing) and the race ends
    with one of the two versions."""
    first = registry.register(_bundle(tmp_path, weight=0.1))
    second = registry.register(_bundle(tmp_path, weight=0.9))
    assert first != second
    start = registry.promote("churn", first)

    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(3), context.Queue()
    writers = [
        context.Process(target=_promote_many, args=(registry.root, v, barrier, queue))
        for v in (first, second)
    ]
    for writer in writers:
        writer.start()
    reader = Registry(registry.root)
    seen: list[dict[str, Any]] = []
    try:
        barrier.wait(timeout=120)
        while any(w.is_alive() for w in writers) and queue.qsize() < 2:
            record = reader.champion_record("churn")
            assert record is not None, "the champion pointer went missing during the race"
            seen.append(record)
        written = [queue.get(timeout=120) for _ in writers]
    finally:
        for writer in writers:
            writer.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]

    every = [start, *written[0], *written[1]]
    assert seen, "the reader never read during the race"
    assert all(record in every for record in seen), "a read returned a record nobody wrote"
    final = reader.champion_record("churn")
    assert final is not None and final["version"] in (first, second)
    assert final in (written[0][-1], written[1][-1])  # the last PUT of one of the writers wins
    assert reader.fetch("churn").is_dir()  # and it names a complete, verified version


def test_missing_bucket_is_one_clear_error_and_nothing_is_written(
    s3_env: S3Server, tmp_path: Path
) -> None:
    registry = Registry("s3://kubeloop-no-such-bucket/registry")
    with pytest.raises(RegistryError, match="bucket 'kubeloop-no-such-bucket' does not exist"):
        registry.register(_bundle(tmp_path))
    with pytest.raises(RegistryError, match="does not exist"):
        registry.champion("churn")
    assert not s3_env.fs().exists("kubeloop-no-such-bucket")


def test_wrong_credentials_are_one_clear_error_and_nothing_is_written(
    s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_env.new_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    registry = Registry(f"s3://{bucket}/registry", skip_instance_cache=True)
    with pytest.raises(RegistryError, match=r"was refused .* AWS_SECRET_ACCESS_KEY"):
        registry.register(_bundle(tmp_path))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    assert _objects(s3_env, bucket) == {}
