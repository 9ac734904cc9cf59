"""Requests as old clients in other languages send them: each must work."""

import http.client
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import FAULTY, Server, create

pytestmark = pytest.mark.timeout(60)

ODD_BODIES = [
    (b"", {}),
    (b'""', {"Content-Type": "application/json"}),
    (b"null", {"Content-Type": "application/json"}),
    (b"", {"Content-Type": "application/x-www-form-urlencoded"}),
    (b"whatever", {"Content-Type": "text/plain"}),
    (b"{}", {}),
]


@pytest.mark.parametrize(("body", "headers"), ODD_BODIES)
def test_reset_close_and_monitor_close_ignore_their_body(client: httpx.Client, body: bytes, headers: dict) -> None:
    iid = create(client, "CartPole-v1")
    r = client.post(f"/v1/envs/{iid}/reset/", content=body, headers=headers)
    assert r.status_code == 200 and len(r.json()["observation"]) == 4
    assert client.post(f"/v1/envs/{iid}/monitor/close/", content=body, headers=headers).status_code == 204
    assert client.post(f"/v1/envs/{iid}/close/", content=body, headers=headers).status_code == 204


def test_json_without_content_type_is_read(client: httpx.Client) -> None:
    r = client.post("/v1/envs/", content=b'{"env_id": "CartPole-v1"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 200 and "instance_id" in r.json()


def test_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    r = client.post("/v1/envs/", content=b"env_id=CartPole-v1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json() == {"message": "Request is not a valid json"}
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{iid}/step/", content=b"{action: 1")
    assert r.status_code == 400 and r.json() == {"message": "Request is not a valid json"}


def test_unknown_keys_are_ignored(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1", colour="blue")
    client.post(f"/v1/envs/{iid}/reset/", json={"please": True})
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 1, "render": False, "extra": [1]}).status_code == 200


@pytest.mark.parametrize("flag", [True, False, "true", "false"])
def test_force_and_resume_take_booleans_and_strings(client: httpx.Client, flag: object) -> None:
    iid = create(client, "CartPole-v1")
    r = client.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": f"odd-{iid}", "force": flag, "resume": flag})
    assert r.status_code == 204, r.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/envs", {"env_id": "CartPole-v1"}, 200),
        ("GET", "/v1/envs", None, 200),
        ("POST", "/v1/envs/{id}/reset", None, 200),
        ("POST", "/v1/envs/{id}/step", {"action": 0}, 200),
        ("GET", "/v1/envs/{id}/action_space", None, 200),
        ("GET", "/v1/envs/{id}/observation_space", None, 200),
        ("GET", "/v1/envs/{id}/action_space/sample", None, 200),
        ("GET", "/v1/envs/{id}/action_space/contains/1", None, 200),
        ("POST", "/v1/envs/{id}/observation_space/contains", {"name": "Box"}, 200),
        ("POST", "/v1/envs/{id}/monitor/start", {"directory": "slashes", "force": True}, 204),
        ("POST", "/v1/envs/{id}/monitor/close", None, 204),
        ("POST", "/v1/upload", {"training_dir": "x"}, 400),
        ("POST", "/v1/envs/{id}/close", None, 204),
    ],
)
@pytest.mark.parametrize("slash", ["", "/"])
def test_every_path_answers_with_and_without_slash(
    client: httpx.Client, method: str, path: str, body: object, status: int, slash: str
) -> None:
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.request(method, path.format(id=iid) + slash, json=body)
    assert r.status_code == status, r.text  # answered directly: httpx follows no redirect by default


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
def test_keep_alive_and_connection_close(server: Server, connection: str) -> None:
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("POST", "/v1/envs/", body=json.dumps({"env_id": "CartPole-v1"}), headers={"Connection": connection})
            r = conn.getresponse()
            assert r.status == 200 and "instance_id" in json.loads(r.read())
            if connection == "close":
                assert r.getheader("connection") == "close"
                conn.close()
    finally:
        conn.close()


