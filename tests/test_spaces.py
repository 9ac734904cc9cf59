"""Every Gymnasium space described and converted both ways, in-process and over HTTP."""

import httpx
import msgspec
import numpy as np
import pytest
from gymnasium import spaces

from envproc.convert import BadValue, describe, from_json, to_json
from tests.conftest import create, faulty

pytestmark = pytest.mark.timeout(60)

SPACES = {
    "discrete": spaces.Discrete(5, start=-2),
    "box": spaces.Box(-np.inf, np.inf, (2, 3), np.float64),
    "box_uint8": spaces.Box(0, 255, (4, 4, 3), np.uint8),
    "multidiscrete": spaces.MultiDiscrete([[2, 3], [4, 5]]),
    "multibinary": spaces.MultiBinary([2, 2]),
    "text": spaces.Text(min_length=1, max_length=6, charset="xyz"),
    "tuple": spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 1, (2,)))),
    "dict": spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Dict({"c": spaces.MultiBinary(3)})}),
    "sequence": spaces.Sequence(spaces.Discrete(4)),
    "oneof": spaces.OneOf((spaces.Discrete(3), spaces.Box(-1, 1, (2,)))),
}


def same(a: object, b: object) -> bool:
    return msgspec.json.encode(a) == msgspec.json.encode(b)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_values_round_trip_through_json(name: str) -> None:
    space = SPACES[name]
    space.seed(0)
    for _ in range(20):
        value = space.sample()
        wire = msgspec.json.decode(msgspec.json.encode(to_json(space, value)))
        back = from_json(space, wire)
        assert space.contains(back), (value, back)
        assert same(to_json(space, back), wire)


def test_describe_uses_gymnasiums_names() -> None:
    assert describe(SPACES["discrete"]) == {"name": "Discrete", "n": 5, "start": -2}
    box = describe(SPACES["box"])
    assert box["shape"] == [2, 3] and box["low"] == [-1e100] * 6 and box["high"] == [1e100] * 6 and box["dtype"] == "float64"
    assert describe(SPACES["multidiscrete"])["nvec"] == [[2, 3], [4, 5]]
    assert describe(SPACES["multibinary"])["n"] == [2, 2]
    assert describe(SPACES["text"]) == {"name": "Text", "min_length": 1, "max_length": 6, "characters": "xyz"}
    assert [s["name"] for s in describe(SPACES["tuple"])["spaces"]] == ["Discrete", "Box"]
    assert describe(SPACES["dict"])["spaces"]["b"]["spaces"]["c"]["name"] == "MultiBinary"
    assert describe(SPACES["sequence"])["feature_space"]["n"] == 4
    assert [s["name"] for s in describe(SPACES["oneof"])["spaces"]] == ["Discrete", "Box"]


@pytest.mark.parametrize(
    ("name", "bad"),
    [("discrete", 3), ("discrete", 1.5), ("discrete", "1"), ("box", [1, 2]), ("multidiscrete", [[5, 0], [0, 0]]),
     ("text", 3), ("tuple", [1]), ("dict", {"a": 1}), ("multibinary", [[2, 0], [0, 0]])],
)
def test_values_that_do_not_fit_are_refused(name: str, bad: object) -> None:
    with pytest.raises(BadValue):
        from_json(SPACES[name], bad)


def test_structured_env_over_http(client: httpx.Client) -> None:
    iid = create(client, faulty("Structured"), seed=1)
    action_info = client.get(f"/v1/envs/{iid}/action_space/").json()["info"]
    assert action_info["name"] == "Dict"
    assert action_info["spaces"]["move"] == {"name": "MultiDiscrete", "nvec": [3, 4], "start": [0, 0], "shape": [2], "dtype": "int64"}
    assert action_info["spaces"]["aim"]["spaces"][0] == {"name": "Discrete", "n": 5, "start": -2}
    obs_info = client.get(f"/v1/envs/{iid}/observation_space/").json()["info"]
    assert obs_info["spaces"]["note"]["characters"] == "abc"
    reset = client.post(f"/v1/envs/{iid}/reset/").json()
    assert reset["info"]["arr"] == [0, 1, 2] and reset["info"]["x"] == 0.5  # numpy in info becomes JSON
    action = client.get(f"/v1/envs/{iid}/action_space/sample").json()["action"]
    step = client.post(f"/v1/envs/{iid}/step/", json={"action": action}).json()
    assert step["observation"]["echo"] == action and step["info"] == {"n": 7}
    bad = client.post(f"/v1/envs/{iid}/step/", json={"action": {"move": [9, 9], "aim": [0, [[0, 0], [0, 0]]]}})
    assert bad.status_code == 400 and "action" in bad.json()["message"]


def test_image_observation_over_http(client: httpx.Client) -> None:
    iid = create(client, faulty("Image"))
    obs = np.array(client.post(f"/v1/envs/{iid}/reset/").json()["observation"], np.uint8)
    assert obs.shape == (84, 84, 3)
    step = client.post(f"/v1/envs/{iid}/step/", json={"action": 3}).json()
    assert np.array_equal(np.array(step["observation"]), obs + np.uint8(180))  # the env adds 60 per action unit


@pytest.mark.parametrize("name", sorted(SPACES))
def test_build_inverts_describe(name: str) -> None:
    from envproc.convert import build

    space = SPACES[name]
    assert build(msgspec.json.decode(msgspec.json.encode(describe(space)))) == space
