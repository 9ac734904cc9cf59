"""WS /v1/envs/{id}/session: requests over one WebSocket, answered in order as HTTP would answer
them; a dead env ends the session with its status; a client that does not read holds little."""

import os
import threading
import time
from pathlib import Path

import gymnasium as gym
import httpx
import msgspec
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from api.client import EnvCrashed, EnvTimeout, RemoteEnv
from envproc.wire import arrays, encode_msgpack
from tests.conftest import Server, create, faulty, gone, start_server
from tests.lab import Lab, lab_fixture

pytestmark = pytest.mark.timeout(60)

lab = lab_fixture("--allow-module", "tests.faulty_envs")


def ws_url(server: Server, iid: str, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + f"/v1/envs/{iid}/session{query}"


def ask(ws: ClientConnection, message: dict) -> dict:
    ws.send(msgspec.json.encode(message).decode())
    return msgspec.json.decode(ws.recv(timeout=30))


def closed_with(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=30)
    assert ws.close_code is not None
    return ws.close_code


def test_reset_step_and_sample_answer_as_http_and_in_order_when_pipelined(server: Server, client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    local = gym.make("CartPole-v1")
    with connect(ws_url(server, iid)) as ws:
        reset = ask(ws, {"op": "reset", "seed": 4})
        assert reset["status"] == 200 and np.allclose(reset["observation"], local.reset(seed=4)[0])
        sample = ask(ws, {"op": "sample"})
        assert sample["status"] == 200 and sample["action"] in (0, 1)
        actions = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0]
        for a in actions:  # all sent before any answer is read
            ws.send(msgspec.json.encode({"op": "step", "action": a}).decode())
        for a in actions:
            step = msgspec.json.decode(ws.recv(timeout=30))
            obs, reward, terminated, truncated, _ = local.step(a)
            assert step["status"] == 200 and np.allclose(step["observation"], obs)
            assert (step["reward"], step["terminated"], step["truncated"]) == (reward, terminated, truncated)
    assert client.get(f"/v1/envs/{iid}/").json()["steps"] == len(actions)
    client.post(f"/v1/envs/{iid}/close/")


def test_a_bad_message_is_answered_and_the_session_goes_on(server: Server, client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    with connect(ws_url(server, iid)) as ws:
        early = ask(ws, {"op": "step", "action": 1})
        assert early["status"] == 400 and "Cannot call env.step() before calling env.reset()" in early["message"]
        assert ask(ws, {"op": "jump"}) == {"status": 400, "message": "op 'jump' is not one of step, reset, sample"}
        ws.send("{not json")
        assert msgspec.json.decode(ws.recv(timeout=30))["status"] == 400
        assert ask(ws, {"op": "reset", "seed": -1})["message"].startswith("Invalid request parameter")
        assert ask(ws, {"op": "reset"})["status"] == 200
        assert "action 5 is outside Discrete(2)" in ask(ws, {"op": "step", "action": 5})["message"]
        assert "'action' was not provided" in ask(ws, {"op": "step"})["message"]
        assert ask(ws, {"op": "step", "action": 0})["status"] == 200
    client.post(f"/v1/envs/{iid}/close/")


def test_binary_frames_carry_msgpack_with_arrays_as_raw_bytes(server: Server, client: httpx.Client) -> None:
    iid = create(client, "tests.faulty_envs:Image-v0", seed=9)
    with connect(ws_url(server, iid)) as ws:
        ws.send(encode_msgpack({"op": "reset"}))
        raw = ws.recv(timeout=30)
        assert isinstance(raw, bytes)
        obs = arrays(msgspec.msgpack.decode(raw))["observation"]
        assert obs.dtype == np.uint8 and obs.shape == (84, 84, 3)
        assert np.array_equal(obs, gym.make("tests.faulty_envs:Image-v0").reset(seed=9)[0])
        ws.send(encode_msgpack({"op": "step", "action": np.int64(2)}))
        step = arrays(msgspec.msgpack.decode(ws.recv(timeout=30)))
        assert step["status"] == 200 and np.array_equal(step["observation"], obs + np.uint8(120))
    client.post(f"/v1/envs/{iid}/close/")


def test_a_crash_ends_the_session_with_its_status_and_cause(server: Server, client: httpx.Client) -> None:
    iid = create(client, faulty("Segfaults"))
    client.post(f"/v1/envs/{iid}/reset/")
    with connect(ws_url(server, iid)) as ws:
        ws.send(msgspec.json.encode({"op": "step", "action": 0}).decode())
        ws.send(msgspec.json.encode({"op": "step", "action": 0}).decode())  # never answered: the env is dead
        final = msgspec.json.decode(ws.recv(timeout=30))
        assert final["status"] == 502 and "SIGSEGV" in final["message"]
        assert closed_with(ws) == 4502
    assert client.post(f"/v1/envs/{iid}/reset/").status_code == 410
    client.post(f"/v1/envs/{iid}/close/")


def test_an_env_error_is_answered_and_a_close_ends_the_session(server: Server, client: httpx.Client) -> None:
    iid = create(client, faulty("Raises"))
    with connect(ws_url(server, iid)) as ws:
        assert ask(ws, {"op": "reset"})["status"] == 200
        raised = ask(ws, {"op": "step", "action": 3})
        assert raised["status"] == 500 and "ValueError: bad luck with action 3" in raised["message"]
        assert ask(ws, {"op": "sample"})["status"] == 200  # the env lives on, and so does the session
        assert client.post(f"/v1/envs/{iid}/close/").status_code == 204
        final = ask(ws, {"op": "sample"})
        assert final["status"] == 400 and "unknown" in final["message"]
        assert closed_with(ws) == 4400


def test_a_timeout_kills_the_hung_env_while_an_http_request_waits_for_it(server: Server, client: httpx.Client,
                                                                         tmp_path: Path) -> None:
    fifo = tmp_path / "working"
    os.mkfifo(fifo)
    iid = create(client, faulty("Slow"), kwargs={"signal_path": str(fifo), "seconds": 30})
    client.post(f"/v1/envs/{iid}/reset/")
    with connect(ws_url(server, iid, "?timeout=2")) as ws:
        ws.send(msgspec.json.encode({"op": "step", "action": 0}).decode())
        fifo.read_text()  # the env is at work on the session's step
        waiting = client.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "0.5"})
        assert waiting.status_code == 504 and "not run" in waiting.json()["message"]  # it waited its turn, in vain
        final = msgspec.json.decode(ws.recv(timeout=30))
        assert final["status"] == 504 and "2 s" in final["message"]
        assert closed_with(ws) == 4504
    assert client.post(f"/v1/envs/{iid}/reset/").status_code == 410
    client.post(f"/v1/envs/{iid}/close/")


