"""Per-env limits: memory (rlimit and the tree's RSS), CPU time, open files; the server survives."""

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import Server, create, faulty, gone, start_ray_server, start_server

pytestmark = pytest.mark.timeout(60)

LONG = {"X-Request-Timeout": "30"}


@pytest.fixture(scope="module", params=["local", "ray"])
def limited(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """The same limits on this machine, and on a Ray cluster's nodes (their agents enforce them)."""
    flags = ("--env-memory-mb", "150", "--env-cpu-seconds", "1", "--env-max-files", "64")
    tmp = tmp_path_factory.mktemp("limited")
    if request.param == "ray":
        srv = start_ray_server(tmp, request.getfixturevalue("ray_cluster"), *flags)
    else:
        srv = start_server(tmp, *flags)
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            c.server = srv  # type: ignore[attr-defined]
            yield c
    finally:
        srv.stop()


def started(c: httpx.Client, name: str) -> tuple[str, int]:
    iid = create(c, faulty(name))
    return iid, c.post(f"/v1/envs/{iid}/reset/").json()["info"]["pid"]


def assert_dead_with(c: httpx.Client, iid: str, pid: int, r: httpx.Response, status: int, cause: str) -> None:
    assert r.status_code == status, r.text
    assert cause in r.json()["message"], r.text
    assert gone(pid)
    later = c.post(f"/v1/envs/{iid}/reset/")
    assert later.status_code == 410 and cause in later.json()["message"]
    assert c.post(f"/v1/envs/{iid}/close/").status_code == 204


def test_memory_bomb_is_stopped_at_its_limit(limited: httpx.Client) -> None:
    server_rss = psutil.Process(limited.server.proc.pid).memory_info().rss  # type: ignore[attr-defined]
    iid, pid = started(limited, "MemoryBomb")
    r = limited.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers=LONG)
    assert_dead_with(limited, iid, pid, r, 502, "hit its memory limit 150 MB")
    assert psutil.Process(limited.server.proc.pid).memory_info().rss < server_rss + 50 * 2**20


def test_helpers_that_hold_memory_together_are_stopped(limited: httpx.Client) -> None:
    iid, pid = started(limited, "HelperHog")
    r = limited.post(f"/v1/envs/{iid}/step/", json={"action": 3}, headers=LONG)  # 3 x 80 MB > 150 MB
    assert_dead_with(limited, iid, pid, r, 502, "hit its memory limit 150 MB (its processes held")


def test_cpu_hog_is_stopped_at_its_cpu_limit(limited: httpx.Client) -> None:
    iid, pid = started(limited, "Spins")
    r = limited.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers=LONG)
    assert_dead_with(limited, iid, pid, r, 502, "CPU limit 1 s exceeded")


def test_too_many_files_is_the_envs_own_error(limited: httpx.Client) -> None:
    iid, pid = started(limited, "FileHog")
    r = limited.post(f"/v1/envs/{iid}/step/", json={"action": 10})  # 100 files > 64
    assert r.status_code == 500 and "Too many open files" in r.json()["message"]
    assert limited.post(f"/v1/envs/{iid}/reset/").status_code == 200  # still alive and usable
    limited.post(f"/v1/envs/{iid}/close/")


def test_healthy_envs_run_under_the_limits(limited: httpx.Client) -> None:
    iid = create(limited, "CartPole-v1")
    limited.post(f"/v1/envs/{iid}/reset/")
    for _ in range(20):
        assert limited.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 200
    limited.post(f"/v1/envs/{iid}/close/")


def test_oom_kill_from_outside_is_told_apart(client: httpx.Client, server: Server) -> None:
    import os
    import signal

    from supervisor.usage import oom_kills

    iid = create(client, faulty("Slow"))
    pid = client.post(f"/v1/envs/{iid}/reset/").json()["info"]["pid"]
    before = oom_kills()
    os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer sends, or another process
    assert gone(pid)
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{iid}/reset/")
    assert r.status_code == 410 and "was killed by SIGKILL from outside this server" in r.json()["message"]
    if before is not None and oom_kills() == before:  # not blamed on the OOM killer without its evidence
        assert "not by the kernel's OOM killer, which killed nothing meanwhile" in r.json()["message"]


def test_create_may_tighten_the_servers_limits_but_not_loosen_them(limited: httpx.Client, client: httpx.Client) -> None:
    from supervisor.asked import tighter

    assert (tighter(150, 0), tighter(150, 100), tighter(150, 400), tighter(0, 100)) == (150, 100, 150, 100)
    iid = create(limited, faulty("MemoryBomb"), limits={"memory_mb": 100})
    limited.post(f"/v1/envs/{iid}/reset/")
    r = limited.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers=LONG)
    assert r.status_code == 502 and "hit its memory limit 100 MB" in r.json()["message"]
    iid = create(limited, faulty("MemoryBomb"), limits={"memory_mb": 4000})
    limited.post(f"/v1/envs/{iid}/reset/")
    r = limited.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers=LONG)
    assert r.status_code == 502 and "hit its memory limit 150 MB" in r.json()["message"]
    # a server without a limit takes the one a create asks for
    iid = create(client, faulty("Spins"), limits={"cpu_seconds": 1})
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers=LONG)
    assert r.status_code == 502 and "CPU limit 1 s exceeded" in r.json()["message"]
    bad = client.post("/v1/envs/", json={"env_id": "CartPole-v1", "limits": {"memory_mb": -1}})
    assert bad.status_code == 400 and "memory_mb" in bad.json()["message"]


