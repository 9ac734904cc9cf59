"""A real server on a free loopback port, started as a user would start it."""

import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
FAULTY = "tests.faulty_envs"
# The installed command, as `scripts/serve` runs it: the path users take, not `python -m api`.
COMMAND = str(Path(sys.executable).with_name("gym-supervisor"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    data_dir: Path
    log: Path
    extra: list[str] = field(default_factory=list)

    def descendants(self) -> set[int]:
        return {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}

    def back_to(self, before: set[int], timeout: float = 10) -> bool:
        """True once the server's process tree holds nothing beyond `before` (killed helpers
        are reaped by the forkserver a moment after their env's close answers)."""
        deadline = time.monotonic() + timeout
        while not self.descendants() <= before:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(15)


def start_server(tmp: Path, *extra: str, seed_flags: bool = False, cwd: Path = ROOT,
                 allow_faulty: bool = True, nofile: int | None = None) -> Server:
    """Start the installed `gym-supervisor serve` on a free loopback port, from `cwd` (where the
    test envs' module is found); `seed_flags` uses -l/-p for the address; `nofile` caps its
    descriptors, as `ulimit -n` would."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = tmp / "data"
    log = tmp / f"server-{port}.log"
    where = ["-l", "127.0.0.1", "-p", str(port)] if seed_flags else ["--host", "127.0.0.1", "--port", str(port)]
    allow = ["--allow-module", FAULTY] if allow_faulty else []
    cmd = [COMMAND, "serve", *where, "--data-dir", str(data_dir), *allow, *extra]
    with open(log, "wb") as out:
        cap = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=cap)
    url = f"http://127.0.0.1:{port}"
    wait_answering(proc, url, log)
    return Server(proc, url, data_dir, log, list(extra))


def wait_answering(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    """Until the server answers, or fail if it died or took longer than `timeout` (a loaded
    machine may take tens of seconds to import everything)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/v1/envs/", timeout=1).status_code in (200, 401):  # 401: a server with users
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not answer in {timeout:g} s: {log.read_text()}")
        time.sleep(0.05)


@dataclass
class RayServer(Server):
    """A server with --backend ray: its envs are the children of its agents, not its own."""

    def agents(self) -> list[dict]:
        return httpx.get(f"{self.url}/v1/admin/stats", timeout=10).json()["nodes"]

    def descendants(self) -> set[int]:
        kids = super().descendants()
        for node in self.agents():
            try:
                kids |= {p.pid for p in psutil.Process(node["agent_pid"]).children(recursive=True)}
            except psutil.NoSuchProcess:
                pass
        return kids


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A Ray cluster of two simulated nodes of one CPU each (the second with a `sim_gpu`), started
    once for the session: its address."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={"sim_gpu": 1})  # a custom resource only this node has
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


def start_ray_server(tmp: Path, address: str, *extra: str) -> RayServer:
    """The installed server with --backend ray on the cluster at `address`, its agents on loopback."""
    srv = start_server(tmp, "--backend", "ray", "--ray-address", address, "--ray-agent-host", "127.0.0.1", *extra)
    return RayServer(srv.proc, srv.url, srv.data_dir, srv.log, srv.extra)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module with BOTH_BACKENDS = True runs its `server` tests on the local backend and on Ray."""
    if getattr(metafunc.module, "BOTH_BACKENDS", False) and "server" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["local", "ray"], scope="session")


@pytest.fixture(scope="session")
def backend() -> str:
    return "local"


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def ray_server(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> Iterator[RayServer]:
    srv = start_ray_server(tmp_path_factory.mktemp("ray-server"), ray_cluster)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def server(backend: str, request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue("ray_server" if backend == "ray" else "local_server")


@pytest.fixture()
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def create(client: httpx.Client, env_id: str, **body: object) -> str:
    r = client.post("/v1/envs/", json={"env_id": env_id, **body})
    assert r.status_code == 200, r.text
    return r.json()["instance_id"]


def faulty(name: str) -> str:
    return f"{FAULTY}:{name}-v0"


def gone(pid: int, timeout: float = 5.0) -> bool:
    """True once no process (not even a zombie) has this pid."""
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return not psutil.pid_exists(pid)
