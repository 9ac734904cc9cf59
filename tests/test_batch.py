"""POST /v1/batch/step: the caller's envs stepped at once, each entry answered as the step route
would answer it, a faulty env failing its own entry only."""

import time

import gymnasium as gym
import httpx
import numpy as np
import pytest

from api.client import RemoteVectorEnv
from tests.conftest import Server, create, faulty
from tests.lab import Lab, lab_fixture

pytestmark = pytest.mark.timeout(60)

lab = lab_fixture("--allow-module", "tests.faulty_envs")


def batch(c: httpx.Client, steps: list[tuple[str, object]], **extra: object) -> list[dict]:
    r = c.post("/v1/batch/step", json={"steps": [{"instance_id": i, "action": a} for i, a in steps], **extra})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_each_entry_is_answered_as_the_step_route_would_and_in_order(client: httpx.Client) -> None:
    a, b = create(client, "CartPole-v1", seed=1), create(client, "CartPole-v1", seed=2)
    crash, plain = create(client, faulty("Segfaults")), create(client, "CartPole-v1", seed=1)
    for iid in (a, b, crash, plain):
        client.post(f"/v1/envs/{iid}/reset/")
    results = batch(client, [(a, 1), (b, 0), (crash, 0), ("nosuchid", 0)])
    assert [r["status"] for r in results] == [200, 200, 502, 400]
    alone = client.post(f"/v1/envs/{plain}/step/", json={"action": 1}).json()
    assert {k: v for k, v in results[0].items() if k != "status"} == alone  # same seed, same step, same reply
    assert "killed by SIGSEGV" in results[2]["message"] and results[3]["message"] == "Instance_id nosuchid unknown"
    again = batch(client, [(crash, 0), (b, 9)])
    assert again[0]["status"] == 410 and again[1]["status"] == 400  # dead; an action out of range
    assert client.get(f"/v1/envs/{a}/").json()["steps"] == 1
    assert batch(client, []) == []
    for iid in (a, b, crash, plain):
        client.post(f"/v1/envs/{iid}/close/")


def test_autoreset_resets_an_env_at_the_step_after_its_episode_ended(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1", seed=3, kwargs={"max_episode_steps": 2})
    first = client.post(f"/v1/envs/{iid}/reset/").json()["observation"]
    steps = [batch(client, [(iid, 0)], autoreset=True)[0] for _ in range(4)]
    assert [(s["done"], s["truncated"]) for s in steps] == [(False, False), (True, True), (False, False), (False, False)]
    assert steps[2]["reward"] == 0.0 and steps[2]["observation"] != first  # the reset's, unseeded: a new episode
    without = create(client, "CartPole-v1", kwargs={"max_episode_steps": 1})
    client.post(f"/v1/envs/{without}/reset/")
    assert batch(client, [(without, 0)])[0]["done"] is True
    assert batch(client, [(without, 0)])[0]["status"] == 200  # no autoreset: stepped on, as the step route does
    for i in (iid, without):
        client.post(f"/v1/envs/{i}/close/")


def test_a_slow_env_times_out_its_own_entry_only(client: httpx.Client) -> None:
    slow, quick = create(client, faulty("Slow"), kwargs={"seconds": 5}), create(client, "CartPole-v1")
    for iid in (slow, quick):
        client.post(f"/v1/envs/{iid}/reset/")
    t = time.monotonic()
    r = client.post("/v1/batch/step", json={"steps": [{"instance_id": slow, "action": 0},
                                                      {"instance_id": quick, "action": 0}]},
                    headers={"X-Request-Timeout": "1"})
    results = r.json()["results"]
    assert [x["status"] for x in results] == [504, 200] and time.monotonic() - t < 4
    for iid in (slow, quick):
        client.post(f"/v1/envs/{iid}/close/")


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "Request is not a valid json"),
    (b'{"steps": [{"instance_id": "x"}]}', "missing required field `action`"),
    (b'{"steps": 3}', "Expected `array`"),
    (b'{"steps": [{"instance_id": "x", "action": 0}, {"instance_id": "x", "action": 1}]}', "named twice"),
    (b'{"steps": [' + b",".join([b'{"instance_id": "x", "action": 0}'] * 1025) + b"]}", "at most 1024 steps"),
])
def test_a_bad_batch_is_400(client: httpx.Client, body: bytes, reason: str) -> None:
    r = client.post("/v1/batch/step", content=body)
    assert r.status_code == 400 and reason in r.json()["message"], r.text


def test_a_batch_steps_only_the_callers_envs(lab: Lab) -> None:
    with lab.client("alice") as alice, lab.client("bob") as bob, lab.client(None) as anyone:
        hers = create(alice, "CartPole-v1")
        alice.post(f"/v1/envs/{hers}/reset/")
        assert batch(bob, [(hers, 0)]) == [{"status": 400, "message": f"Instance_id {hers} unknown"}]
        assert batch(alice, [(hers, 0)])[0]["status"] == 200
        assert alice.get(f"/v1/envs/{hers}/").json()["steps"] == 1
        assert anyone.post("/v1/batch/step", json={"steps": []}).status_code == 401
        alice.post(f"/v1/envs/{hers}/close/")


def test_remote_vector_env_steps_in_batches_as_sync_vector_env_does(server: Server) -> None:
    remote = RemoteVectorEnv(server.url, "CartPole-v1", num_envs=3, max_episode_steps=5)
    local = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=5) for _ in range(3)])
    try:
        for o, l in zip(remote.reset(seed=11), local.reset(seed=11)):
            assert np.array_equal(o, l) if isinstance(o, np.ndarray) else True
        for t in range(12):  # past two episode ends: the server's autoreset is Gymnasium's
            actions = np.array([t % 2, 1, 0])
            got, want = remote.step(actions), local.step(actions)
            for g, w in zip(got[:4], want[:4]):
                assert np.array_equal(g, w), t
        assert remote._batches  # it did step through the batch route
    finally:
        remote.close()
        local.close()
