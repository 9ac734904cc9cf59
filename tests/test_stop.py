"""Stopping a server with work in flight: within --shutdown-grace, whatever its envs do."""

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, create, faulty, gone, start_server

pytestmark = pytest.mark.timeout(60)

GRACE = 1.0
SHUTTING_DOWN = {"message": "The server is shutting down"}


def stop(srv: Server, how: str) -> None:
    if how == "shutdown":
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.post("/v1/shutdown/").json() == {"message": "Server shutting down"}
    else:
        srv.proc.send_signal(getattr(signal, how))


def at_work(srv: Server, tmp: Path, env: str, **kwargs: object) -> tuple[threading.Thread, dict[str, object]]:
    """An env of kind `env` at work on a step (60 s timeout), sent from a thread: the thread and a
    dict that gets the step's response, or the error that ended it."""
    fifo = tmp / f"working-{env}"
    os.mkfifo(fifo)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        iid = create(c, faulty(env), kwargs={"signal_path": str(fifo), **kwargs})
        c.post(f"/v1/envs/{iid}/reset/")
    out: dict[str, object] = {}

    def run() -> None:
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                out["response"] = c.post(f"/v1/envs/{iid}/step/", json={"action": 0},
                                         headers={"X-Request-Timeout": "60"})
        except httpx.TransportError as exc:  # a closed connection is an answer too
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    fifo.read_text()  # the env is at work on the step now
    return t, out


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "shutdown"])
@pytest.mark.parametrize(("env", "kwargs"), [("IgnoresTerm", {}), ("Slow", {"seconds": 15})])  # hung; healthy work
def test_stop_with_a_request_in_flight_takes_the_grace_and_no_more(tmp_path: Path, how: str, env: str,
                                                                    kwargs: dict) -> None:
    srv = start_server(tmp_path, "--shutdown-grace", str(GRACE))
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            create(c, "CartPole-v1")  # an idle env beside the busy one
        t, out = at_work(srv, tmp_path, env, **kwargs)
        pids = srv.descendants()
        start = time.monotonic()
        stop(srv, how)
        assert srv.proc.wait(GRACE + 10) == 0
        took = time.monotonic() - start
        assert took < GRACE + 2, f"stopped after {took:.1f} s"
        t.join(10)
        r = out.get("response")  # its connection stayed open: it is answered
        assert isinstance(r, httpx.Response), out
        assert r.status_code == 503 and r.json() == SHUTTING_DOWN, r.text
        assert all(gone(p) for p in pids), [p for p in pids if not gone(p, 0)]  # the idle env's too
    finally:
        srv.stop()


def test_requests_that_end_within_the_grace_are_answered_and_new_ones_refused(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--shutdown-grace", "20")
    try:
        t, out = at_work(srv, tmp_path, "Slow", seconds=2)
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while True:  # the listening socket closes at once: a new client is refused (or cut off, if it
            try:        # slipped into the backlog just before)
                httpx.get(f"{srv.url}/v1/envs/", timeout=1)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                break
            assert time.monotonic() < deadline, "the server still accepts connections"
        t.join(20)
        r = out["response"]
        assert isinstance(r, httpx.Response) and r.status_code == 200 and r.json()["observation"] == 1
        assert srv.proc.wait(10) == 0  # and it ends as soon as nothing is left to finish, long before 20 s
    finally:
        srv.stop()


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--shutdown-grace", "60")
    try:
        t, _ = at_work(srv, tmp_path, "IgnoresTerm")
        pids = srv.descendants()
        srv.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while "Shutting down" not in srv.log.read_text():  # the first has been taken
            assert time.monotonic() < deadline
            time.sleep(0.05)
        start = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(10) == 0
        assert time.monotonic() - start < 5  # not the 60 s grace
        t.join(10)
        assert all(gone(p) for p in pids), [p for p in pids if not gone(p, 0)]
    finally:
        srv.stop()


def test_a_server_stopped_while_an_env_starts_leaves_nothing(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--shutdown-grace", str(GRACE))
    fifo = tmp_path / "starting"
    os.mkfifo(fifo)
    out: dict[str, object] = {}

    def run() -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            try:
                out["response"] = c.post("/v1/envs/", json={"env_id": faulty("HangsInInit"),
                                                            "kwargs": {"signal_path": str(fifo)}})
            except httpx.TransportError as exc:
                out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    try:
        fifo.read_text()  # the env's constructor hangs now
        pids = srv.descendants()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(GRACE + 10) == 0
        t.join(10)
        r = out.get("response")
        assert isinstance(r, httpx.Response) and r.status_code == 503 and r.json() == SHUTTING_DOWN, out
        assert all(gone(p) for p in pids)
    finally:
        srv.stop()
