"""Restarts: by hand, automatic after a crash or timeout, and a crash loop that stays dead."""

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from supervisor.restart import RestartPolicy, crash_loop
from tests.conftest import Server, create, faulty, gone, start_server

pytestmark = pytest.mark.timeout(60)
BOTH_BACKENDS = True  # on this machine and on a Ray cluster's nodes


def test_restart_by_hand_keeps_the_id_and_starts_a_fresh_process(client: httpx.Client) -> None:
    iid = create(client, faulty("Segfaults"), seed=5)
    first = client.post(f"/v1/envs/{iid}/reset/").json()["info"]["pid"]
    r = client.post(f"/v1/envs/{iid}/restart/")
    assert r.status_code == 200
    body = r.json()
    assert body["instance_id"] == iid and body["old"] == {"pid": first, "state": "ready", "cause": None}
    assert body["new"]["pid"] != first and gone(first)
    assert client.post(f"/v1/envs/{iid}/reset/").json()["info"]["pid"] == body["new"]["pid"]
    assert client.get(f"/v1/envs/{iid}/").json()["restarts"] == 1
    # a dead env comes back too, and reports how it had died
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 502
    again = client.post(f"/v1/envs/{iid}/restart").json()
    assert again["old"]["state"] == "dead" and "SIGSEGV" in again["old"]["cause"]
    assert client.post(f"/v1/envs/{iid}/reset/").status_code == 200


def test_restart_of_unknown_instance_is_400(client: httpx.Client) -> None:
    r = client.post("/v1/envs/nope/restart/")
    assert r.status_code == 400 and r.json()["message"] == "Instance_id nope unknown"


def test_automatic_restart_after_crash_and_timeout_then_crash_loop(client: httpx.Client) -> None:
    iid = create(client, faulty("SpawnsHelpers"), seed=1, restart={"max": 2, "within_s": 60})
    pids = []
    for action, status in ((1, 502), (2, 504)):  # a segfault, then a spin killed for its timeout
        pids.append(client.post(f"/v1/envs/{iid}/reset/").json()["info"]["pid"])
        r = client.post(f"/v1/envs/{iid}/step/", json={"action": action}, headers={"X-Request-Timeout": "1"})
        assert r.status_code == status
        step = client.post(f"/v1/envs/{iid}/step/", json={"action": 0})  # back, but needs a reset
        assert step.status_code == 400 and "reset first" in step.json()["message"]
    assert client.get(f"/v1/envs/{iid}/").json()["restarts"] == 2
    client.post(f"/v1/envs/{iid}/reset/")
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 1}).status_code == 502  # a third death
    r = client.post(f"/v1/envs/{iid}/reset/")
    assert r.status_code == 410 and "crash loop: 2 restarts in 60 s" in r.json()["message"]
    assert all(gone(p) for p in pids)


def test_restart_policy_is_checked(client: httpx.Client) -> None:
    for bad in ({"max": 0, "within_s": 5}, {"within_s": 5}, {"max": 2, "within_s": -1}, "often"):
        r = client.post("/v1/envs/", json={"env_id": "CartPole-v1", "restart": bad})
        assert r.status_code == 400 and "restart" in r.json()["message"], r.text


def test_a_misspelt_restart_or_limits_key_is_refused_naming_it(client: httpx.Client) -> None:
    """A typo must not silently drop a policy or a limit."""
    for body, key in (({"restart": {"max": 2, "within": 60}}, "within"),
                      ({"limits": {"memroy_mb": 100}}, "memroy_mb")):
        r = client.post("/v1/envs/", json={"env_id": "CartPole-v1", **body})
        assert r.status_code == 400 and key in r.json()["message"], r.text


def test_crash_loop_counts_only_restarts_within_the_window() -> None:
    policy = RestartPolicy(max=2, within_s=10)
    assert not crash_loop([], 100, policy)
    assert not crash_loop([95], 100, policy)
    assert crash_loop([95, 99], 100, policy)
    assert not crash_loop([85, 99], 100, policy)  # the first is out of the window


