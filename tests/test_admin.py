"""What an admin does on a shared server: see every env, kill what is stuck, read the metrics;
and what users see of it. Also the health check, frames, and a users file re-read on SIGHUP."""

import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.client import Forbidden, NotSignedIn, QuotaExceeded, RemoteEnv
from envproc.png import decode_png
from tests.conftest import create, faulty, gone
from tests.lab import Lab, lab_fixture, make_token, start_lab

pytestmark = pytest.mark.timeout(60)


lab = lab_fixture("--allow-module", "tests.faulty_envs")


def at_work(lab: Lab, tmp: Path, user: str, env: str) -> tuple[str, threading.Thread, dict[str, object]]:
    """An env of `user`'s at work on a step sent with a 60 s timeout from a thread: its id, the
    thread, and a dict that gets the response and how long it took."""
    fifo = tmp / f"working-{env}"
    os.mkfifo(fifo)
    with lab.client(user) as c:
        iid = create(c, faulty(env), kwargs={"signal_path": str(fifo)})
        c.post(f"/v1/envs/{iid}/reset/")
    out: dict[str, object] = {}

    def run() -> None:
        with lab.client(user) as c:
            t = time.monotonic()
            out["response"] = c.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "60"})
            out["seconds"] = time.monotonic() - t

    thread = threading.Thread(target=run)
    thread.start()
    fifo.read_text()  # the env is at work on the step now
    return iid, thread, out


def test_admin_kill_of_a_hung_env_ends_its_owners_request_at_once(lab: Lab, tmp_path: Path) -> None:
    iid, thread, out = at_work(lab, tmp_path, "bob", "IgnoresTerm")
    with lab.client("root") as root, lab.client("bob") as bob:
        pid = bob.get(f"/v1/envs/{iid}/").json()["pid"]
        listed = {e["instance_id"]: e for e in root.get("/v1/admin/envs").json()["envs"]}
        assert listed[iid]["owner"] == "bob" and listed[iid]["state"] == "busy"
        killed = root.post(f"/v1/admin/envs/{iid}/kill")
        assert killed.status_code == 200 and killed.json()["state"] == "dead", killed.text
        thread.join(10)
        r = out["response"]
        assert isinstance(r, httpx.Response) and r.status_code == 502
        assert "killed by admin root" in r.json()["message"] and out["seconds"] < 10  # not its 60 s timeout
        assert gone(pid)
        after = bob.post(f"/v1/envs/{iid}/step/", json={"action": 0})
        assert after.status_code == 410 and "was killed by admin root" in after.json()["message"]
        info = bob.get(f"/v1/envs/{iid}/").json()
        assert info["state"] == "dead" and info["cause"] == "was killed by admin root"
        assert bob.post(f"/v1/envs/{iid}/close/").status_code == 204


