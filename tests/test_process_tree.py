"""An env's helpers (subprocesses, multiprocessing children, forks) never outlive it."""

import httpx
import pytest

from tests.conftest import create, faulty, gone

pytestmark = pytest.mark.timeout(60)


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