def test_a_session_is_refused_before_the_upgrade_as_http_would_refuse(lab: Lab) -> None:
    with lab.client("alice") as alice:
        mine = create(alice, "CartPole-v1")
    url = ws_url(lab.server, mine)
    for make, status in [(lambda: connect(url), 401),  # no token
                         (lambda: connect(url + "?token=wrong"), 401),
                         (lambda: connect(url, additional_headers={"Authorization": f"Bearer {lab.tokens['bob']}"}),
                          400),  # bob cannot see alice's env: as if it did not exist
                         (lambda: connect(ws_url(lab.server, "nosuchid", f"?token={lab.tokens['alice']}")), 400),
                         (lambda: connect(url + f"?token={lab.tokens['alice']}&timeout=nan"), 400)]:
        with pytest.raises(InvalidStatus) as refused:
            make()
        response = refused.value.response
        assert response.status_code == status and msgspec.json.decode(response.body)["message"]
    assert refused.value.response.headers.get("content-type") == "application/json"
    with connect(url + f"?token={lab.tokens['alice']}") as ws:  # in the query, as a browser must send it
        assert ask(ws, {"op": "reset"})["status"] == 200
    with connect(url, additional_headers={"Authorization": f"Bearer {lab.tokens['alice']}"}) as ws:
        assert ask(ws, {"op": "step", "action": 0})["status"] == 200


def test_the_session_timeout_is_capped_as_the_header_is(lab: Lab) -> None:
    with lab.client("quinn") as quinn:  # max_step_timeout = 1
        iid = create(quinn, faulty("Slow"), kwargs={"seconds": 5})
        quinn.post(f"/v1/envs/{iid}/reset/")
    started = time.monotonic()
    with connect(ws_url(lab.server, iid, f"?token={lab.tokens['quinn']}&timeout=60")) as ws:
        assert ask(ws, {"op": "step", "action": 0})["status"] == 504
    assert time.monotonic() - started < 4


