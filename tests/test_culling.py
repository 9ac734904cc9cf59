"""Idle and old envs are closed; dead ones are kept for a while with their cause, then forgotten."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, create, faulty, gone, start_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def srv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A server with only the flag under test, so that no other cull races it on a slow machine."""
    s = start_server(tmp_path, *request.param)
    try:
        yield s
    finally:
        s.stop()


def wait_for_state(c: httpx.Client, iid: str, want: str, within: float = 10) -> dict:
    """Ask the server until the env is in state `want` (the watch runs every 0.5 s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        info = c.get(f"/v1/envs/{iid}/").json()
        if info.get("state") == want:
            return info
        time.sleep(0.1)
    raise AssertionError(f"env {iid} not {want} within {within} s: {info}")


@pytest.mark.parametrize("srv", [("--idle-timeout", "1")], indirect=True)
def test_idle_env_is_closed_and_says_so(srv: Server) -> None:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        iid = create(c, "CartPole-v1")
        pid = c.get(f"/v1/envs/{iid}/").json()["pid"]
        info = wait_for_state(c, iid, "dead")
        assert info["cause"] == "was closed as idle after 1 s"
        assert gone(pid)
        r = c.post(f"/v1/envs/{iid}/reset/")
        assert r.status_code == 410 and "was closed as idle after 1 s" in r.json()["message"]
        assert f"env_dead instance={iid}" in srv.log.read_text()


@pytest.mark.parametrize("srv", [("--max-lifetime", "4")], indirect=True)
def test_env_past_its_lifetime_ends_after_its_current_request(srv: Server) -> None:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        iid = create(c, faulty("Slow"))
        c.post(f"/v1/envs/{iid}/reset/")
        statuses = []
        while not statuses or statuses[-1] == 200:
            statuses.append(c.post(f"/v1/envs/{iid}/step/", json={"action": 3}).status_code)  # 0.3 s each
            assert len(statuses) < 100
        assert statuses[-1] == 410 and set(statuses[:-1]) == {200}  # no request was cut short
        r = c.post(f"/v1/envs/{iid}/reset/")
        assert "end of its lifetime of 4 s" in r.json()["message"]


@pytest.mark.parametrize("srv", [("--dead-retention", "3")], indirect=True)
def test_dead_env_is_forgotten_after_the_retention(srv: Server) -> None:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        iid = create(c, faulty("Segfaults"))
        c.post(f"/v1/envs/{iid}/reset/")
        assert c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 502
        assert iid in c.get("/v1/envs/").json()["all_envs"]
        deadline = time.monotonic() + 10
        while iid in c.get("/v1/envs/").json()["all_envs"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = c.post(f"/v1/envs/{iid}/reset/")
        message = r.json()["message"]  # the seed's words first, then what became of it
        assert r.status_code == 400 and message.startswith(f"Instance_id {iid} unknown: it was killed by SIGSEGV")
        assert "forgotten 3 s later" in message
