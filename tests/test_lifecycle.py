"""Stopping the server, however it is stopped, leaves no process behind; timeouts obey the flags."""

import signal
from pathlib import Path

import httpx
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
                expected = 0
            else:
                srv.proc.send_signal(getattr(signal, how))
                expected = -getattr(signal, how)  # uvicorn re-raises the signal once it has shut down
        assert srv.proc.wait(20) == expected
        assert "Application shutdown complete" in srv.log.read_text()
        assert all(gone(pid) for pid in pids)
    finally:
        srv.stop()


def test_step_timeout_flag_and_its_cap(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--step-timeout", "0.5", "--max-request-timeout", "1")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, faulty("Slow"))
            c.post(f"/v1/envs/{iid}/reset/")
            r = c.post(f"/v1/envs/{iid}/step/", json={"action": 8})  # 0.8 s > the 0.5 s default
            assert r.status_code == 504 and "after 0.5 s" in r.json()["message"]
            iid = create(c, faulty("Slow"))
            c.post(f"/v1/envs/{iid}/reset/")
            r = c.post(f"/v1/envs/{iid}/step/", json={"action": 8}, headers={"X-Request-Timeout": "2"})
            assert r.status_code == 200  # a longer timeout, asked for by header
            r = c.post(f"/v1/envs/{iid}/step/", json={"action": 15}, headers={"X-Request-Timeout": "60"})
            assert r.status_code == 504 and "after 1 s" in r.json()["message"]  # capped by the flag
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

