"""--backend ray beyond what the both-backend modules cover: a node lost under its envs, the
agents' port against strangers, and the command's refusals."""

import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import COMMAND, ROOT, RayServer, create, faulty, gone, start_ray_server

pytestmark = pytest.mark.timeout(90)


def rows(c: httpx.Client) -> dict[str, dict]:
    return {r["instance_id"]: r for r in c.get("/v1/admin/envs").json()["envs"]}


def agent_of(srv: RayServer, pid: int) -> dict:
    """The node (as /v1/admin/stats lists it) whose agent forked env process `pid`."""
    ancestors = {p.pid for p in psutil.Process(pid).parents()}
    return next(node for node in srv.agents() if node["agent_pid"] in ancestors)


def wait_for(what, timeout: float = 30):  # noqa: ANN001, ANN201
    """`what()` once it is truthy (polled: the server's state, read from outside)."""
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def test_a_lost_node_s_envs_answer_502_then_410_and_the_rest_go_on(tmp_path: Path, ray_cluster: str) -> None:
    srv = start_ray_server(tmp_path, ray_cluster)
    everything: set[int] = set()
    try:
        c = httpx.Client(base_url=srv.url, timeout=30)
        ids = [create(c, faulty("Spins")), create(c, "CartPole-v1"),
               create(c, "CartPole-v1", restart={"max": 1, "within_s": 60}), create(c, "CartPole-v1")]
        for iid in ids:
            assert c.post(f"/v1/envs/{iid}/reset/").status_code == 200
        listed = rows(c)
        where = {iid: agent_of(srv, listed[iid]["pid"])["node_id"] for iid in ids}
        assert len(set(where.values())) == 2  # the least loaded node takes each create
        doomed = where[ids[0]]
        same = [iid for iid in ids[1:] if where[iid] == doomed]
        other = [iid for iid in ids[1:] if where[iid] != doomed]
        agents = srv.agents()
        lost = next(n for n in agents if n["node_id"] == doomed)
        everything = srv.descendants() | {n["agent_pid"] for n in agents}

        answer: dict[str, httpx.Response] = {}
        stepping = threading.Thread(target=lambda: answer.setdefault(
            "r", c.post(f"/v1/envs/{ids[0]}/step/", json={"action": 0}, headers={"X-Request-Timeout": "60"})))
        stepping.start()
        wait_for(lambda: rows(c)[ids[0]]["state"] == "busy")
        os.kill(lost["agent_pid"], signal.SIGKILL)  # as if its node went down
        stepping.join(30)

        r = answer["r"]
        assert r.status_code == 502, r.text
        words = f"node {lost['node']} lost"
        assert words in r.json()["message"] and ids[0] in r.json()["message"]
        again = c.post(f"/v1/envs/{ids[0]}/step/", json={"action": 0})
        assert again.status_code == 410 and words in again.json()["message"]
        assert rows(c)[ids[0]]["death"] == "node_lost"
        for iid in other:
            assert c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 200
        for iid in same:  # the one with a restart policy comes back, on a node that lives
            if iid == ids[2]:
                wait_for(lambda: rows(c)[iid]["state"] == "ready" and rows(c)[iid]["restarts"] == 1)
                assert c.post(f"/v1/envs/{iid}/reset/").status_code == 200
                assert c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 200
            else:
                assert c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 410
        assert all(gone(pid) for pid in everything if pid in {listed[i]["pid"] for i in [ids[0], *same]})

        # The node lives on: a new agent serves it, and new envs may go there again.
        renewed = wait_for(lambda: [n for n in srv.agents() if n["node_id"] == doomed and n["lost"] is None])
        assert renewed[0]["agent_pid"] != lost["agent_pid"]
        fresh = create(c, "CartPole-v1")  # the least loaded node: the renewed one, with no env
        assert agent_of(srv, rows(c)[fresh]["pid"])["agent_pid"] == renewed[0]["agent_pid"]
        everything |= srv.descendants() | {n["agent_pid"] for n in srv.agents()}
    finally:
        srv.stop()
    assert all(gone(pid) for pid in everything)  # agents, forkservers, envs, helpers: nothing is left


def test_env_code_on_every_node_runs_as_the_env_user_without_network(tmp_path: Path, ray_cluster: str) -> None:
    data = Path(tempfile.mkdtemp(prefix="gym-supervisor-ray-"))
    data.chmod(0o755)
    # --env-user, not a uid range: these two nodes share one machine, and a range's uids are per node
    srv = start_ray_server(tmp_path, ray_cluster, "--env-user", "nobody", "--env-no-network", "--data-dir", str(data))
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            seen = {}
            for _ in range(2):  # one on each node
                agent = srv.agents()[0]
                port = int(agent["agent"].rsplit(":", 1)[1])
                iid = create(c, faulty("Probes"), kwargs={"connect_port": port, "setns_pid": agent["agent_pid"],
                                                          "read": "/root/.ray/auth_token"})
                info = c.post(f"/v1/envs/{iid}/reset/").json()["info"]
                seen[agent_of(srv, info["pid"])["node_id"]] = info
        assert len(seen) == 2
        for info in seen.values():
            assert info["uid"] == pwd.getpwnam("nobody").pw_uid and info["groups"] == []
            assert info["interfaces"] == ["lo"]
            assert info["connect"] == "ConnectionRefusedError"  # its node's agent is not on its loopback
            assert info["setns"] in ("PermissionError", "LookupError")  # nor can it step into the agent's network
            assert info["read"] in ("PermissionError", "FileNotFoundError")  # nor read Ray's token
            assert info["caps"] == dict.fromkeys(info["caps"], 0) and info["no_new_privs"] == 1
    finally:
        srv.stop()
        shutil.rmtree(data)


