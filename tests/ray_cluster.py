"""A real multi-node Ray cluster on one machine: a head on 127.0.0.2 run from this checkout's
virtualenv, and worker nodes in containers of the component image (podman or docker,
``--network host``, their own filesystem), all joined with ``ray start`` and token
authentication, as the nodes of a KubeRay cluster are.

Measured with Ray 2.60: Ray advertises the machine's primary address unless told otherwise and
rewrites a literal ``127.0.0.1``/``localhost`` to it, so every node names its own loopback
address (the head 127.0.0.2, container nodes 127.0.0.3, ...). ``ray start`` turns on token
authentication: every node and every driver carries ``RAY_AUTH_MODE=token`` and the token.

Used by the integration tests (``tests/integration/containers``) and ``bench/cluster_train.py``.
Nothing outlives :meth:`RayCluster.stop`: the head's processes carry a marker in their
environment and are killed by it (and by a reaper should this process die first); a container
node is removed with ``rm --force`` (one left behind by a killed test session loses its head
and exits by itself within Ray's reconnect timeout, ~60 s, and ``--rm`` removes it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeloop.demo.harness import free_port
from kubeloop.training._reaper import MARKER_ENV, marked_processes, start_reaper
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
HEAD_IP = "127.0.0.2"
# The component image the worker nodes run; KUBELOOP_IMAGE_TAG as in hack/container-lib.sh.
COMPONENTS_IMAGE = f"kubeloop/kubeloop-components:{os.environ.get('KUBELOOP_IMAGE_TAG', 'dev')}"
_RAY = Path(sys.executable).with_name("ray")


def node_store_stats() -> dict[str, dict[str, int]]:
    """Node IP -> its object store's bytes in use now (``used``) and bytes created in it since
    it started (``created``: every object made or pulled there), from each alive node's raylet
    (call in a driver connected to the cluster)."""
    import ray
    from ray._private.internal_api import node_stats

    stats = {}
    for node in ray.nodes():
        if node["Alive"]:
            store = node_stats(
                node["NodeManagerAddress"], node["NodeManagerPort"], False
            ).store_stats
            stats[node["NodeManagerAddress"]] = {
                "used": int(store.object_store_bytes_used),
                "created": int(store.cumulative_created_bytes),
            }
    return stats


def cpus_freed(timeout: float) -> float:
    """Wait until every CPU of the cluster is free (the actors of a finished driver are
    reaped a moment after it exits); the seconds that took (call in a driver connected to the
    cluster)."""
    import ray

    started = time.monotonic()
    while ray.available_resources().get("CPU", 0.0) < ray.cluster_resources().get("CPU", 0.0):
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"CPUs still taken after {timeout:g} s: {ray.available_resources()}")
        time.sleep(0.2)  # polling Ray's own resource view, the condition itself
    return time.monotonic() - started


@dataclass(frozen=True)
class ContainerEngine:
    """A container engine's CLI and the environment it needs."""

    command: str
    env: dict[str, str]

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.command, *args], env=self.env, capture_output=True, text=True,
            check=check, timeout=timeout,
        )  # fmt: skip