def test_a_client_that_never_reads_holds_only_a_few_answers(server: Server, client: httpx.Client) -> None:
    big = create(client, "tests.faulty_envs:Image-v0", kwargs={"shape": [210, 160, 3]})
    client.post(f"/v1/envs/{big}/reset/")
    with connect(ws_url(server, big), max_size=None, close_timeout=1) as ws:  # it reads nothing: no close handshake
        for _ in range(400):  # each answer is about 300 kB of JSON: 120 MB if all were written
            ws.send('{"op":"step","action":1}')
        settled, last = 0, -1
        deadline = time.monotonic() + 30
        while settled < 10 and time.monotonic() < deadline:  # until its step count stops growing
            steps = client.get(f"/v1/envs/{big}/").json()["steps"]
            settled, last = (settled + 1, last) if steps == last else (0, steps)
            time.sleep(0.1)
        assert settled == 10 and last < 200, last  # the server stopped taking steps it cannot send
        other = create(client, "CartPole-v1")
        assert client.post(f"/v1/envs/{other}/reset/").status_code == 200  # and serves everyone else
        client.post(f"/v1/envs/{other}/close/")
    client.post(f"/v1/envs/{big}/close/")


@pytest.mark.parametrize("msgpack", [True, False])
def test_remote_env_over_a_session_matches_http(server: Server, msgpack: bool) -> None:
    over_ws = RemoteEnv(server.url, "tests.faulty_envs:Structured-v0", msgpack=msgpack, transport="websocket")
    over_http = RemoteEnv(server.url, "tests.faulty_envs:Structured-v0", msgpack=msgpack)
    try:
        a, b = over_ws.reset(seed=3)[0], over_http.reset(seed=3)[0]
        over_http.action_space.seed(1)
        for _ in range(3):
            action = over_http.action_space.sample()
            a, b = over_ws.step(action)[0], over_http.step(action)[0]
            assert np.array_equal(a["echo"]["move"], b["echo"]["move"]) and a["echo"]["move"].dtype == b["echo"]["move"].dtype
            assert np.array_equal(a["echo"]["aim"][1], b["echo"]["aim"][1]) and a["note"] == b["note"]
    finally:
        over_ws.close()
        over_http.close()
    crash = RemoteEnv(server.url, faulty("Segfaults"), transport="websocket")
    try:
        crash.reset()
        with pytest.raises(EnvCrashed, match="SIGSEGV"):
            crash.step(0)
    finally:
        crash.close()
    slow = RemoteEnv(server.url, faulty("Slow"), timeout=0.5, transport="websocket", seconds=5)
    try:
        slow.reset()
        with pytest.raises(EnvTimeout):
            slow.step(0)
    finally:
        slow.close()


def test_a_stop_with_a_session_at_work_takes_the_grace_and_leaves_nothing(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--shutdown-grace", "1")
    fifo = tmp_path / "working"
    os.mkfifo(fifo)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            iid = create(c, faulty("IgnoresTerm"), kwargs={"signal_path": str(fifo)})
            c.post(f"/v1/envs/{iid}/reset/")
        with connect(ws_url(srv, iid)) as ws:
            got: list[object] = []
            reader = threading.Thread(target=lambda: got.append(_final(ws)))
            ws.send('{"op":"step","action":0}')
            reader.start()
            fifo.read_text()
            pids = srv.descendants()
            started = time.monotonic()
            srv.proc.terminate()
            assert srv.proc.wait(15) == 0 and time.monotonic() - started < 4
            reader.join(10)
            # not left hanging: closed as a server going away closes (1012), or answered 503
            assert len(got) == 1, got
            final = got[0]
            assert (isinstance(final, ConnectionClosed) and final.rcvd is not None and final.rcvd.code == 1012) or (
                msgspec.json.decode(final)["status"] == 503), final
        assert all(gone(p) for p in pids)
    finally:
        srv.stop()


def _final(ws: ClientConnection) -> object:
    try:
        return ws.recv(timeout=20)
    except ConnectionClosed as exc:
        return exc
