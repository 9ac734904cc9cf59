"""Each fault env ends in its documented status; the server and other envs keep going."""

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, create, faulty, gone

pytestmark = pytest.mark.timeout(60)
BOTH_BACKENDS = True  # every fault on this machine and on a Ray cluster's node

SHORT = {"X-Request-Timeout": "1"}  # only where running out of time is the outcome under test
LONG = {"X-Request-Timeout": "30"}


def started(client: httpx.Client, name: str, **kwargs: object) -> tuple[str, int]:
    iid = create(client, faulty(name), kwargs=kwargs)
    pid = client.post(f"/v1/envs/{iid}/reset/").json()["info"]["pid"]
    return iid, pid


def assert_healthy(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 1}).status_code == 200
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 204


def test_env_that_raises_is_500_and_stays_usable(client: httpx.Client) -> None:
    iid, pid = started(client, "Raises")
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 3})
    assert r.status_code == 500
    assert r.json()["message"] == f"env {iid} ({faulty('Raises')}) raised ValueError: bad luck with action 3"
    assert client.post(f"/v1/envs/{iid}/reset/").json()["info"]["pid"] == pid
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 204
    assert gone(pid)


@pytest.mark.parametrize(
    ("name", "status", "cause"),
    [
        ("Segfaults", 502, "was killed by SIGSEGV"),
        ("Exits", 502, "exited with code 3"),
        ("Spins", 504, "was killed after 1 s without a reply"),
        ("IgnoresTerm", 504, "was killed after 1 s without a reply"),
    ],
)
def test_fault_is_reported_then_410_until_closed(
    client: httpx.Client, server: Server, name: str, status: int, cause: str
) -> None:
    before = server.descendants()
    iid, pid = started(client, name)
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers=SHORT if status == 504 else LONG)
    assert r.status_code == status, r.text
    assert iid in r.json()["message"] and cause in r.json()["message"]
    assert gone(pid)
    logged = [line for line in server.log.read_text().splitlines() if f"env_dead instance={iid}" in line]
    assert len(logged) == 1 and f"pid={pid}" in logged[0] and cause in logged[0]
    later = client.get(f"/v1/envs/{iid}/action_space/")
    assert later.status_code == 410 and cause in later.json()["message"]
    assert iid in client.get("/v1/envs/").json()["all_envs"]  # still listed, so it can be found and closed
    info = client.get(f"/v1/envs/{iid}/").json()
    assert info["state"] == "dead" and cause in info["cause"] and info["pid"] == pid
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 204
    assert iid not in client.get("/v1/envs/").json()["all_envs"]
    assert server.back_to(before)  # nothing of it is left
    assert_healthy(client)


def test_idle_env_killed_by_hand_is_noticed(client: httpx.Client) -> None:
    iid, pid = started(client, "Raises")
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)
    first = client.post(f"/v1/envs/{iid}/reset/")
    assert first.status_code in (410, 502)  # 502 only if the request races the death
    r = client.post(f"/v1/envs/{iid}/reset/")
    assert r.status_code == 410 and "was killed by SIGKILL" in r.json()["message"]
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 204


def test_constructor_that_raises_is_500_and_creates_nothing(client: httpx.Client, server: Server) -> None:
    before = client.get("/v1/envs/").json()["all_envs"]
    kids = server.descendants()
    r = client.post("/v1/envs/", json={"env_id": faulty("RaisesInInit")})
    assert r.status_code == 500
    assert r.json()["message"] == (  # it names the env id, not an instance that never was
        f"env '{faulty('RaisesInInit')}' could not be made: gymnasium.make raised RuntimeError: "
        "this env cannot be built; no env was created"
    )
    assert client.get("/v1/envs/").json()["all_envs"] == before
    assert server.back_to(kids)


def test_constructor_that_hangs_is_504_and_creates_nothing(client: httpx.Client, server: Server) -> None:
    before = client.get("/v1/envs/").json()["all_envs"]
    kids = server.descendants()
    r = client.post("/v1/envs/", json={"env_id": faulty("HangsInInit")}, headers=SHORT)
    assert r.status_code == 504 and r.json()["message"] == (
        f"env '{faulty('HangsInInit')}' was killed after 1 s without a reply while it was being made; "
        "no env was created"
    )
    assert client.get("/v1/envs/").json()["all_envs"] == before
    assert server.back_to(kids)


def test_module_not_allowed_is_400_and_not_imported(client: httpx.Client, server: Server) -> None:
    kids = server.descendants()
    r = client.post("/v1/envs/", json={"env_id": "mylab.private:Anything-v0"})
    assert r.status_code == 400 and "--allow-module mylab.private" in r.json()["message"]
    # refused in the server, before any env process (the only place env modules are imported) began
    assert server.back_to(kids)


def test_hung_env_blocks_no_other_env(client: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "spinning"
    os.mkfifo(fifo)
    iid, _ = started(client, "Spins", signal_path=str(fifo))
    result: dict[str, httpx.Response] = {}

    def spin() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as other:
            result["step"] = other.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "60"})

    t = threading.Thread(target=spin)
    t.start()
    fifo.read_text()  # returns once the env is spinning
    healthy = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{healthy}/reset/")
    for _ in range(50):
        assert client.post(f"/v1/envs/{healthy}/step/", json={"action": 0}).status_code == 200
        client.post(f"/v1/envs/{healthy}/reset/")
    assert client.get("/v1/envs/").status_code == 200
    # all of that was answered while the other env still spun: its step has not ended
    assert t.is_alive() and client.get(f"/v1/envs/{iid}/").json()["state"] == "busy"
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 204
    t.join(30)
    assert result["step"].status_code == 410 and "was closed" in result["step"].json()["message"]


def test_abandoned_request_leaves_no_late_reply(server: Server, client: httpx.Client) -> None:
    iid, _ = started(client, "Slow")
    # A client that gives up: it sends a 1 s step, then disconnects after 0.2 s.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/envs/{iid}/step/", json={"action": 10}, timeout=0.2)
    start = time.monotonic()
    body = client.post(f"/v1/envs/{iid}/reset/").json()
    assert set(body) == {"observation", "info"} and body["observation"] == 0  # reset's reply, not step's
    assert time.monotonic() - start < 10  # it waited for the abandoned step (1 s), not a 30 s timeout
    step = client.post(f"/v1/envs/{iid}/step/", json={"action": 0}).json()
    assert step["observation"] == 1 and "reward" in step


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon", ""])
def test_bad_timeout_header_is_400_naming_it(client: httpx.Client, value: str) -> None:
    iid = create(client, "CartPole-v1")
    r = client.post(f"/v1/envs/{iid}/reset/", headers={"X-Request-Timeout": value})
    assert r.status_code == 400 and "X-Request-Timeout" in r.json()["message"]
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": value})
    assert r.status_code == 400 and "X-Request-Timeout" in r.json()["message"]


def test_closing_a_busy_env_kills_it_at_once(client: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "spinning"
    os.mkfifo(fifo)
    iid, pid = started(client, "Spins", signal_path=str(fifo))
    result: dict[str, httpx.Response] = {}

    def spin() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as other:
            result["step"] = other.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "20"})

    t = threading.Thread(target=spin)
    t.start()
    fifo.read_text()  # the env is spinning now
    start = time.monotonic()
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 204
    assert time.monotonic() - start < 4  # not the 20 s timeout, nor the 5 s grace an idle env gets
    assert gone(pid)
    t.join(10)
    assert result["step"].status_code == 410, result["step"].text
    assert "was closed by a close request while this request ran" in result["step"].json()["message"]