def container_engine() -> ContainerEngine | str:
    """The engine `make images` uses here, or why there is none."""
    import shutil

    if (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "info"], capture_output=True, check=False, timeout=60
        ).returncode
        == 0
    ):
        return ContainerEngine("docker", dict(os.environ))
    if not shutil.which("podman"):
        return "no Docker engine answers and podman is not installed (`make images` installs it)"
    conf = subprocess.run(
        ["bash", "-c", 'source hack/container-lib.sh && podman_config && echo "$CONTAINERS_CONF"'],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return ContainerEngine("podman", {**os.environ, "CONTAINERS_CONF": conf})


@dataclass
class RayCluster:
    """A Ray head on :data:`HEAD_IP` (this machine) plus container nodes (see the module doc).

    Attributes:
        engine: The container engine that runs the worker nodes.
        cpus_per_node: Logical CPUs of every node (the head's too).
        object_store_bytes: Object-store size of every node.
        dashboard: Start the head's dashboard (the Ray Jobs API) on a free port.
    """

    engine: ContainerEngine
    cpus_per_node: int = 1
    object_store_bytes: int = 512 * 1024**2
    dashboard: bool = False
    image: str = COMPONENTS_IMAGE
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    port: int = 0
    dashboard_port: int = 0
    nodes: dict[str, str] = field(default_factory=dict)  # container name -> node IP
    lost: set[str] = field(default_factory=set)  # ids of the nodes killed
    _marker: str = ""
    _head: subprocess.Popen[bytes] | None = None
    _workdir: Path | None = None

    @property
    def address(self) -> str:
        """The GCS address a driver on this machine passes as ``RAY_ADDRESS``."""
        return f"{HEAD_IP}:{self.port}"

    @property
    def jobs_address(self) -> str:
        """The Ray Jobs API of the head (``dashboard=True``)."""
        return f"http://{HEAD_IP}:{self.dashboard_port}"

    def auth_env(self) -> dict[str, str]:
        """What every node and driver of this cluster needs in its environment."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def driver_env(self) -> dict[str, str]:
        """This process's environment plus the cluster's address and token."""
        return {**os.environ, **self.auth_env(), "RAY_ADDRESS": self.address}

    def start(self) -> RayCluster:
        """Start the head and wait until it answers."""
        self._workdir = Path(tempfile.mkdtemp(prefix="kubeloop-ray-cluster-"))
        self._marker = f"cluster-{os.getpid()}-{secrets.token_hex(8)}"
        start_reaper(self._marker)
        self.port = free_port()
        ports = [
            "--port", str(self.port),
            "--ray-client-server-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
        ]  # fmt: skip
        if self.dashboard:
            self.dashboard_port = free_port()
            ports += [
                "--include-dashboard=true", f"--dashboard-host={HEAD_IP}",
                f"--dashboard-port={self.dashboard_port}",
            ]  # fmt: skip
        else:
            ports.append("--include-dashboard=false")
        command = [
            str(_RAY), "start", "--head", "--block", f"--node-ip-address={HEAD_IP}",
            f"--num-cpus={self.cpus_per_node}", f"--object-store-memory={self.object_store_bytes}",
            f"--temp-dir={self._workdir / 'ray'}", "--disable-usage-stats", *ports,
            # Workers at the daemons' priority, as kubeloop's own local Ray: Ray renices them to
            # 15 by default, and on one machine shared by every node's daemons (raylets, GCS,
            # agents) a niced worker loses its core to them at every collective step.
            f"--system-config={json.dumps({'worker_niceness': 0})}",
        ]  # fmt: skip
        env = {**os.environ, **self.auth_env(), MARKER_ENV: self._marker}
        env.pop("RAY_ADDRESS", None)
        # A Ray job's entrypoint (`kubeloop train ...`) runs on the head with its PATH: this
        # project's virtualenv first, as the component image has kubeloop on its PATH.
        env["PATH"] = os.pathsep.join([str(_RAY.parent), env.get("PATH", "")])
        log = (self._workdir / "head.log").open("wb")
        self._head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(
            lambda: self.alive_nodes().get(HEAD_IP),
            what="the Ray head",
            timeout=120,
            every=0.5,
            dead=self._head_problem,
        )
        return self

    def _head_problem(self) -> str:
        code = self._head.poll() if self._head else -1
        if code is None:
            return ""
        assert self._workdir is not None
        return f"exit {code}: {(self._workdir / 'head.log').read_text()[-3000:]}"

    def add_node(self, ip: str = "127.0.0.3", *, timeout: float = 180) -> str:
        """Start a container node that joins the cluster as ``ip``; wait until it is alive.
        Returns its Ray node id."""
        name = f"kubeloop-ray-node-{secrets.token_hex(4)}"
        env_args = [
            arg for key, value in self.auth_env().items() for arg in ("-e", f"{key}={value}")
        ]
        self.engine.run(
            "run", "--detach", "--name", name, "--network", "host", *env_args,
            "--shm-size", str(self.object_store_bytes + 64 * 1024**2),
            self.image, "ray", "start", "--block", f"--address={self.address}",
            f"--node-ip-address={ip}", f"--num-cpus={self.cpus_per_node}",
            f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
        )  # fmt: skip
        self.nodes[name] = ip

        def gone() -> str:
            state = self.engine.run("inspect", "--format", "{{.State.Status}}", name, check=False)
            if state.returncode or state.stdout.strip() not in ("running", "created"):
                logs = self.engine.run("logs", name, check=False)
                return f"container {name} stopped: {(logs.stdout + logs.stderr)[-3000:]}"
            return self._head_problem()

        return str(
            wait_for(
                lambda: self.alive_nodes().get(ip),
                what=f"the Ray node {ip}",
                timeout=timeout,
                every=0.5,
                dead=gone,
            )
        )

    def kill_node(self, ip: str) -> None:
        """Kill the container node of ``ip`` at once (``SIGKILL``), as a lost machine."""
        node = self.alive_nodes().get(ip)
        if node:
            self.lost.add(node)
        for name, node_ip in list(self.nodes.items()):
            if node_ip == ip:
                self.engine.run("rm", "--force", "--time", "0", name, check=False)
                del self.nodes[name]

    def alive_nodes(self) -> dict[str, str]:
        """Node IP -> node id of every alive node, as the GCS says, leaving out the nodes killed
        (the GCS takes a while to see that they are gone); ``{}`` while none answers."""
        try:
            pairs = self.query(
                "[(n['NodeManagerAddress'], n['NodeID']) for n in ray.nodes() if n['Alive']]"
            )
        except RuntimeError:
            return {}
        return {ip: node for ip, node in pairs if node not in self.lost}

    def store_stats(self) -> dict[str, dict[str, int]]:
        """Node IP -> its object store's bytes in use now and bytes created since it started
        (``cumulative_created_bytes``: every object made or pulled into it), read from each
        node's raylet."""
        return dict(self.query("node_store_stats()"))

    def query(self, expression: str, *, timeout: float = 120) -> Any:
        """The value of a Python ``expression`` (JSON-able; ``ray`` imported) evaluated in a
        fresh driver connected to this cluster -- this process never joins it (the other
        tests' local Ray stays theirs)."""
        script = (
            f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); import ray\n"
            "from tests.ray_cluster import cpus_freed, node_store_stats\n"
            "ray.init(log_to_driver=False, logging_level='ERROR')\n"
            f"print('RESULT' + json.dumps({expression}))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], env=self.driver_env(), capture_output=True,
            text=True, check=False, timeout=timeout,
        )  # fmt: skip
        for line in done.stdout.splitlines():
            if line.startswith("RESULT"):
                return json.loads(line[len("RESULT") :])
        raise RuntimeError(f"query failed ({done.returncode}): {done.stderr[-2000:]}")

    def wait_idle(self, timeout: float = 120) -> float:
        """Wait until no CPU of the cluster is taken (by the last test's driver, say)."""
        return float(self.query(f"cpus_freed({timeout})", timeout=timeout + 60))

    def stop(self) -> None:
        """Remove every container node and kill every process of the head."""
        for ip in set(self.nodes.values()):
            self.kill_node(ip)
        if self._head is not None and self._head.poll() is None:
            self._head.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._head.wait(timeout=15)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = list(marked_processes(self._marker))
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        if self._head is not None:
            self._head.wait(timeout=30)