@pytest.fixture(scope="module")
def restarting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("restarting"), "--restart-max", "1", "--restart-within", "30")
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.parametrize("policy", [None, {"max": 1}])  # the server's, or one without a window
def test_server_default_restart_policy(restarting: Server, policy: dict | None) -> None:
    with httpx.Client(base_url=restarting.url, timeout=30) as c:
        iid = create(c, faulty("Exits"), restart=policy)
        c.post(f"/v1/envs/{iid}/reset/")
        r = c.post(f"/v1/envs/{iid}/step/", json={"action": 0})
        assert r.status_code == 502 and "being restarted under the same id" in r.json()["message"]
        assert "create a new one" not in r.json()["message"]
        assert c.post(f"/v1/envs/{iid}/reset/").status_code == 200  # restarted once
        assert c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 502
        r = c.post(f"/v1/envs/{iid}/reset/")
        assert r.status_code == 410 and "crash loop: 1 restarts in 30 s" in r.json()["message"]
        assert "exited with code 3" in r.json()["message"]
        plain = create(c, "CartPole-v1", restart=None)
        assert c.get(f"/v1/envs/{plain}/").json()["restarts"] == 0


def test_restart_by_hand_answers_the_request_in_flight_and_hands_the_waiting_ones_on(
    client: httpx.Client, tmp_path: Path
) -> None:
    fifo = tmp_path / "working"
    os.mkfifo(fifo)
    iid = create(client, faulty("Slow"), kwargs={"signal_path": str(fifo), "seconds": 30})
    old_pid = client.post(f"/v1/envs/{iid}/reset/").json()["info"]["pid"]
    results: dict[str, httpx.Response] = {}

    def send(name: str, path: str, body: object) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as other:
            results[name] = other.post(f"/v1/envs/{iid}/{path}", json=body, headers={"X-Request-Timeout": "40"})

    def until_waiting(n: int) -> None:
        deadline = time.monotonic() + 10
        while client.get(f"/v1/envs/{iid}/").json()["waiting"] != n:
            assert time.monotonic() < deadline
            time.sleep(0.05)

    busy = threading.Thread(target=send, args=("step", "step/", {"action": 0}))
    busy.start()
    fifo.read_text()  # the old process sleeps in its step now
    queued = threading.Thread(target=send, args=("reset", "reset/", None))
    queued.start()
    until_waiting(1)
    r = client.post(f"/v1/envs/{iid}/restart/")
    assert r.status_code == 200 and r.json()["old"]["state"] == "busy"
    busy.join(30)
    queued.join(30)
    step = results["step"]
    assert step.status_code == 502 and "was restarted by a restart request while this request ran" in step.text
    reset = results["reset"]  # it had not run: the new process ran it
    assert reset.status_code == 200 and reset.json()["info"]["pid"] == r.json()["new"]["pid"] != old_pid


def test_a_clients_restart_policy_is_held_to_the_servers_bounds(client: httpx.Client) -> None:
    """{"max": 1e6, "within_s": 1e-6} would restart a crashing env for ever."""
    r = client.post("/v1/envs/", json={"env_id": faulty("Exits"), "restart": {"max": 1e6, "within_s": 1e-6}})
    assert r.status_code == 200 and r.json()["restart"] == {"max": 3, "within_s": 60}, r.text
    iid = r.json()["instance_id"]
    for _ in range(3):
        client.post(f"/v1/envs/{iid}/reset/")
        assert client.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 502
    deadline = time.monotonic() + 20
    while "crash loop" not in (cause := client.get(f"/v1/envs/{iid}/").json()["cause"] or ""):
        if client.post(f"/v1/envs/{iid}/reset/").status_code == 200:  # restarted: crash it again
            assert client.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 502
        assert time.monotonic() < deadline, cause
    assert cause.startswith("crash loop: 3 restarts in 60 s")


def test_a_close_or_a_second_restart_during_a_restart_is_answered_cleanly(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        iid = create(c, faulty("SlowMake"), kwargs={"delay": 1.0})
        results: dict[str, httpx.Response] = {}
        restarting = threading.Thread(target=lambda: results.update(restart=c.post(f"/v1/envs/{iid}/restart/")))
        restarting.start()
        deadline = time.monotonic() + 10  # until the old process is gone and the new one is being made
        while c.get(f"/v1/envs/{iid}/").json()["state"] != "closed" and time.monotonic() < deadline:
            time.sleep(0.02)
        second = c.post(f"/v1/envs/{iid}/restart/", headers={"X-Request-Timeout": "0.3"})
        assert second.status_code in (502, 504), second.text  # its own make runs out of time; not a 500
        assert c.post(f"/v1/envs/{iid}/close/").status_code == 204  # the old process closed twice: still 204
        restarting.join(20)
        assert results["restart"].status_code in (200, 400), results["restart"].text  # 400: closed meanwhile
        assert c.get(f"/v1/envs/{iid}/").status_code == 400
