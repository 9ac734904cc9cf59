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


def test_requests_to_one_env_run_in_their_order_of_arrival(client: httpx.Client, tmp_path: Path) -> None:
    fifo = tmp_path / "working"
    os.mkfifo(fifo)
    iid = create(client, faulty("Slow"), kwargs={"signal_path": str(fifo), "seconds": 1})
    client.post(f"/v1/envs/{iid}/reset/")
    done: list[str] = []

    def step(name: str) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as other:
            r = other.post(f"/v1/envs/{iid}/step/", json={"action": 0})
            assert r.status_code == 200
            done.append(name)

    first = threading.Thread(target=step, args=("first",))
    first.start()
    fifo.read_text()
    began = time.monotonic()
    second = threading.Thread(target=step, args=("second",))
    second.start()
    fifo.read_text()  # the second runs only once the first is done: a second of sleep later at least
    assert time.monotonic() - began >= 0.9
    first.join(30)
    second.join(30)
    assert done == ["first", "second"]
    assert client.get(f"/v1/envs/{iid}/").json()["steps"] == 2


def test_a_running_request_past_its_timeout_still_kills_its_env(client: httpx.Client) -> None:
    iid = create(client, faulty("Spins"))
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "1"})
    assert r.status_code == 504 and "was killed after 1 s without a reply" in r.json()["message"]
    r = client.post(f"/v1/envs/{iid}/reset/")
    assert r.status_code == 410 and "was killed after 1 s" in r.json()["message"]
