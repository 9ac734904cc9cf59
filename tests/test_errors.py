"""Errors say what happened, to which env, and what to do next."""

import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import COMMAND, ROOT, create

pytestmark = pytest.mark.timeout(60)

WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def test_a_closed_id_is_unknown_in_the_seeds_words_and_says_when_it_was_closed(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    assert client.post(f"/v1/envs/{iid}/close/").status_code == 204
    for r in (client.post(f"/v1/envs/{iid}/reset/"), client.post(f"/v1/envs/{iid}/step/", json={"action": 0}),
              client.post(f"/v1/envs/{iid}/close/")):
        assert r.status_code == 400
        assert re.fullmatch(f"Instance_id {iid} unknown: it was closed at {WHEN}; create a new one",
                            r.json()["message"]), r.text


def test_an_id_never_created_is_unknown_in_the_seeds_exact_words(client: httpx.Client) -> None:
    r = client.post("/v1/envs/0123abcd/reset/")
    assert r.status_code == 400 and r.json() == {"message": "Instance_id 0123abcd unknown"}


def test_a_port_in_use_is_told_plainly_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([COMMAND, "serve", "--port", str(port)], cwd=ROOT, capture_output=True, text=True,
                             timeout=30)
    assert out.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr and "--port" in out.stderr
    assert "Traceback" not in out.stderr
