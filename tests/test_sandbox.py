"""Least privilege: env code as another user, and without the machine's network."""

import os
import pwd
import shutil
import socket
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import create, faulty, gone, start_server

pytestmark = pytest.mark.timeout(60)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs a server run as root")


def dead(pid: int, timeout: float = 5) -> bool:
    """Gone, or a zombie its parent has not reaped yet (within `timeout`: a signal takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _readable_by_nobody() -> bool:
    """Whether nobody may list the standard library here (a Python under a mode-700 home: no)."""
    return all(os.stat(p).st_mode & 0o001 for p in Path(os.__file__).parents if str(p) != "/")


def probe(c: httpx.Client, **kwargs: object) -> dict:
    iid = create(c, faulty("Probes"), kwargs=kwargs)
    return c.post(f"/v1/envs/{iid}/reset/").json()["info"]


@needs_root
def test_env_user_runs_env_code_as_that_user(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    nobody = pwd.getpwnam("nobody")
    data = Path(tempfile.mkdtemp(prefix="gym-supervisor-nobody-"))  # pytest's own tmp is root-only
    data.chmod(0o755)
    srv = start_server(tmp_path, "--env-user", "nobody", "--data-dir", str(data))
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            info = probe(c, read=str(secret), signal_pid=srv.proc.pid, module="http.client")
            assert (info["uid"], info["gid"], info["groups"]) == (nobody.pw_uid, nobody.pw_gid, [])
            assert info["read"] == "PermissionError" and info["signal"] == "PermissionError"
            # the standard library works, even where nobody may not read the Python installation
            assert info["import"] == "ok"
            if not _readable_by_nobody():
                assert f"env_user_cannot_read_python uid={nobody.pw_uid}" in srv.log.read_text()
            iid = create(c, "CartPole-v1", kwargs={"max_episode_steps": 2})  # and it still works
            r = c.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "as-nobody"})
            assert r.status_code == 204, r.text
            c.post(f"/v1/envs/{iid}/reset/")
            c.post(f"/v1/envs/{iid}/step/", json={"action": 0})
            assert c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).json()["done"]
            assert list((data / "as-nobody").glob("openaigym.episode_batch.*.stats.json"))
    finally:
        srv.stop()
        shutil.rmtree(data)


@needs_root
def test_env_code_swapping_a_link_in_cannot_make_the_server_chown_outside(tmp_path: Path) -> None:
    """The attack: env code (as nobody) swaps a directory inside the data dir with a symbolic
    link to a root-owned directory while its client starts monitors there, again and again.
    A server that followed the path as root would give that directory to nobody."""
    victim = Path(tempfile.mkdtemp(prefix="gym-supervisor-victim-"))  # stands for /etc/cron.d
    data = Path(tempfile.mkdtemp(prefix="gym-supervisor-nobody-"))
    data.chmod(0o755)
    srv = start_server(tmp_path, "--env-user", "nobody", "--data-dir", str(data))
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, faulty("SwapsDirs"), kwargs={"place": str(data / "race"), "victim": str(victim)})
            assert c.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "race"}).status_code == 204
            assert c.post(f"/v1/envs/{iid}/reset/").status_code == 200  # the swapping starts
            answers = [c.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "race/x", "force": True})
                       for _ in range(300)]
            assert victim.stat().st_uid == 0 and victim.stat().st_gid == 0
            refused = [r for r in answers if r.status_code == 400]
            assert refused and "symbolic link" in refused[0].json()["message"]  # the race was on
            # a 500 is the env's own doing: as nobody it may not write where its swap sent it
            assert all(r.status_code in (204, 400) or (r.status_code == 500 and "raised PermissionError" in r.text)
                       for r in answers), {r.status_code for r in answers}
            assert str(data) not in refused[0].json()["message"]  # no server path in the answer
    finally:
        srv.stop()
        shutil.rmtree(data)
        shutil.rmtree(victim)


@needs_root
def test_env_code_has_no_capability_and_cannot_enter_the_servers_namespace(tmp_path: Path) -> None:
    """Even where the server runs as root and env code keeps root's uid (no --env-user)."""
    srv = start_server(tmp_path)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            info = probe(c, setns_pid=srv.proc.pid)
            assert info["uid"] == 0 and info["caps"] == dict.fromkeys(info["caps"], 0), info["caps"]
            assert info["no_new_privs"] == 1
            # no capability: it may not even open the server's namespace (the server has capabilities
            # it lacks), let alone enter it
            assert info["setns"] in ("LookupError", "PermissionError")
    finally:
        srv.stop()