def test_an_admin_kill_does_not_count_toward_the_crash_loop(lab: Lab) -> None:
    with lab.client("root") as root, lab.client("bob") as bob:
        iid = bob.post("/v1/envs/", json={"env_id": faulty("Exits"), "restart": {"max": 1}}).json()["instance_id"]
        root.post(f"/v1/admin/envs/{iid}/kill")
        assert bob.post(f"/v1/envs/{iid}/reset/").status_code == 410  # no restart follows an admin's kill
        assert bob.post(f"/v1/envs/{iid}/restart").status_code == 200  # its owner brings it back
        bob.post(f"/v1/envs/{iid}/reset/")
        assert bob.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 502  # it exits: a crash
        deadline = time.monotonic() + 20
        while (info := bob.get(f"/v1/envs/{iid}/").json())["restarts"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert info["restarts"] == 2 and info["state"] == "ready", info  # its one restart was still there
        bob.post(f"/v1/envs/{iid}/close/")


def test_admin_kills_every_env_of_one_user(lab: Lab) -> None:
    with lab.client("root") as root, lab.client("alice") as alice, lab.client("bob") as bob:
        hers = {create(alice, "CartPole-v1") for _ in range(2)}
        his = create(bob, "CartPole-v1")
        r = root.post("/v1/admin/users/alice/kill")
        assert r.status_code == 200 and set(r.json()["killed"]) == hers and r.json()["user"] == "alice"
        for iid in hers:
            assert alice.get(f"/v1/envs/{iid}/").json()["state"] == "dead"
            alice.post(f"/v1/envs/{iid}/close/")
        assert bob.get(f"/v1/envs/{his}/").json()["state"] == "ready"
        bob.post(f"/v1/envs/{his}/close/")


def test_an_admin_restarts_any_users_env_past_their_quota(lab: Lab) -> None:
    with lab.client("root") as root, lab.client("quinn") as quinn:  # quinn may run 2 envs
        first, second = create(quinn, "CartPole-v1"), create(quinn, "CartPole-v1")
        root.post(f"/v1/admin/envs/{first}/kill")
        third = create(quinn, "CartPole-v1")
        assert quinn.post(f"/v1/envs/{first}/restart").status_code == 429  # her own would pass her quota
        r = root.post(f"/v1/admin/envs/{first}/restart")
        assert r.status_code == 200 and r.json()["old"]["state"] == "dead", r.text
        info = quinn.get(f"/v1/envs/{first}/").json()
        assert info["state"] == "ready" and info["pid"] == r.json()["new"]["pid"] and info["restarts"] == 1
        assert root.post("/v1/admin/envs/nobody00/restart").status_code == 400
        for iid in (first, second, third):
            quinn.post(f"/v1/envs/{iid}/close/")


@pytest.mark.skipif(os.geteuid() != 0, reason="a uid range needs a server run as root")
def test_healthz_is_503_with_the_reason_while_no_env_can_be_made(tmp_path: Path) -> None:
    from tests.conftest import start_server

    srv = start_server(tmp_path, "--env-uid-range", "61320:1")  # one uid: one env at a time
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, "CartPole-v1")  # takes the only uid
            r = c.get("/healthz")
            assert r.status_code == 503, r.text
            assert "the probe env could not be made or stepped" in r.json()["message"]
            assert "every uid of --env-uid-range" in r.json()["message"]
            c.post(f"/v1/envs/{iid}/close/")
            deadline = time.monotonic() + 10  # the uid comes back once its processes are gone; the answer stands 1 s
            while (r := c.get("/healthz")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert r.status_code == 200 and r.json() == {"status": "ok"}
    finally:
        srv.stop()


def test_admin_views_show_every_user_and_the_totals(lab: Lab) -> None:
    with lab.client("vic") as vic, lab.client("alice") as alice, lab.client("bob") as bob:
        a, b = create(alice, "CartPole-v1"), create(bob, "CartPole-v1")
        alice.post(f"/v1/envs/{a}/reset/")
        alice.post(f"/v1/envs/{a}/step/", json={"action": 0})
        deadline = time.monotonic() + 10  # the watcher reads CPU twice before it has a percent
        while (rows := {e["instance_id"]: e for e in vic.get("/v1/admin/envs").json()["envs"]})[a][
                "cpu_percent"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        row = rows[a]
        assert row["owner"] == "alice" and rows[b]["owner"] == "bob" and row["env_id"] == "CartPole-v1"
        assert row["steps"] == 1 and row["state"] == "ready" and row["pid"] > 0 and row["rss_bytes"] > 0
        assert row["cpu_percent"] >= 0 and row["created"] <= row["last_active"] and row["cause"] is None
        stats = vic.get("/v1/admin/stats").json()
        assert stats["envs_by_user"]["alice"]["ready"] >= 1 and stats["envs_by_user"]["bob"]["ready"] >= 1
        assert stats["server"]["uptime_s"] > 0 and stats["server"]["rss_bytes"] > 0
        assert stats["requests_by_status"]["200"] > 0
        assert "healthz" not in {e["instance_id"] for e in vic.get("/v1/admin/envs").json()["envs"]}
        alice.post(f"/v1/envs/{a}/close/")
        bob.post(f"/v1/envs/{b}/close/")


def test_idle_envs_hold_no_task_or_thread_in_the_api_process(lab: Lab) -> None:
    with lab.client("root") as root, lab.client("alice") as alice:
        before = root.get("/v1/admin/stats").json()["server"]
        made = [create(alice, "CartPole-v1") for _ in range(12)]
        for iid in made:
            alice.post(f"/v1/envs/{iid}/reset/")
        after = root.get("/v1/admin/stats").json()["server"]
        assert after["tasks"] == before["tasks"] and after["threads"] == before["threads"], (before, after)
        for iid in made:
            alice.post(f"/v1/envs/{iid}/close/")


def test_metrics_count_deaths_by_cause_and_requests_by_route_template(lab: Lab) -> None:
    def deaths(text: str) -> dict[str, float]:
        return {m[0]: float(m[1]) for m in re.findall(r'gym_supervisor_env_deaths_total\{cause="(\w+)"\} (\S+)', text)}

    with lab.client("root") as root, lab.client("bob") as bob:
        before = deaths(root.get("/metrics").text)
        crash = create(bob, faulty("Segfaults"))
        bob.post(f"/v1/envs/{crash}/reset/")
        assert bob.post(f"/v1/envs/{crash}/step/", json={"action": 0}).status_code == 502
        slow = create(bob, faulty("Slow"), kwargs={"seconds": 5})
        bob.post(f"/v1/envs/{slow}/reset/")
        assert bob.post(f"/v1/envs/{slow}/step/", json={"action": 0},
                        headers={"X-Request-Timeout": "0.5"}).status_code == 504
        victim, live = create(bob, "CartPole-v1"), create(bob, "CartPole-v1")
        root.post(f"/v1/admin/envs/{victim}/kill")
        text = root.get("/metrics").text
        after = deaths(text)
        for cause in ("crash", "timeout", "admin_kill"):
            assert after[cause] == before[cause] + 1, (cause, before, after)
        assert set(after) == {"crash", "timeout", "memory", "cpu", "node_lost", "admin_kill", "idle", "lifetime", "crash_loop"}
        step = 'method="POST",path="/v1/envs/{instance_id}/step"'
        for status in (502, 504):
            assert re.search(r'gym_supervisor_requests_total\{[^}]*' + re.escape(step) + f',status_code="{status}"', text)
        assert re.search(r'gym_supervisor_envs\{state="dead"\} [1-9]', text)
        assert 'gym_supervisor_user_live_envs{user="bob"} 1.0' in text
        assert "# TYPE gym_supervisor_request_duration_seconds histogram" in text
        for iid in (crash, slow, victim, live):
            assert iid not in text  # route templates, never ids
            bob.post(f"/v1/envs/{iid}/close/")
        assert not any(token in text for token in lab.tokens.values())


def test_healthz_steps_a_probe_env_that_is_listed_nowhere(lab: Lab) -> None:
    r = httpx.get(f"{lab.server.url}/healthz", timeout=30)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    with lab.client("root") as root:
        assert all(e["instance_id"] != "healthz" for e in root.get("/v1/admin/envs").json()["envs"])
        assert root.get("/v1/admin/stats").json()["live_envs"] == sum(
            e["cause"] is None for e in root.get("/v1/admin/envs").json()["envs"])


def test_render_gives_the_frame_as_png_and_remote_env_renders_it(lab: Lab) -> None:
    with lab.client("alice") as alice:
        iid = create(alice, faulty("Image"), kwargs={"render_mode": "rgb_array"})
        alice.post(f"/v1/envs/{iid}/reset/")
        shown = np.asarray(alice.post(f"/v1/envs/{iid}/step/", json={"action": 2}).json()["observation"], np.uint8)
        r = alice.get(f"/v1/envs/{iid}/render")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        frame = decode_png(r.content)
        assert frame.shape == (84, 84, 3) and np.array_equal(frame, shown)  # the env renders its observation
        alice.post(f"/v1/envs/{iid}/close/")
        plain = create(alice, "CartPole-v1")
        alice.post(f"/v1/envs/{plain}/reset/")
        r = alice.get(f"/v1/envs/{plain}/render")
        assert r.status_code == 400 and "render_mode" in r.json()["message"]
        alice.post(f"/v1/envs/{plain}/close/")
    env = RemoteEnv(lab.server.url, faulty("Image"), token=lab.tokens["alice"], render_mode="rgb_array")
    try:
        first, _ = env.reset()
        shown = env.step(3)[0]
        assert np.array_equal(env.render(), shown) and np.array_equal(shown, first + np.uint8(180))
    finally:
        env.close()


def test_the_python_client_sends_its_token_and_names_each_refusal(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.client import Client

    with pytest.raises(NotSignedIn):
        RemoteEnv(lab.server.url, "CartPole-v1")
    monkeypatch.setenv("GYM_SUPERVISOR_TOKEN", lab.tokens["quinn"])  # old scripts pass no token
    envs = [RemoteEnv(lab.server.url, "CartPole-v1") for _ in range(2)]
    try:
        with pytest.raises(QuotaExceeded, match="max_envs = 2"):
            RemoteEnv(lab.server.url, "CartPole-v1")
        with pytest.raises(Forbidden):
            Client(lab.server.url).admin_envs()
    finally:
        for env in envs:
            env.close()


def test_users_file_is_reread_on_sighup(tmp_path: Path) -> None:
    lab = start_lab(tmp_path, people={"alice": ("", ""), "bob": ("", ""), "root": ("--admin", "")})
    try:
        with lab.client("bob") as bob:
            iid = create(bob, "CartPole-v1")
            pid = bob.get(f"/v1/envs/{iid}/").json()["pid"]
        carol, block = make_token("carol")
        kept = [b for b in lab.users_file.read_text().split("\n\n") if 'name = "bob"' not in b]
        lab.users_file.write_text("\n\n".join([*kept, block]))
        lab.server.proc.send_signal(signal.SIGHUP)
        with lab.client("bob") as bob, lab.client(None, token=carol) as c:
            deadline = time.monotonic() + 10
            while bob.get("/v1/envs/").status_code != 401 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert bob.get("/v1/envs/").status_code == 401  # a user removed is refused
            assert gone(pid)  # and their envs are closed
            assert c.get("/v1/envs/").status_code == 200  # a user added is let in
        lab.users_file.write_text('[[users]]\nname = "x"\nrole = "root"\n')
        lab.server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "users_not_reloaded" not in lab.server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert re.search(r"users_not_reloaded file=.* reason=.*key role", lab.server.log.read_text())
        with lab.client(None, token=carol) as c, lab.client("root") as root:
            assert c.get("/v1/envs/").status_code == 200  # the bad file changed nothing
            assert root.post("/v1/shutdown/").status_code == 200
        assert lab.server.proc.wait(15) == 0
    finally:
        lab.server.stop()
    log = lab.server.log.read_text()
    assert not any(token in log for token in [*lab.tokens.values(), carol])
