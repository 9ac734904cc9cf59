"""What one client can make the server hold is bounded: slow, huge or numerous requests are
answered 408, 431 or 503, in JSON, and cut off, while other clients are served."""

import json
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
        sock.settimeout(0.3)
        try:
            for byte in b"GET /v1/envs/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
                sock.sendall(bytes([byte]))
                try:
                    if sock.recv(65536, socket.MSG_PEEK):
                        break  # answered
                except TimeoutError:
                    pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(15)
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


def test_bodies_in_flight_past_their_share_are_503(guarded: Server) -> None:
    """Forty clients announcing 9 MB bodies took the server to 1.2 GB: together, bodies in
    flight may announce 160 MB; a request past that is refused before its body is read."""
    announcing = []
    try:
        for _ in range(16):
            sock = connect(guarded)
            sock.sendall(b"POST /v1/envs/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
            announcing.append(sock)
        deadline = time.monotonic() + 10
        while True:  # once the server has taken in their heads (they wait for their bodies)
            with connect(guarded) as extra:
                extra.sendall(b"POST /v1/envs/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
                status, body, _ = answer(extra)
            if status == 503 or time.monotonic() > deadline:
                break
        assert status == 503 and "too many request bodies" in body["message"]
    finally:
        for sock in announcing:
            sock.close()
    still_serves(guarded)