@needs_root
def test_with_a_uid_range_each_env_is_its_own_user_and_cannot_touch_another(tmp_path: Path) -> None:
    start = 61184  # systemd's range for its dynamic users: no account has these uids
    data = Path(tempfile.mkdtemp(prefix="gym-supervisor-uids-"))  # pytest's own tmp is root-only
    data.chmod(0o755)
    srv = start_server(tmp_path, "--env-uid-range", f"{start}:8", "--data-dir", str(data))
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            secret = f"/tmp/gym-supervisor-{os.getpid()}-first"
            first = probe(c, write=secret)
            second = probe(c, signal_pid=first["pid"], read=secret)
            uids = {first["uid"], second["uid"]}
            assert len(uids) == 2 and uids <= set(range(start, start + 8))
            assert (second["gid"], second["groups"]) == (second["uid"], [])
            assert second["signal"] == "PermissionError" and second["read"] == "PermissionError"
            iid = create(c, "CartPole-v1", kwargs={"max_episode_steps": 2})  # monitors work: the dir is its
            r = c.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "own"})
            assert r.status_code == 204, r.text
            c.post(f"/v1/envs/{iid}/reset/")
            c.post(f"/v1/envs/{iid}/step/", json={"action": 0})
            assert c.post(f"/v1/envs/{iid}/step/", json={"action": 0}).json()["done"]
            assert (data / "own").stat().st_uid in range(start, start + 8)
            assert (data / "own").stat().st_mode & 0o777 == 0o700  # its recordings are its own
            os.unlink(secret)
            other = create(c, "CartPole-v1")  # another env may neither take that directory nor go through it
            for directory in ("own", "own/sub"):
                r = c.post(f"/v1/envs/{other}/monitor/start/", json={"directory": directory})
                assert r.status_code == 400 and "directory of another env" in r.json()["message"], r.text
    finally:
        srv.stop()
        shutil.rmtree(data)


@needs_root
def test_uids_of_a_range_come_back_when_their_envs_end(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--env-uid-range", "61300:2")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for _ in range(3):  # more envs in turn than the range has uids: each gives its uid back
                ids = [create(c, "CartPole-v1"), create(c, faulty("Segfaults"))]
                r = c.post("/v1/envs/", json={"env_id": "CartPole-v1"})  # a third at once: none left
                assert r.status_code == 503 and "every uid of --env-uid-range" in r.json()["message"]
                c.post(f"/v1/envs/{ids[1]}/reset/")
                assert c.post(f"/v1/envs/{ids[1]}/step/", json={"action": 0}).status_code == 502  # dead: uid back
                replacement = create(c, "CartPole-v1")
                for iid in (ids[0], ids[1], replacement):
                    assert c.post(f"/v1/envs/{iid}/close/").status_code == 204
    finally:
        srv.stop()


@pytest.mark.parametrize(("flags", "says"), [
    (("--env-uid-range", "1:10"), "includes uid 1, which is user daemon's"),
    (("--env-uid-range", "61184:8", "--env-user", "nobody"), "exclude each other"),
    (("--env-uid-range", "5:0"), "START:COUNT"),
])
def test_a_bad_uid_range_is_refused_saying_why(tmp_path: Path, flags: tuple[str, ...], says: str) -> None:
    with pytest.raises(RuntimeError, match=says):
        start_server(tmp_path, *flags)


def test_env_no_network_without_env_user_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="--env-no-network needs --env-user or --env-uid-range"):
        start_server(tmp_path, "--env-no-network")


def test_env_user_that_does_not_exist_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no such user"):
        start_server(tmp_path, "--env-user", "no-such-user-here")


@needs_root
def test_env_no_network_leaves_only_loopback_and_no_way_back(tmp_path: Path) -> None:
    data = Path(tempfile.mkdtemp(prefix="gym-supervisor-nobody-"))
    data.chmod(0o755)
    srv = start_server(tmp_path, "--env-user", "nobody", "--env-no-network", "--data-dir", str(data))
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            info = probe(c, connect_port=port, setns_pid=srv.proc.pid)
            assert info["interfaces"] == ["lo"]
            assert info["connect"] == "ConnectionRefusedError"  # the server's loopback is not its loopback
            assert info["own_loopback"] == "ok"
            assert info["setns"] in ("PermissionError", "LookupError")  # the escape: back into the server's
            assert info["caps"] == dict.fromkeys(info["caps"], 0) and info["no_new_privs"] == 1
    finally:
        srv.stop()
        shutil.rmtree(data)


def test_without_the_flag_an_env_shares_the_machines_network(client: httpx.Client) -> None:
    port = int(str(client.base_url).rstrip("/").rsplit(":", 1)[1])
    info = probe(client, connect_port=port)
    assert info["connect"] == "ok" and set(info["interfaces"]) == {name for _, name in socket.if_nameindex()}


@needs_root
def test_no_network_check_says_why_where_it_cannot() -> None:
    from envproc import sandbox

    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # a process that may not make namespaces: what the check tells a server run so
        code = 2
        try:
            sandbox.drop_privileges(nobody.pw_uid, nobody.pw_gid)
            why = sandbox.can_unshare_network()
            code = 0 if why and "not permitted" in why else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@needs_root
def test_a_helper_whose_env_killed_its_guardian_still_goes_with_its_uid(tmp_path: Path) -> None:
    """No cgroup here, and env code (its guardian's uid) killed its guardian: only the server,
    freeing the env's uid before another env gets it, can end the helper that left its group."""
    srv = start_server(tmp_path, "--env-uid-range", "61400:4", "--env-max-procs", "0", "--max-procs", "0")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, faulty("KillsGuardian"))
            info = c.post(f"/v1/envs/{iid}/reset/").json()["info"]
            assert info["guardians"] and all(dead(pid) for pid in info["guardians"])
            assert not gone(info["helper"], timeout=0)
            assert c.post(f"/v1/envs/{iid}/close/").status_code == 204
            assert gone(info["helper"], timeout=10)
    finally:
        srv.stop()
