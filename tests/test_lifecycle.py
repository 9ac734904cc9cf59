"""Stopping the server, however it is stopped, leaves no process behind; timeouts obey the flags."""

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import create, faulty, gone, start_server

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "shutdown"])
def test_stopping_the_server_leaves_no_process(tmp_path: Path, how: str) -> None:
    srv = start_server(tmp_path)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            ids = [create(c, "CartPole-v1"), create(c, faulty("Raises")), create(c, faulty("Spins"))]
            c.post(f"/v1/envs/{ids[0]}/reset/")
            pids = srv.descendants()
            assert len(pids) >= 4  # the forkserver and three envs
            if how == "shutdown":
                assert c.post("/v1/shutdown/").status_code == 200
            else:
                srv.proc.send_signal(getattr(signal, how))
        assert srv.proc.wait(20) == 0  # a stop asked for is a clean exit
        assert "Application shutdown complete" in srv.log.read_text()
        assert all(gone(pid) for pid in pids)
        assert not list(Path("/sys/fs/cgroup/pids").glob(f"gym-supervisor-{srv.proc.pid}"))  # its cgroups too
    finally:
        srv.stop()


def test_step_timeout_flag_and_its_cap(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--step-timeout", "3", "--max-request-timeout", "2")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            def slow(seconds: float) -> str:
                iid = create(c, faulty("Slow"), kwargs={"seconds": seconds})
                assert c.post(f"/v1/envs/{iid}/reset/").status_code == 200
                return iid

            r = c.post(f"/v1/envs/{slow(4)}/step/", json={"action": 0})  # 4 s > the 3 s default
            assert r.status_code == 504 and "after 3 s" in r.json()["message"]  # the cap is on clients only
            r = c.post(f"/v1/envs/{slow(1)}/step/", json={"action": 0}, headers={"X-Request-Timeout": "2"})
            assert r.status_code == 200  # a timeout asked for by header
            r = c.post(f"/v1/envs/{slow(4)}/step/", json={"action": 0}, headers={"X-Request-Timeout": "60"})
            assert r.status_code == 504 and "after 2 s" in r.json()["message"]  # capped by the flag
    finally:
        srv.stop()


def test_preload_makes_envs_available_by_plain_id(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--preload", "tests.faulty_envs")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, "Structured-v0")
            assert c.post(f"/v1/envs/{iid}/reset/").status_code == 200
    finally:
        srv.stop()


def test_max_envs_answers_503_with_retry_after_and_starts_nothing(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--max-envs", "2")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            a, b = create(c, "CartPole-v1"), create(c, faulty("Segfaults"))
            kids = srv.descendants()
            r = c.post("/v1/envs/", json={"env_id": "CartPole-v1"})
            assert r.status_code == 503 and r.headers["Retry-After"] == "5"
            assert "limit of 2 envs" in r.json()["message"]
            assert srv.descendants() == kids and len(c.get("/v1/envs/").json()["all_envs"]) == 2
            c.post(f"/v1/envs/{b}/reset/")
            assert c.post(f"/v1/envs/{b}/step/", json={"action": 0}).status_code == 502
            create(c, "CartPole-v1")  # a dead env holds no process, so it leaves room
            assert c.post("/v1/envs/", json={"env_id": "CartPole-v1"}).status_code == 503
            c.post(f"/v1/envs/{a}/close/")
            create(c, "CartPole-v1")
    finally:
        srv.stop()


def test_server_killed_with_sigkill_leaves_nothing(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    fifo = tmp_path / "spinning"
    os.mkfifo(fifo)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, faulty("SpawnsHelpers"))
            helpers = c.post(f"/v1/envs/{iid}/reset/").json()["info"]["helpers"]
            busy = create(c, faulty("Spins"), kwargs={"signal_path": str(fifo)})
            c.post(f"/v1/envs/{busy}/reset/")

        def spin() -> None:
            with contextlib.suppress(httpx.TransportError), httpx.Client(base_url=srv.url, timeout=60) as other:
                other.post(f"/v1/envs/{busy}/step/", json={"action": 0}, headers={"X-Request-Timeout": "60"})

        t = threading.Thread(target=spin)
        t.start()
        fifo.read_text()  # one env is at work, the other idle
        pids = srv.descendants() | set(helpers)
        assert len(pids) >= 6  # forkserver, 2 envs, their guardians, helpers
        srv.proc.kill()
        srv.proc.wait(5)
        deadline = time.monotonic() + 10  # typically well under a second; a loaded machine is slower
        left = [p for p in pids if not gone(p, timeout=max(deadline - time.monotonic(), 0))]
        assert left == [], [psutil.Process(p).cmdline() for p in left if psutil.pid_exists(p)]
        t.join(10)
    finally:
        srv.stop()