def test_wrong_method_is_json_405(client: httpx.Client) -> None:
    r = client.get("/v1/upload/")
    assert r.status_code == 405 and "GET" in r.json()["message"]


@pytest.mark.parametrize("route", ["step/", "reset/"])
def test_body_over_the_limit_is_413(client: httpx.Client, route: str) -> None:
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{iid}/{route}", content=b'{"action": 1, "pad": "' + b"x" * 10_000_001 + b'"}')
    assert r.status_code == 413 and "message" in r.json()
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 1}).status_code == 200


DEEP = b"[" * 1500 + b"]" * 1500


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "", b'{"env_id": "CartPole-v1", "kwargs": {"x": ' + DEEP + b"}}"),
    ("POST", "{iid}/reset/", b'{"options": ' + DEEP + b"}"),
    ("POST", "{iid}/step/", b'{"action": ' + DEEP + b"}"),
    ("POST", "{iid}/observation_space/contains", b'{"shape": ' + DEEP + b"}"),
    ("POST", "", b'{"env_id": "CartPole-v1", "seed": -1}'),
    ("POST", "{iid}/reset/", b'{"seed": -1}'),
])
def test_deep_or_out_of_range_input_is_400_not_500(client: httpx.Client, method: str, path: str, body: bytes) -> None:
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.request(method, f"/v1/envs/{path.format(iid=iid)}", content=body)
    assert r.status_code == 400, r.text
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 200  # and the env lives


def test_a_huge_number_as_a_box_action_is_400(client: httpx.Client) -> None:
    iid = create(client, "Pendulum-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{iid}/step/", content=b'{"action": [1' + b"0" * 400 + b"]}")
    assert r.status_code == 400 and "action" in r.json()["message"], r.text


def test_a_deep_url_value_for_contains_is_just_not_a_member(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    r = client.get(f"/v1/envs/{iid}/action_space/contains/{'[' * 1200}")
    assert r.status_code == 200 and r.json() == {"member": False}


def test_an_env_id_cannot_forge_a_log_line(client: httpx.Client, server: Server) -> None:
    forged = "CartPole-v1\n2026-01-01 00:00:00,000 WARNING gym_supervisor.env env_dead instance=forged"
    client.post("/v1/envs/", json={"env_id": forged})
    client.post("/v1/envs/", json={"env_id": f"{FAULTY}:RaisesInInit-v0\ninstance=forged"})
    assert not [line for line in server.log.read_text().splitlines() if line.startswith("2026-01-01")]
    assert "instance=forged" not in [part for line in server.log.read_text().splitlines() for part in line.split()[:5]]


def test_a_step_whose_body_is_cut_short_never_reaches_the_env(server: Server, client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    u = urlsplit(server.url)
    with socket.create_connection((u.hostname, u.port)) as sock:
        sock.sendall(f"POST /v1/envs/{iid}/step/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
                     + b'{"action": 0}')  # a JSON whole in itself, but 13 of the 1000 bytes it announced
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # give a server that would step it the time to
        assert client.get(f"/v1/envs/{iid}/").json()["steps"] == 0
        time.sleep(0.1)
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 0}).status_code == 200
    assert client.get(f"/v1/envs/{iid}/").json()["steps"] == 1


@pytest.mark.parametrize(("path", "body"), [
    ("{iid}/reset/", {"seed": 10**30}),
    ("{iid}/reset/", {"options": {"x": 10**30}}),
    ("{iid}/monitor/start/", {"directory": "big", "video_callable": 10**30}),
    ("", {"env_id": "CartPole-v1", "kwargs": {"x": 10**30}}),
])
def test_a_number_too_big_to_send_is_400_and_leaves_the_env_usable(client: httpx.Client, path: str, body: dict) -> None:
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{path.format(iid=iid)}", json=body, headers={"X-Request-Timeout": "5"})
    assert r.status_code == 400, r.text
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "5"}).status_code == 200
