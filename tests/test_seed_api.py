"""The seed's integration tests, in our words, against a real server over HTTP."""

import time

import httpx
import psutil
import pytest

from tests.conftest import create

pytestmark = pytest.mark.timeout(60)
BOTH_BACKENDS = True  # the v1 API on this machine and on a Ray cluster's nodes


def test_create_lists_and_close_forgets(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    assert len(iid) >= 8
    assert client.get("/v1/envs/").json()["all_envs"][iid] == "CartPole-v1"
    r = client.post(f"/v1/envs/{iid}/close/")
    assert r.status_code == 204 and r.content == b""
    assert iid not in client.get("/v1/envs/").json()["all_envs"]


def test_list_shows_env_id_as_the_client_sent_it(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v0")
    assert client.get("/v1/envs").json()["all_envs"][iid] == "CartPole-v0"
    client.post(f"/v1/envs/{iid}/close")


def test_action_space_discrete(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    r = client.get(f"/v1/envs/{iid}/action_space/")
    assert r.status_code == 200
    assert r.json()["info"] == {"name": "Discrete", "n": 2, "start": 0}


def test_action_space_sample_is_in_range(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    actions = {client.get(f"/v1/envs/{iid}/action_space/sample").json()["action"] for _ in range(20)}
    assert actions <= {0, 1} and actions


def test_action_space_contains(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    member = [client.get(f"/v1/envs/{iid}/action_space/contains/{x}").json()["member"] for x in (0, 1, 2, "a")]
    assert member == [True, True, False, False]


def test_observation_space_box_with_infinities_as_1e100(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    info = client.get(f"/v1/envs/{iid}/observation_space/").json()["info"]
    assert info["name"] == "Box" and info["shape"] == [4] and info["dtype"] == "float32"
    assert len(info["low"]) == len(info["high"]) == 4
    assert info["high"][1] == 1e100 and info["low"][1] == -1e100


def test_observation_space_contains_compares_properties(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    url = f"/v1/envs/{iid}/observation_space/contains"
    assert client.post(url, json={"name": "Box", "shape": [4]}).json() == {"member": True}
    assert client.post(url, json={"name": "Box", "shape": [5]}).json() == {"member": False}
    assert client.post(url, json={"name": "Discrete"}).json() == {"member": False}


def test_reset_returns_observation_and_info(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    body = client.post(f"/v1/envs/{iid}/reset/").json()
    assert len(body["observation"]) == 4 and body["info"] == {}
    lake = create(client, "FrozenLake-v1")
    assert client.post(f"/v1/envs/{lake}/reset/").json()["observation"] == 0


def test_step_types_are_the_seeds(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 0})
    assert r.status_code == 200
    body = r.json()
    assert len(body["observation"]) == 4
    assert type(body["reward"]) is float
    assert type(body["done"]) is bool and body["done"] == (body["terminated"] or body["truncated"])
    assert type(body["info"]) is dict
    lake = create(client, "FrozenLake-v1")
    client.post(f"/v1/envs/{lake}/reset/")
    assert type(client.post(f"/v1/envs/{lake}/step/", json={"action": 0}).json()["observation"]) is int


def test_episode_ends_with_done(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1", kwargs={"max_episode_steps": 5})
    client.post(f"/v1/envs/{iid}/reset/")
    dones = [client.post(f"/v1/envs/{iid}/step/", json={"action": 0}).json()["done"] for _ in range(5)]
    assert dones[-1] is True


def test_same_seed_gives_the_same_trajectory(client: httpx.Client) -> None:
    def run(iid: str) -> list:
        out = [client.post(f"/v1/envs/{iid}/reset/").json()["observation"]]
        for _ in range(10):
            action = client.get(f"/v1/envs/{iid}/action_space/sample").json()["action"]
            out.append((action, client.post(f"/v1/envs/{iid}/step/", json={"action": action}).json()["observation"]))
        return out

    a, b, c = create(client, "CartPole-v1", seed=42), create(client, "CartPole-v1", seed=42), create(client, "CartPole-v1", seed=7)
    assert run(a) == run(b) != run(c)


def test_reset_takes_a_seed(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    first = client.post(f"/v1/envs/{iid}/reset/", json={"seed": 5}).json()
    again = client.post(f"/v1/envs/{iid}/reset/", json={"seed": 5}).json()
    assert first == again


def test_create_seed_is_for_the_first_reset_only(client: httpx.Client) -> None:
    seeded = create(client, "CartPole-v1", seed=3)
    other = create(client, "CartPole-v1")
    explicit = client.post(f"/v1/envs/{seeded}/reset/", json={"seed": 9}).json()
    assert explicit == client.post(f"/v1/envs/{other}/reset/", json={"seed": 9}).json()
    later = client.post(f"/v1/envs/{seeded}/reset/").json()
    same_as_create_seed = client.post(f"/v1/envs/{other}/reset/", json={"seed": 3}).json()
    assert later != same_as_create_seed  # the explicit seed used up create's seed


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "reset/", None),
        ("POST", "step/", {"action": 1}),
        ("GET", "action_space/", None),
        ("GET", "action_space/sample", None),
        ("GET", "action_space/contains/1", None),
        ("GET", "observation_space/", None),
        ("POST", "observation_space/contains", {"name": "Box"}),
        ("POST", "monitor/start/", {"directory": "tmp", "force": True}),
        ("POST", "monitor/close/", None),
        ("POST", "close/", None),
    ],
)
def test_bad_instance_id_is_400_on_every_instance_route(client: httpx.Client, method: str, path: str, body: object) -> None:
    r = client.request(method, f"/v1/envs/bad_id/{path}", json=body)
    assert r.status_code == 400
    assert r.json() == {"message": "Instance_id bad_id unknown"}


@pytest.mark.parametrize("value", [None, "", []])
def test_missing_env_id_is_400_naming_it(client: httpx.Client, value: object) -> None:
    for body in ({}, {"env_id": value}):
        r = client.post("/v1/envs/", json=body)
        assert r.status_code == 400
        assert r.json()["message"] == "A required request parameter 'env_id' was not provided"


def test_missing_action_is_400_naming_it(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    for body in ({}, {"action": None}, {"action": ""}, {"render": True}):
        r = client.post(f"/v1/envs/{iid}/step/", json=body)
        assert r.status_code == 400 and "'action'" in r.json()["message"]


def test_missing_monitor_directory_is_400_naming_it(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    r = client.post(f"/v1/envs/{iid}/monitor/start/", json={"force": True, "resume": False})
    assert r.status_code == 400 and "'directory'" in r.json()["message"]


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({"api_key": "k"}, "training_dir"),
        ({"training_dir": "", "api_key": "k"}, "training_dir"),
        ({"training_dir": "tmp"}, "api_key"),
        ({"training_dir": "tmp", "api_key": ""}, "api_key"),
    ],
)
def test_upload_checks_parameters_like_the_seed(client: httpx.Client, body: dict, missing: str) -> None:
    r = client.post("/v1/upload/", json=body)
    assert r.status_code == 400
    assert r.json()["message"] == f"A required request parameter '{missing}' was not provided"


def test_upload_is_501_since_the_service_is_gone(client: httpx.Client) -> None:
    r = client.post("/v1/upload/", json={"training_dir": "tmp", "api_key": "k", "algorithm_id": None})
    assert r.status_code == 501 and "no longer exists" in r.json()["message"]


@pytest.mark.parametrize(
    ("env_id", "detail"),
    [("bad string", "Malformed environment ID"), ("FrozenLake-v0", "FrozenLake-v1"), ("NoSuchEnv-v3", "doesn't exist")],
)
def test_create_malformed_is_400_in_the_seeds_words(client: httpx.Client, env_id: str, detail: str) -> None:
    before = client.get("/v1/envs/").json()["all_envs"]
    r = client.post("/v1/envs/", json={"env_id": env_id})
    assert r.status_code == 400
    message = r.json()["message"]
    assert message.startswith(f"Attempted to look up malformed environment ID '{env_id}'") and detail in message
    assert client.get("/v1/envs/").json()["all_envs"] == before


def test_step_before_reset_is_400_saying_reset_first(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 0})
    assert r.status_code == 400 and "reset first" in r.json()["message"] and iid in r.json()["message"]


def test_action_outside_the_space_is_400(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    client.post(f"/v1/envs/{iid}/reset/")
    for action in (2, -1, "left", "1", 0.5, True, [0, 1], {"a": 1}):
        r = client.post(f"/v1/envs/{iid}/step/", json={"action": action})
        assert r.status_code == 400 and "action" in r.json()["message"], (action, r.text)
    assert client.post(f"/v1/envs/{iid}/step/", json={"action": 1}).status_code == 200


@pytest.mark.parametrize("action", [1.0, [1]])
def test_a_discrete_action_as_a_whole_float_or_a_one_element_list_is_read_as_its_integer(
    client: httpx.Client, action: object
) -> None:
    """As the seed did (it gave any non-integer to the env as a numpy array): README, step."""
    iid = create(client, "CartPole-v1", seed=3)
    twin = create(client, "CartPole-v1", seed=3)
    for i in (iid, twin):
        client.post(f"/v1/envs/{i}/reset/")
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": action})
    assert r.status_code == 200 and r.json() == client.post(f"/v1/envs/{twin}/step/", json={"action": 1}).json()


def test_kwargs_reach_gymnasium_make(client: httpx.Client) -> None:
    iid = create(client, "Pendulum-v1", kwargs={"g": 3.0, "max_episode_steps": 2})
    client.post(f"/v1/envs/{iid}/reset/")
    bodies = [client.post(f"/v1/envs/{iid}/step/", json={"action": [0.5]}).json() for _ in range(2)]
    assert bodies[-1]["truncated"] is True
    r = client.post("/v1/envs/", json={"env_id": "CartPole-v1", "kwargs": {"no_such_arg": 1}})
    assert r.status_code == 500 and "TypeError" in r.json()["message"]


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    r = client.get("/v1/nothing/here")
    assert r.status_code == 404 and "message" in r.json()


def test_env_info_tells_state_counts_and_usage(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1", kwargs={"max_episode_steps": 3})
    fresh = client.get(f"/v1/envs/{iid}/").json()
    assert fresh["state"] == "ready" and fresh["steps"] == 0 and fresh["episodes"] == 0 and fresh["cause"] is None
    for _ in range(2):
        client.post(f"/v1/envs/{iid}/reset/")
        for _ in range(3):
            client.post(f"/v1/envs/{iid}/step/", json={"action": 0})
    info = client.get(f"/v1/envs/{iid}").json()
    assert info["env_id"] == "CartPole-v1" and info["instance_id"] == iid
    assert info["steps"] == 6 and info["episodes"] == 2
    assert info["created"] <= fresh["last_active"] < info["last_active"]
    deadline = time.monotonic() + 10
    while info["rss_bytes"] is None:  # the watcher's reading: within a round (0.5 s) of the create
        assert time.monotonic() < deadline
        time.sleep(0.05)
        info = client.get(f"/v1/envs/{iid}").json()
    tree = [psutil.Process(info["pid"]), *psutil.Process(info["pid"]).children(recursive=True)]  # env, guardian
    assert 0.5 < info["rss_bytes"] / sum(p.memory_info().rss for p in tree) < 2
    while info["cpu_seconds"] == 0:  # a new env may not have used a clock tick (10 ms) yet: give it work
        assert time.monotonic() < deadline
        for _ in range(50):
            client.post(f"/v1/envs/{iid}/step/", json={"action": 0})
        info = client.get(f"/v1/envs/{iid}").json()
    assert info["cpu_seconds"] > 0
    assert info["limits"]["memory_mb"] > 0
    assert client.get("/v1/envs/nope/").status_code == 400
