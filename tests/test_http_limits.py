"""What one client can make the server hold is bounded: slow, huge or numerous requests are
answered 408, 431 or 503, in JSON, and cut off, while other clients are served."""

import json
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, start_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("guarded"), "--read-timeout", "1", "--max-connections", "40")
    try:
        yield srv
    finally:
        srv.stop()


def connect(srv: Server) -> socket.socket:
    host, port = srv.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict, float]:
    """The status and JSON body the server sent before closing, and when it closed."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), time.monotonic()


def trickle(sock: socket.socket, data: bytes, pause: float) -> None:
    """Send a byte at a time, `pause` seconds apart, until the server answers (or all is sent)."""
    sock.settimeout(pause)
    try:
        for byte in data:
            sock.sendall(bytes([byte]))
            try:
                if sock.recv(65536, socket.MSG_PEEK):
                    break  # answered
            except TimeoutError:
                pass
    except (BrokenPipeError, ConnectionResetError):
        pass  # cut off: the answer is still in the socket
    sock.settimeout(15)


def still_serves(srv: Server) -> None:
    assert httpx.get(f"{srv.url}/v1/envs/", timeout=10).status_code == 200


def test_a_connection_that_never_speaks_is_closed(guarded: Server) -> None:
    with connect(guarded) as sock:
        start = time.monotonic()
        assert sock.recv(100) == b""  # closed, with nothing to answer
        assert 0.5 < time.monotonic() - start < 10
    still_serves(guarded)


def test_a_head_sent_a_byte_at_a_time_is_408(guarded: Server) -> None:
    """Slowloris: each byte keeps a naive server waiting for the next."""
    with connect(guarded) as sock:
        start = time.monotonic()
        trickle(sock, b"GET /v1/envs/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100, 0.3)
        status, body, end = answer(sock)
        assert status == 408 and "--read-timeout" in body["message"]
        assert end - start < 10
    still_serves(guarded)


def test_a_body_left_unsent_is_408(guarded: Server) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"POST /v1/envs/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"env_id\":")
        status, body, _ = answer(sock)
        assert status == 408 and "--read-timeout" in body["message"]
    assert httpx.get(f"{guarded.url}/v1/envs/").json()["all_envs"] == {}


@pytest.mark.parametrize(("headers", "says"), [
    (b"X-Big: " + b"z" * 40_000 + b"\r\n", "32,768 bytes"),  # a big head that comes whole
    (b"X-Endless: " + b"z" * 300_000, "32,768 bytes"),  # 200 MB were once buffered: one that never ends
    (b"".join(b"X-%d: 1\r\n" % i for i in range(150)), "151 headers"),  # and Host
])
def test_a_head_too_big_is_431(guarded: Server, headers: bytes, says: str) -> None:
    with connect(guarded) as sock:
        try:
            end = b"" if headers.startswith(b"X-Endless") else b"\r\n"
            sock.sendall(b"GET /v1/envs/ HTTP/1.1\r\nHost: x\r\n" + headers + end)
        except (BrokenPipeError, ConnectionResetError):
            pass  # cut off while it sent: the answer is still in the socket
        status, body, _ = answer(sock)
        assert status == 431 and says in body["message"]
    still_serves(guarded)


def test_connections_past_the_cap_are_503(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--max-connections", "3", "--read-timeout", "30")
    held = [connect(srv) for _ in range(3)]
    try:
        with connect(srv) as extra:
            status, body, _ = answer(extra)
            assert status == 503 and "limit of 3 connections" in body["message"]
    finally:
        for sock in held:
            sock.close()
        still_serves(srv)
        srv.stop()


def test_body_bytes_held_past_their_share_are_503(tmp_path: Path) -> None:
    """Forty clients sending 9 MB bodies took the server to 1.2 GB: together, the bodies of
    requests not yet answered may hold 160 MB; the request that passes it is refused and cut off."""
    srv = start_server(tmp_path, "--read-timeout", "30")
    head = b"POST /v1/envs/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
    socks = []
    try:
        for _ in range(17):  # 17 x 9.99 MB, none of them whole: the server holds what came
            sock = connect(srv)
            sock.sendall(head + b"x" * 9_990_000)
            socks.append(sock)
        answered = select.select(socks, [], [], 10)[0]
        refusals = [answer(sock) for sock in answered]
        assert refusals and all(status == 503 and "too many request bodies" in body["message"]
                                for status, body, _ in refusals), refusals
        assert len(refusals) <= 2  # only those that passed the share, not everyone after
        still_serves(srv)
    finally:
        for sock in socks:
            sock.close()
        srv.stop()


def test_a_body_trickled_past_its_due_time_is_408(guarded: Server) -> None:
    """A byte now and then keeps a body from pausing, not from being late: with --read-timeout 1,
    a body must be whole 6 s after its head."""
    with connect(guarded) as sock:
        sock.sendall(b"POST /v1/envs/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        start = time.monotonic()
        trickle(sock, b" " * 40, 0.5)
        status, body, end = answer(sock)
        assert status == 408 and "not sent within 6 s" in body["message"], body
        assert 5 < end - start < 15


def test_pipelined_requests_are_not_cut_off_while_the_server_works(guarded: Server) -> None:
    """A client may send its next request before the answer to a slow one: it is not late."""
    with httpx.Client(base_url=guarded.url, timeout=30) as c:
        iid = c.post("/v1/envs/", json={"env_id": "tests.faulty_envs:Slow-v0", "kwargs": {"seconds": 3}}).json()
        c.post(f"/v1/envs/{iid['instance_id']}/reset/")
    with connect(guarded) as sock:
        step, create = b'{"action": 0}', b'{"env_id": "CartPole-v1"}'
        sock.sendall(b"POST /v1/envs/%s/step/ HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (iid["instance_id"].encode(), len(step), step)
                     + b"POST /v1/envs/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                     % len(create) + create[:10])
        time.sleep(0.3)  # the rest of the second body comes while the server works on the first (3 s)
        sock.sendall(create[10:])
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3})", data) == [b"200", b"200"], data[:400]  # no 408 between them


def test_pipelined_bodies_leave_nothing_held(guarded: Server) -> None:
    chunked = b"POST /v1/envs/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    for _ in range(4):
        with connect(guarded) as sock:
            sock.sendall(chunked * 5)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    r = httpx.post(f"{guarded.url}/v1/envs/", json={"env_id": "CartPole-v1"}, timeout=30)
    assert r.status_code == 200, r.text


def test_a_slow_head_after_an_answered_request_is_408_too(guarded: Server) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"GET /v1/envs/ HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"}}" not in first:
            first += sock.recv(65536)
        sock.sendall(b"GET /v1/envs/ HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        status, body, _ = answer(sock)
        assert status == 408 and "--read-timeout" in body["message"]
