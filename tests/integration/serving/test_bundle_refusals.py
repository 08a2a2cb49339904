"""What the real server refuses to load: linked bundle files, bad names, bad champion pointers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from kubeloop.registry import Registry
from tests.waiting import wait_for

from .conftest import KUBELOOP, Server, build_bundle, start_server
from .test_protocols import ROWS

pytestmark = pytest.mark.integration


def _rehash(bundle: Path, name: str = "model.ubj") -> None:
    """Make the manifest agree with what ``name`` holds now (an attacker can edit it too)."""
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def _link(bundle: Path, target: Path, *, hard: bool = False) -> None:
    (bundle / "model.ubj").unlink()
    if hard:
        os.link(target, bundle / "model.ubj")
    else:
        (bundle / "model.ubj").symlink_to(target)


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBELOOP), "serve", *args, "--http-port", "0", "--grpc-port", "0"],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("target", ["other-model", "/etc/passwd"])
def test_bundle_with_a_linked_model_is_refused_at_start(
    small_bundle: Path, tmp_path: Path, target: str
) -> None:
    bundle = tmp_path / "linked"
    shutil.copytree(small_bundle, bundle)
    if target == "other-model":  # a valid model outside the bundle, manifest re-hashed
        other = build_bundle(tmp_path / "other", seed=5, trees=7)
        _link(bundle, other / "model.ubj")
        _rehash(bundle)
    else:
        _link(bundle, Path(target))
    completed = _serve("--model-dir", str(bundle))
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert f"bundle file {bundle / 'model.ubj'} is a symbolic link" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("model_name flag", "--model_name '../../tmp/x' is not allowed"),
        ("manifest name", "manifest.json: model name '../../tmp/x' is not allowed"),
        ("registry model flag", "argument --model: model name '../../tmp/x' is not allowed"),
    ],
)
def test_bad_model_names_are_refused_on_every_path(
    small_bundle: Path, tmp_path: Path, how: str, message: str
) -> None:
    if how == "model_name flag":
        args = ["--model-dir", str(small_bundle), "--model_name", "../../tmp/x"]
    elif how == "manifest name":
        bundle = tmp_path / "named"
        shutil.copytree(small_bundle, bundle)
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["name"] = "../../tmp/x"
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        args = ["--model-dir", str(bundle)]
    else:
        args = ["--registry", str(tmp_path / "registry"), "--model", "../../tmp/x"]
    completed = _serve(*args)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr


def _point(root: Path, model: str, content: object) -> None:
    """Write the champion pointer directly (Registry.promote refuses what these tests need)."""
    pointer = root / model / "champion"
    temp = pointer.with_name("champion.tmp-test")
    temp.write_text(json.dumps(content))
    os.replace(temp, pointer)


def _served_version(server: Server) -> str:
    found = re.search(
        r'kubeloop_model_info{model="churn",version="([^"]+)"} 1\.0', server.metrics()
    )
    assert found, "no kubeloop_model_info series"
    return found.group(1)


def _load_failures(server: Server) -> float:
    found = re.search(r'kubeloop_model_load_failures_total{model="churn"} (\S+)', server.metrics())
    return float(found.group(1)) if found else 0.0


def _champion_polls(server: Server) -> float:
    found = re.search(r'kubeloop_champion_polls_total{model="churn"} (\S+)', server.metrics())
    return float(found.group(1)) if found else 0.0


def _predicts(server: Server) -> str:
    """The version that answers a real prediction."""
    response = httpx.post(
        f"{server.url}/v1/models/churn:predict", json={"instances": ROWS}, timeout=30
    )
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def test_registry_server_never_swaps_to_a_linked_bundle_and_reports_a_bad_pointer_once(
    tmp_path: Path,
) -> None:
    root = tmp_path / "registry"
    registry = Registry(root)
    versions = [
        registry.register(build_bundle(tmp_path / f"b{i}", seed=i, trees=4 + i)) for i in range(4)
    ]
    good, symlinked, hardlinked, later = versions
    stored = {v: root / "churn" / "versions" / v for v in versions}
    outside = build_bundle(tmp_path / "outside", seed=9, trees=9) / "model.ubj"
    _link(stored[symlinked], outside)
    _rehash(stored[symlinked])
    _link(stored[hardlinked], outside, hard=True)
    _rehash(stored[hardlinked])
    registry.promote("churn", good)
    log = tmp_path / "server.log"
    server = start_server(
        ["--registry", str(root), "--model", "churn", "--poll-interval", "0.1"],
        name="churn",
        log=log,
        timeout=300,  # a loaded shared machine can take minutes to import KServe
    )
    try:
        assert _served_version(server) == good
        for failures, version in enumerate((symlinked, hardlinked), start=1):
            _point(root, "churn", {"version": version, "updated": "now"})
            wait_for(
                lambda n=failures: _load_failures(server) >= n,
                what=f"refusal of {version}",
                timeout=60,
            )
            assert _load_failures(server) == failures
            assert _predicts(server) == good  # still serving the verified bundle
        text = log.read_text()
        assert f"{stored[symlinked] / 'model.ubj'} is a symbolic link" in text
        assert f"{stored[hardlinked] / 'model.ubj'} has 2 hard links" in text

        _point(root, "churn", {"version": None})
        bad = "names version None, which is not a version id"
        wait_for(lambda: bad in log.read_text(), what="the bad pointer to be reported", timeout=60)
        polls = _champion_polls(server)  # 10 more polls of the same bad pointer: none may log again
        wait_for(lambda: _champion_polls(server) >= polls + 10, what="10 more polls", timeout=60)
        _point(root, "churn", {"version": later, "updated": "now"})  # proves polling went on
        wait_for(lambda: _served_version(server) == later, what=f"the swap to {later}", timeout=60)
        text = log.read_text()
        assert text.count(bad) == 1, text[-3000:]
        assert "the champion pointer of churn is readable again" in text
        assert _load_failures(server) == 2
    finally:
        assert server.stop() == 0