def test_envs_get_a_memory_limit_by_default_and_0_turns_it_off(server: Server, client: httpx.Client,
                                                               tmp_path: Path) -> None:
    quarter = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4 // 2**20
    iid = create(client, "CartPole-v1")
    assert client.get(f"/v1/envs/{iid}/").json()["limits"]["memory_mb"] == quarter
    probe = create(client, faulty("Probes"))  # watched, not capped in address space (JAX, torch reserve much)
    assert client.post(f"/v1/envs/{probe}/reset/").json()["info"]["rlimit_as"] == -1
    assert f"env_memory_mb={quarter} " in server.log.read_text()
    off = start_server(tmp_path, "--env-memory-mb", "0")
    try:
        with httpx.Client(base_url=off.url, timeout=30) as c:
            assert c.get(f"/v1/envs/{create(c, 'CartPole-v1')}/").json()["limits"]["memory_mb"] == 0
    finally:
        off.stop()


def test_create_kwargs_past_the_cap_are_413_before_anything_starts(client: httpx.Client, server: Server) -> None:
    """The amplification: a client-sent FrozenLake map of 981 KiB took 21 s and 2 GB to make."""
    kids = server.descendants()
    huge = ["F" * 1000] * 100  # 100 KB of map, over the 64 KiB default
    r = client.post("/v1/envs/", json={"env_id": "FrozenLake-v1", "kwargs": {"desc": huge}})
    assert r.status_code == 413 and "--max-kwargs-bytes" in r.json()["message"], r.text
    assert server.back_to(kids)
    small = ["SFFF", "FHFH", "FFFH", "HFFG"]
    assert client.post("/v1/envs/", json={"env_id": "FrozenLake-v1", "kwargs": {"desc": small}}).status_code == 200


def test_a_reply_past_the_cap_stops_its_env_before_the_server_buffers_it(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--max-reply-mb", "2")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, faulty("HugeReply"))
            c.post(f"/v1/envs/{iid}/reset/")
            assert c.post(f"/v1/envs/{iid}/step/", json={"action": 1}).status_code == 200  # 1 MB: fine
            rss = psutil.Process(srv.proc.pid).memory_info().rss
            r = c.post(f"/v1/envs/{iid}/step/", json={"action": 19})  # 19 MB
            assert r.status_code == 502 and "more than this server takes (2 MB, --max-reply-mb)" in r.text, r.text
            assert psutil.Process(srv.proc.pid).memory_info().rss < rss + 10 * 2**20  # it never held 19 MB
            assert c.post(f"/v1/envs/{iid}/reset/").status_code == 410
    finally:
        srv.stop()


def test_dead_envs_hold_no_descriptor(tmp_path: Path) -> None:
    """Under a descriptor limit of 128, 150 envs that crash and are not closed must not make
    creates fail: a dead env keeps its record, not its pipes."""
    srv = start_server(tmp_path, "--env-memory-mb", "0", nofile=128)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for _ in range(150):
                iid = create(c, faulty("Segfaults"))
                c.post(f"/v1/envs/{iid}/reset/")
                assert c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 502
            assert len(c.get("/v1/envs/").json()["all_envs"]) == 150  # all kept, with their causes
            assert psutil.Process(srv.proc.pid).num_fds() < 64
    finally:
        srv.stop()


def test_every_start_passes_the_env_limit_restart_included(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--max-envs", "2")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            dead = create(c, faulty("Segfaults"))
            c.post(f"/v1/envs/{dead}/reset/")
            assert c.post(f"/v1/envs/{dead}/step/", json={"action": 0}).status_code == 502
            create(c, "CartPole-v1")
            create(c, "CartPole-v1")  # two live: the limit
            r = c.post(f"/v1/envs/{dead}/restart/")  # would make three
            assert r.status_code == 503 and "limit of 2 envs" in r.json()["message"], r.text
            assert c.get(f"/v1/envs/{dead}/").json()["state"] == "dead"
    finally:
        srv.stop()


def test_an_explicit_memory_limit_also_caps_address_space(limited: httpx.Client) -> None:
    probe = create(limited, faulty("Probes"))
    assert limited.post(f"/v1/envs/{probe}/reset/").json()["info"]["rlimit_as"] > 0
