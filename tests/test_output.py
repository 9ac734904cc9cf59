"""What envs print is kept (the last lines) for errors and admins; a flood blocks nothing."""

import threading

import httpx
import pytest

from tests.conftest import Server, create, faulty

pytestmark = pytest.mark.timeout(60)
BOTH_BACKENDS = True  # on this machine and on a Ray cluster's nodes


def test_flood_blocks_neither_the_env_nor_the_server(client: httpx.Client, server: Server) -> None:
    iid = create(client, faulty("Floods"))
    client.post(f"/v1/envs/{iid}/reset/")
    other = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{other}/reset/")
    stepped: list[int] = []

    def step_other() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for _ in range(100):
                stepped.append(c.post(f"/v1/envs/{other}/step/", json={"action": 0}).status_code)

    t = threading.Thread(target=step_other)
    log_before = server.log.stat().st_size
    t.start()
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 10}, headers={"X-Request-Timeout": "30"})  # 200 MB
    t.join(30)
    assert r.status_code == 200 and stepped == [200] * 100
    output = client.get(f"/v1/envs/{iid}/").json()["output"]
    assert output[-1] == "flooded 10" and len(output) == 50 and all(len(line) <= 500 for line in output)
    assert server.log.stat().st_size - log_before < 10_000  # none of it reached the server's log


def test_crash_message_quotes_the_last_lines(client: httpx.Client) -> None:
    iid = create(client, faulty("PrintsThenCrashes"))
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 0})
    assert r.status_code == 502
    assert r.json()["message"].endswith("its last output: line 96 | line 97 | line 98 | line 99 | about to crash")
    info = client.get(f"/v1/envs/{iid}/").json()
    assert info["state"] == "dead" and info["output"][-1] == "about to crash" and info["output"][0] == "line 51"
