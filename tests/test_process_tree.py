"""An env's helpers (subprocesses, multiprocessing children, forks) never outlive it."""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import create, faulty, gone, start_server

pytestmark = pytest.mark.timeout(60)
BOTH_BACKENDS = True  # on this machine and on a Ray cluster's nodes


@pytest.mark.parametrize("how", ["close", "crash", "timeout"])
def test_helpers_die_with_their_env(client: httpx.Client, how: str) -> None:
    iid = create(client, faulty("SpawnsHelpers"))
    info = client.post(f"/v1/envs/{iid}/reset/").json()["info"]
    pids = [info["pid"], *info["helpers"]]
    assert len(pids) == 4 and not any(gone(p, timeout=0) for p in pids)
    if how == "crash":
        assert client.post(f"/v1/envs/{iid}/step/", json={"action": 1}).status_code == 502
    elif how == "timeout":
        r = client.post(f"/v1/envs/{iid}/step/", json={"action": 2}, headers={"X-Request-Timeout": "0.5"})
        assert r.status_code == 504
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 204
    assert all(gone(p) for p in pids), [p for p in pids if not gone(p, 0)]


def pids_cgroups_here() -> bool:
    from supervisor.cgroups import _pids_root

    return _pids_root() is not None


needs_cgroups = pytest.mark.skipif(not pids_cgroups_here(), reason="no pids cgroup on this machine")


@needs_cgroups
def test_fork_bomb_is_capped_and_cleared(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--env-max-procs", "32")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            before = srv.descendants()
            iid = create(c, faulty("ForkBomb"))
            c.post(f"/v1/envs/{iid}/reset/")
            forked = c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).json()["info"]["forked"]
            assert 0 < forked <= 30  # the env and its guardian take two of the 32
            assert len(srv.descendants() - before) == forked + 2
            assert c.post(f"/v1/envs/{iid}/close/").status_code == 204
            assert srv.back_to(before)
    finally:
        srv.stop()


@needs_cgroups
def test_helper_that_left_the_process_group_dies_too(client: httpx.Client) -> None:
    iid = create(client, faulty("EscapesGroup"))
    info = client.post(f"/v1/envs/{iid}/reset/").json()["info"]
    assert os.getpgid(info["helper"]) != os.getpgid(info["pid"])
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 204
    assert gone(info["pid"]) and gone(info["helper"])


def test_env_holds_no_descriptor_of_the_server_but_its_pipe(client: httpx.Client) -> None:
    a = create(client, faulty("ListsFds"))
    b = create(client, faulty("ListsFds"))
    fds = client.post(f"/v1/envs/{a}/reset/").json()["info"]["fds"]
    others = client.post(f"/v1/envs/{b}/reset/").json()["info"]["fds"]
    beyond_stdio = {fd: target for fd, target in fds.items() if int(fd) > 2}
    assert len(beyond_stdio) == 1 and next(iter(beyond_stdio.values())).startswith("socket:"), fds
    assert not set(beyond_stdio.values()) & {t for fd, t in others.items() if int(fd) > 2}  # nothing shared


def test_a_killed_forkserver_takes_its_envs_and_a_new_one_starts(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, "CartPole-v1")
            pid = c.get(f"/v1/envs/{iid}/").json()["pid"]
            forkserver = next(p for p in psutil.Process(srv.proc.pid).children()
                              if "envproc.forkserver" in " ".join(p.cmdline()))
            forkserver.kill()  # as env code running as root, or an admin, could
            assert gone(pid)  # its env went with it (parent-death signal)
            deadline = time.monotonic() + 10
            while (r := c.post(f"/v1/envs/{iid}/reset/")).status_code != 410:
                assert r.status_code == 502 and time.monotonic() < deadline, r.text  # 502: raced the death
            assert "was killed when the server's env forkserver ended" in r.json()["message"]
            with ThreadPoolExecutor(6) as pool:  # creates that all find it gone start one new one
                created = list(pool.map(lambda _: httpx.post(f"{srv.url}/v1/envs/", json={"env_id": "CartPole-v1"},
                                                             timeout=60), range(6)))
            assert [r.status_code for r in created] == [200] * 6, [r.text for r in created]
            for r in created:
                assert c.post(f"/v1/envs/{r.json()['instance_id']}/reset/").status_code == 200
            forkservers = [p for p in psutil.Process(srv.proc.pid).children()
                           if "envproc.forkserver" in " ".join(p.cmdline())]
            assert len(forkservers) == 1
            assert "forkserver_died" in srv.log.read_text() and "forkserver_restarted" in srv.log.read_text()
    finally:
        srv.stop()


@needs_cgroups
def test_a_fork_that_fails_fails_its_create_only(tmp_path: Path) -> None:
    """When the machine's pids run out, the forkserver's fork fails: that create is a 503, and
    the forkserver and every env already running go on."""
    from supervisor.cgroups import _pids_root

    srv = start_server(tmp_path)
    cap = Path(str(_pids_root())) / f"test-forkserver-{os.getpid()}"
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            running = create(c, "CartPole-v1")
            forkserver = next(p for p in psutil.Process(srv.proc.pid).children()
                              if "envproc.forkserver" in " ".join(p.cmdline()))
            cap.mkdir()
            (cap / "pids.max").write_text("1")  # the forkserver alone: no fork succeeds in here
            (cap / "cgroup.procs").write_text(str(forkserver.pid))
            r = c.post("/v1/envs/", json={"env_id": "CartPole-v1"})
            assert r.status_code == 503 and "fork failed" in r.json()["message"], r.text
            (cap / "pids.max").write_text("max")
            assert c.post(f"/v1/envs/{running}/reset/").status_code == 200  # its envs live on
            again = create(c, "CartPole-v1")  # and so does the forkserver
            assert c.post(f"/v1/envs/{again}/reset/").status_code == 200
            assert forkserver.is_running()
    finally:
        if cap.exists():
            for pid in (cap / "cgroup.procs").read_text().split():  # back where it was, so the cap can go
                (cap.parent / "cgroup.procs").write_text(pid)
            cap.rmdir()
        srv.stop()


@needs_cgroups
def test_all_envs_together_stay_under_the_servers_process_cap(tmp_path: Path) -> None:
    """A swarm of fork bombs, each under its own cap, must still leave the machine's pids alone."""
    srv = start_server(tmp_path, "--env-max-procs", "32", "--max-procs", "40")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            forked = []
            for _ in range(2):
                iid = create(c, faulty("ForkBomb"))
                c.post(f"/v1/envs/{iid}/reset/")
                forked.append(c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).json()["info"]["forked"])
            assert 0 < forked[0] <= 30  # alone: its own cap of 32, itself and its guardian among them
            assert sum(forked) <= 40 - 2, forked  # together: 40, less the two envs' own guardians at least
            assert "max_procs=40 " in srv.log.read_text()
    finally:
        srv.stop()