def _frame(payload: bytes, length: int | None = None) -> bytes:
    return struct.pack("!I", len(payload) if length is None else length) + payload


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(15)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    "greeting",
    [
        _frame(b"\x83\xa2op\xa5hello\xa6secret\xa5guess\xa4role\xa7control"),  # a Hello with the wrong secret
        _frame(b"not msgpack at all"),
        _frame(b"", length=0xFFFFFFFF),  # a 4 GB message, announced
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_an_agent_hangs_up_on_whoever_lacks_its_secret(ray_server: RayServer, greeting: bytes) -> None:
    node = ray_server.agents()[0]
    host, port = node["agent"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as stranger:
        stranger.sendall(greeting)
        assert _closed_by_peer(stranger)
    with httpx.Client(base_url=ray_server.url, timeout=30) as c:  # the server's own use goes on
        iid = create(c, "CartPole-v1")
        assert c.post(f"/v1/envs/{iid}/reset/").status_code == 200
        assert c.post(f"/v1/envs/{iid}/close/").status_code == 204


def test_admin_views_name_each_env_s_node(ray_server: RayServer) -> None:
    with httpx.Client(base_url=ray_server.url, timeout=30) as c:
        iid = create(c, "CartPole-v1")
        stats = c.get("/v1/admin/stats").json()
        assert stats["backend"] == "ray" and len(stats["nodes"]) == 2
        row = rows(c)[iid]
        assert row["node"] in {n["node"] for n in stats["nodes"]}
        assert c.get(f"/v1/envs/{iid}/").json()["node"] == row["node"]
        metrics = c.get("/metrics").text
        for node in stats["nodes"]:
            labels = f'node="{node["node"]}",node_id="{node["node_id"]}"'
            assert f"gym_supervisor_node_up{{{labels}}} 1.0" in metrics
            assert f"gym_supervisor_node_envs{{{labels}}} {float(node['envs'])}" in metrics
        c.post(f"/v1/envs/{iid}/close/")


def test_creates_go_where_what_they_ask_is_free_and_hold_it_until_their_end(ray_server: RayServer) -> None:
    with httpx.Client(base_url=ray_server.url, timeout=30) as c:
        gpu_node = next(n for n in ray_server.agents() if n["resources"].get("sim_gpu"))
        first = create(c, "CartPole-v1", limits={"resources": {"sim_gpu": 1}})
        assert agent_of(ray_server, rows(c)[first]["pid"])["node_id"] == gpu_node["node_id"]
        held = {n["node_id"]: n["held"] for n in ray_server.agents()}
        assert held[gpu_node["node_id"]] == {"sim_gpu": 1.0}
        r = c.post("/v1/envs/", json={"env_id": "CartPole-v1", "limits": {"resources": {"sim_gpu": 1}}})
        assert r.status_code == 503, r.text
        assert "sim_gpu 1 free" in r.json()["message"] and "sim_gpu 0 of 1" in r.json()["message"]
        assert c.post(f"/v1/envs/{first}/close/").status_code == 204
        again = create(c, "CartPole-v1", limits={"resources": {"sim_gpu": 1}})  # its end freed it
        cpus = [create(c, "CartPole-v1", limits={"resources": {"CPU": 1}}) for _ in range(2)]  # one CPU per node
        assert len({agent_of(ray_server, rows(c)[iid]["pid"])["node_id"] for iid in cpus}) == 2
        assert c.post("/v1/envs/", json={"env_id": "CartPole-v1", "limits": {"resources": {"CPU": 1}}}).status_code == 503
        for iid in [again, *cpus]:
            c.post(f"/v1/envs/{iid}/close/")


def test_backend_ray_without_ray_exits_2_naming_the_extra(tmp_path: Path) -> None:
    fake = tmp_path / "ray"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")  # as if not installed
    done = subprocess.run([COMMAND, "serve", "--port", "0", "--backend", "ray", "--data-dir", str(tmp_path / "d")],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "pip install 'gym-supervisor[ray]'" in done.stderr


def test_ray_flags_without_backend_ray_exit_2() -> None:
    done = subprocess.run([COMMAND, "serve", "--port", "0", "--ray-address", "10.0.0.1:6379"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--backend ray" in done.stderr
