"""An env works on one request at a time: a request whose time runs out while it waits its turn
is answered 504 and never reaches the env, which lives on; one whose time runs out while the env
works on it still kills the env."""

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import create, faulty

pytestmark = pytest.mark.timeout(60)
BOTH_BACKENDS = True  # on this machine and on a Ray cluster's nodes


def test_a_queued_request_times_out_without_running_or_killing_the_env(client: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "working"
    os.mkfifo(fifo)
    iid = create(client, faulty("Slow"), kwargs={"signal_path": str(fifo), "seconds": 3})
    client.post(f"/v1/envs/{iid}/reset/")
    first: dict[str, httpx.Response] = {}

    def slow_step() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as other:
            first["r"] = other.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "20"})

    t = threading.Thread(target=slow_step)
    t.start()
    fifo.read_text()  # the env works on the first step now
    start = time.monotonic()
    second = client.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "1"})
    waited = time.monotonic() - start
    assert second.status_code == 504, second.text
    message = second.json()["message"]
    assert f"env {iid}" in message and "busy with an earlier request" in message and "not run" in message
    assert waited < 2.5  # its own second, not the first step's three
    t.join(30)
    assert first["r"].status_code == 200, first["r"].text  # the first was within its own timeout
    info = client.get(f"/v1/envs/{iid}/").json()
    assert info["state"] == "ready" and info["cause"] is None
    assert info["steps"] == 1  # the second never ran
    # and the env steps on
    fast = create(client, faulty("Slow"))
    client.post(f"/v1/envs/{fast}/reset/")
    assert client.post(f"/v1/envs/{fast}/step/", json={"action": 0}).status_code == 200


def test_requests_waiting_on_an_env_that_crashes_are_told_it_died_and_were_never_run(
    client: httpx.Client, tmp_path: Path
) -> None:
    fifo = tmp_path / "working"
    os.mkfifo(fifo)
    iid = create(client, faulty("SpawnsHelpers"), kwargs={"signal_path": str(fifo)})
    client.post(f"/v1/envs/{iid}/reset/")
    results: dict[str, httpx.Response] = {}

    def send(name: str, action: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as other:
            results[name] = other.post(f"/v1/envs/{iid}/step/", json={"action": action},
                                       headers={"X-Request-Timeout": "20"})

    def until(key: str, value: object) -> None:
        deadline = time.monotonic() + 10
        while client.get(f"/v1/envs/{iid}/").json()[key] != value:
            assert time.monotonic() < deadline, (key, value)
            time.sleep(0.05)

    first = threading.Thread(target=send, args=("crash", 1))  # action 1: a segfault once announced
    first.start()
    until("state", "busy")  # the env holds the first step (its announcement waits for us)
    waiting = [threading.Thread(target=send, args=(f"queued{i}", 0)) for i in range(2)]
    for t in waiting:
        t.start()
    until("waiting", 2)  # both wait their turn
    start = time.monotonic()
    fifo.read_text()  # the env is on the first step now; let it crash
    for t in (first, *waiting):
        t.join(30)
    assert results["crash"].status_code == 502, results["crash"].text
    for name in ("queued0", "queued1"):  # never run: told the env died, not made to wait out their 20 s
        r = results[name]
        assert r.status_code == 410 and "was killed by SIGSEGV" in r.json()["message"], r.text
    assert time.monotonic() - start < 15
    info = client.get(f"/v1/envs/{iid}/").json()
    assert info["steps"] == 0 and info["waiting"] == 0


def test_a_running_request_past_its_timeout_still_kills_its_env(client: httpx.Client) -> None:
    iid = create(client, faulty("Spins"))
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "1"})
    assert r.status_code == 504 and "was killed after 1 s without a reply" in r.json()["message"]
    r = client.post(f"/v1/envs/{iid}/reset/")
    assert r.status_code == 410 and "was killed after 1 s" in r.json()["message"]
