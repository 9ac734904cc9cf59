"""The warm pool (--prespawn ENV_ID=N): creates of a pooled id are handovers of envs made ahead,
indistinguishable from cold ones, and the pool refills behind them."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import COMMAND, Server, create, start_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("pool"), "--prespawn", "CartPole-v1=2")
    try:
        yield srv
    finally:
        srv.stop()


def ready(c: httpx.Client, env_id: str = "CartPole-v1", want: int = 2, timeout: float = 20) -> int:
    """The pool's ready count once it reaches `want` (or whatever it is at the deadline)."""
    deadline = time.monotonic() + timeout
    while (n := c.get("/v1/admin/stats").json()["pool"][env_id]) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def from_pool(srv: Server, iid: str) -> bool:
    return any(f"instance={iid} " in line and "from=pool" in line for line in srv.log.read_text().splitlines())


def test_a_create_of_a_pooled_id_takes_a_ready_env_and_the_pool_refills(pooled: Server) -> None:
    with httpx.Client(base_url=pooled.url, timeout=30) as c:
        assert ready(c) == 2
        assert c.get("/v1/envs/").json()["all_envs"] == {}  # the pool's envs are listed nowhere
        iid = create(c, "CartPole-v1")
        assert from_pool(pooled, iid)
        assert c.post(f"/v1/envs/{iid}/reset/").status_code == 200
        assert c.post(f"/v1/envs/{iid}/step/", json={"action": 1}).status_code == 200
        info = c.get(f"/v1/envs/{iid}/").json()
        assert info["state"] == "ready" and info["owner"] == "" and info["steps"] == 1
        assert ready(c) == 2  # refilled behind it
        assert c.post(f"/v1/envs/{iid}/close/").status_code == 204


def test_a_pooled_env_with_a_seed_is_the_same_as_a_cold_one(pooled: Server) -> None:
    with httpx.Client(base_url=pooled.url, timeout=30) as c:
        ready(c)
        warm = create(c, "CartPole-v1", seed=5)
        cold = create(c, "CartPole-v1", seed=5, kwargs={"max_episode_steps": 500})  # kwargs: made cold
        assert from_pool(pooled, warm) and not from_pool(pooled, cold)
        for path in ("reset/", "action_space/sample", "action_space/sample"):
            method = c.post if path == "reset/" else c.get
            assert method(f"/v1/envs/{warm}/{path}").json() == method(f"/v1/envs/{cold}/{path}").json(), path
        for iid in (warm, cold):
            c.post(f"/v1/envs/{iid}/close/")


def test_a_pooled_env_counts_against_the_quota_only_once_taken(tmp_path: Path) -> None:
    from tests.lab import start_lab

    lab = start_lab(tmp_path, "--prespawn", "CartPole-v1=1",
                    people={"quinn": ("", "max_envs = 1\n"), "root": ("--admin", "")})
    try:
        with lab.client("quinn") as quinn, lab.client("root") as root:
            ready(root, want=1)
            first = create(quinn, "CartPole-v1")
            assert quinn.get(f"/v1/envs/{first}/").json()["owner"] == "quinn"
            assert ready(root, want=1) == 1
            r = quinn.post("/v1/envs/", json={"env_id": "CartPole-v1"})
            assert r.status_code == 429, r.text
            assert root.get("/v1/admin/stats").json()["pool"]["CartPole-v1"] == 1  # not taken by the refusal
            assert root.get("/v1/admin/stats").json()["live_envs"] == 1  # the pool's env counts in no limit
    finally:
        lab.server.stop()


@pytest.mark.parametrize(("spec", "reason"), [
    ("CartPole-v1", "ENV_ID=N"),
    ("CartPole-v1=0", "N from 1 to 64"),
    ("CartPole-v1=x", "ENV_ID=N"),
    ("secret.module:Env-v0=1", "module 'secret.module'"),
])
def test_a_bad_prespawn_stops_the_start_saying_why(tmp_path: Path, spec: str, reason: str) -> None:
    r = subprocess.run([COMMAND, "serve", "--port", "0", "--data-dir", str(tmp_path), "--prespawn", spec],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and reason in r.stderr, r.stderr


def test_the_pools_envs_go_with_the_server(tmp_path: Path) -> None:
    import psutil

    srv = start_server(tmp_path, "--prespawn", "CartPole-v1=3")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert ready(c, want=3) == 3
        tree = [psutil.Process(srv.proc.pid), *psutil.Process(srv.proc.pid).children(recursive=True)]
        assert len(tree) >= 1 + 1 + 3  # the server, its forkserver, three envs (and their guardians)
    finally:
        srv.stop()
    assert srv.proc.returncode == 0
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, alive
