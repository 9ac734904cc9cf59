"""msgpack on the same routes: asked for with Accept (replies and errors) and Content-Type
(bodies), numpy arrays as raw bytes; JSON stays the default, and the clients read either."""

import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import httpx
import msgspec
import numpy as np
import pytest

import tests.faulty_envs  # noqa: F401  (registers the test envs for the local side of comparisons)
from api.client import RemoteEnv, RemoteVectorEnv
from api.codec import wants_msgpack
from envproc.wire import BadArray, arrays, encode_msgpack, to_array
from tests.conftest import ROOT, Server, create, faulty
from tests.lab import Lab, lab_fixture

pytestmark = pytest.mark.timeout(60)
BOTH_BACKENDS = True  # on this machine and on a Ray cluster's nodes

MSGPACK = "application/msgpack"
ASK = {"Accept": MSGPACK}
SEND = {"Accept": MSGPACK, "Content-Type": MSGPACK}

lab = lab_fixture("--allow-module", "tests.faulty_envs")


def unpacked(r: httpx.Response, status: int = 200) -> object:
    assert r.status_code == status, r.content
    assert r.headers["content-type"] == MSGPACK
    return arrays(msgspec.msgpack.decode(r.content))


def test_every_kind_of_reply_and_error_comes_in_msgpack_when_asked(client: httpx.Client) -> None:
    made = unpacked(client.post("/v1/envs/", content=encode_msgpack({"env_id": "CartPole-v1", "seed": 3}), headers=SEND))
    iid = made["instance_id"]
    reset = unpacked(client.post(f"/v1/envs/{iid}/reset/", headers=ASK))
    obs = reset["observation"]
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32 and obs.shape == (4,)
    assert np.array_equal(obs, gym.make("CartPole-v1").reset(seed=3)[0])
    step = unpacked(client.post(f"/v1/envs/{iid}/step/", content=encode_msgpack({"action": 1}), headers=SEND))
    assert set(step) == {"observation", "reward", "done", "info", "terminated", "truncated"}
    assert unpacked(client.get(f"/v1/envs/{iid}/action_space/", headers=ASK))["info"]["n"] == 2
    assert unpacked(client.get(f"/v1/envs/{iid}/observation_space/", headers=ASK))["info"]["name"] == "Box"
    assert unpacked(client.get(f"/v1/envs/{iid}/action_space/sample", headers=ASK))["action"] in (0, 1)
    assert unpacked(client.get(f"/v1/envs/{iid}/action_space/contains/1", headers=ASK)) == {"member": True}
    contains = client.post(f"/v1/envs/{iid}/observation_space/contains", content=encode_msgpack({"name": "Box"}),
                           headers=SEND)
    assert unpacked(contains) == {"member": True}
    assert unpacked(client.get(f"/v1/envs/{iid}/", headers=ASK))["steps"] == 1
    assert iid in unpacked(client.get("/v1/envs/", headers=ASK))["all_envs"]
    assert unpacked(client.get("/v1/me", headers=ASK)) == {"name": "", "role": "admin"}
    assert len(unpacked(client.get("/v1/admin/envs", headers=ASK))["envs"]) >= 1
    assert unpacked(client.get("/healthz", headers=ASK)) == {"status": "ok"}
    # errors: the env's, the request's, the route's, the method's
    bad_action = unpacked(client.post(f"/v1/envs/{iid}/step/", content=encode_msgpack({"action": 7}), headers=SEND), 400)
    assert "outside Discrete(2)" in bad_action["message"]
    assert unpacked(client.post(f"/v1/envs/{iid}/step/", content=b"\xc1", headers=SEND), 400) == {
        "message": "Request is not valid msgpack"}
    assert unpacked(client.post("/v1/envs/", content=b"\x93\x01", headers=SEND), 400) == {
        "message": "Request is not valid msgpack"}
    assert unpacked(client.post("/v1/envs/", content=encode_msgpack([1, 2]), headers=SEND), 400) == {
        "message": "Request is not a msgpack map with string keys"}
    ext = encode_msgpack({"env_id": "CartPole-v1", "kwargs": {"x": msgspec.msgpack.Ext(5, b"zz")}})
    assert "extension value (type 5)" in unpacked(client.post("/v1/envs/", content=ext, headers=SEND), 400)["message"]
    assert unpacked(client.get("/v1/nowhere", headers=ASK), 404)["message"].startswith("no route GET /v1/nowhere")
    assert unpacked(client.delete("/v1/envs/", headers=ASK), 405)["message"] == "DELETE is not allowed on /v1/envs/"
    assert unpacked(client.post("/v1/upload", content=encode_msgpack({"training_dir": "d", "api_key": "k"}),
                                headers=SEND), 501)["message"].startswith("The OpenAI Gym upload service")
    client.post(f"/v1/envs/{iid}/close/")
    assert "unknown" in unpacked(client.post(f"/v1/envs/{iid}/step/", json={"action": 1}, headers=ASK), 400)["message"]
    crash = create(client, faulty("Segfaults"))
    client.post(f"/v1/envs/{crash}/reset/")
    assert "SIGSEGV" in unpacked(client.post(f"/v1/envs/{crash}/step/", json={"action": 0}, headers=ASK), 502)["message"]
    assert "SIGSEGV" in unpacked(client.post(f"/v1/envs/{crash}/reset/", headers=ASK), 410)["message"]
    client.post(f"/v1/envs/{crash}/close/")


def test_json_stays_the_default_and_a_body_is_read_as_its_content_type_says(client: httpx.Client) -> None:
    iid = create(client, "CartPole-v1")
    r = client.post(f"/v1/envs/{iid}/reset/")
    assert r.headers["content-type"] == "application/json" and isinstance(r.json()["observation"], list)
    # a msgpack body with a JSON reply, and Accept lists that prefer JSON
    r = client.post(f"/v1/envs/{iid}/step/", content=encode_msgpack({"action": 0}), headers={"Content-Type": MSGPACK})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    r = client.post(f"/v1/envs/{iid}/step/", json={"action": 0},
                    headers={"Accept": "application/json, application/msgpack;q=0.5"})
    assert r.headers["content-type"] == "application/json"
    client.post(f"/v1/envs/{iid}/close/")


def test_accept_is_read_with_its_q_values() -> None:
    assert wants_msgpack("application/msgpack") and wants_msgpack(b"application/x-msgpack")
    assert wants_msgpack("application/json;q=0.5, application/msgpack")
    assert not wants_msgpack("application/msgpack;q=0") and not wants_msgpack("*/*") and not wants_msgpack(None)
    assert not wants_msgpack("application/msgpack;q=0.4, application/json")
    assert not wants_msgpack("application/msgpack;q=oops")


@pytest.mark.parametrize("shape", [(84, 84, 3), (210, 160, 3)])
def test_image_observations_are_the_same_array_in_either_codec(client: httpx.Client, shape: tuple[int, ...]) -> None:
    a, b = (create(client, "tests.faulty_envs:Image-v0", seed=5, kwargs={"shape": list(shape)}) for _ in range(2))
    as_json = client.post(f"/v1/envs/{a}/reset/").json()["observation"]
    packed = client.post(f"/v1/envs/{b}/reset/", headers=ASK)
    raw = msgspec.msgpack.decode(packed.content)["observation"]
    assert raw["dtype"] == "uint8" and raw["shape"] == list(shape) and len(raw["data"]) == np.prod(shape)
    assert len(packed.content) < np.prod(shape) + 100  # raw bytes: no text, nothing else of size
    assert np.array_equal(to_array(raw), np.asarray(as_json, np.uint8))
    step = unpacked(client.post(f"/v1/envs/{b}/step/", content=encode_msgpack({"action": 2}), headers=SEND))
    assert np.array_equal(step["observation"], client.post(f"/v1/envs/{a}/step/", json={"action": 2}).json()["observation"])
    for iid in (a, b):
        client.post(f"/v1/envs/{iid}/close/")


def test_arrays_in_actions_and_infos_travel_as_raw_bytes(client: httpx.Client) -> None:
    iid = create(client, faulty("Structured"))
    info = unpacked(client.post(f"/v1/envs/{iid}/reset/", headers=ASK))["info"]
    assert info["arr"].dtype == np.int64 and info["arr"].tolist() == [0, 1, 2] and info["x"] == 0.5
    aim = np.array([[0.5, -0.25], [1.0, 0.0]], np.float32)
    action = {"move": np.array([2, 3]), "aim": [-2, aim]}
    step = unpacked(client.post(f"/v1/envs/{iid}/step/", content=encode_msgpack({"action": action}), headers=SEND))
    echo = step["observation"]["echo"]
    assert echo["move"].tolist() == [2, 3] and echo["aim"][0] == -2 and np.array_equal(echo["aim"][1], aim)
    assert echo["aim"][1].dtype == np.float32 and step["observation"]["flags"].dtype == np.int8
    bad = {"move": {"dtype": "uint8", "shape": [3], "data": b"\x01"}, "aim": [0, aim]}
    message = unpacked(client.post(f"/v1/envs/{iid}/step/", content=encode_msgpack({"action": bad}), headers=SEND),
                       400)["message"]
    assert message == "Request's action is not a value: an array of shape [3] and dtype uint8 takes 3 bytes, not 1"
    client.post(f"/v1/envs/{iid}/close/")


def test_a_batch_in_msgpack_answers_each_entry_with_its_status(client: httpx.Client) -> None:
    a, crash = create(client, "CartPole-v1"), create(client, faulty("Segfaults"))
    for iid in (a, crash):
        client.post(f"/v1/envs/{iid}/reset/")
    body = {"steps": [{"instance_id": i, "action": 0} for i in (a, crash, "nosuchid")]}
    results = unpacked(client.post("/v1/batch/step", content=encode_msgpack(body), headers=SEND))["results"]
    assert [r["status"] for r in results] == [200, 502, 400]
    assert results[0]["observation"].dtype == np.float32 and "SIGSEGV" in results[1]["message"]
    many = [create(client, "CartPole-v1") for _ in range(17)]  # past 15 entries, msgpack's array header grows
    for iid in many:
        client.post(f"/v1/envs/{iid}/reset/")
    body = {"steps": [{"instance_id": i, "action": 1} for i in many]}
    results = unpacked(client.post("/v1/batch/step", json=body, headers=ASK))["results"]
    assert [r["status"] for r in results] == [200] * 17
    for iid in (a, crash, *many):
        client.post(f"/v1/envs/{iid}/close/")


def test_refusals_of_the_token_come_in_msgpack_too(lab: Lab) -> None:
    with lab.client(None) as nobody:
        r = nobody.get("/v1/envs/", headers=ASK)
        assert unpacked(r, 401)["message"] and r.headers["www-authenticate"].startswith("Bearer")
        assert unpacked(nobody.post("/v1/envs/x/step", json={"action": 0}, headers=ASK), 401)["message"]
    with lab.client("vic") as viewer:
        assert unpacked(viewer.post("/v1/admin/envs/x/kill", headers=ASK), 403)["message"]


def test_array_maps_refuse_what_is_not_an_array() -> None:
    good = {"dtype": "float32", "shape": [2], "data": np.array([1.5, 2], "<f4").tobytes()}
    assert to_array(good).tolist() == [1.5, 2.0]
    assert to_array(good).flags.writeable
    for bad, why in [({**good, "dtype": "object"}, "dtype"), ({**good, "dtype": 3}, "dtype"),
                     ({**good, "shape": [-1]}, "shape"), ({**good, "data": "xx"}, "bin"),
                     ({**good, "shape": [3]}, "takes 12 bytes")]:
        with pytest.raises(BadArray, match=why):
            to_array(bad)
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)[:, ::2]  # not contiguous either
    back = arrays(msgspec.msgpack.decode(encode_msgpack(big_endian)))
    assert back.tolist() == [[0, 2], [3, 5]] and back.dtype == np.int32
    assert arrays(msgspec.msgpack.decode(encode_msgpack(np.array([True, False])))).dtype == np.bool_
    assert msgspec.msgpack.decode(encode_msgpack(np.array(["a"]))) == ["a"]  # not numbers: a list, as in JSON
    assert arrays(msgspec.msgpack.decode(encode_msgpack(np.zeros((0, 3), np.float32)))).shape == (0, 3)
    with pytest.raises(BadArray, match="takes 18446744073709551616 bytes"):  # no wrap-around to a fitting size
        to_array({"dtype": "uint8", "shape": [2**32, 2**32], "data": b""})
    with pytest.raises(BadArray, match="cannot be made"):
        to_array({"dtype": "uint8", "shape": [0, 2**62, 2**62], "data": b""})
    # a Dict value whose keys are an array's: its values are not a string, a list and bin
    keyed = {"dtype": np.arange(2), "shape": "square", "data": 3}
    back = arrays(msgspec.msgpack.decode(encode_msgpack(keyed)))
    assert back["dtype"].tolist() == [0, 1] and back["shape"] == "square" and back["data"] == 3


@pytest.mark.parametrize("env_id", ["CartPole-v1", "tests.faulty_envs:Image-v0", "tests.faulty_envs:Structured-v0"])
def test_remote_env_gives_the_same_observations_in_msgpack_and_json(server: Server, env_id: str) -> None:
    packed, plain = RemoteEnv(server.url, env_id, msgpack=True), RemoteEnv(server.url, env_id, msgpack=False)
    try:
        obs = [env.reset(seed=11)[0] for env in (packed, plain)]
        assert packed.client.speaks_msgpack and not plain.client.speaks_msgpack
        plain.action_space.seed(4)
        for _ in range(3):
            action = plain.action_space.sample()
            obs += [packed.step(action)[0], plain.step(action)[0]]
        for a, b in zip(obs[::2], obs[1::2]):
            same(a, b)
    finally:
        packed.close()
        plain.close()


def same(a: object, b: object) -> None:
    """Equal values of equal types, arrays of equal dtype and shape, all the way down."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    else:
        assert a == b


class _JsonOnly(http.server.BaseHTTPRequestHandler):
    """Passes requests on to the real server without their Accept header: a server that, as the
    seed does, answers JSON whatever the client asks."""

    upstream = ""

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("accept", "host", "content-length")}
        r = httpx.request(self.command, self.upstream + self.path, content=body, headers=headers, timeout=30)
        self.send_response(r.status_code)
        if "content-type" in r.headers:  # not on a 204
            self.send_header("Content-Type", r.headers["content-type"])
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    do_GET = do_POST = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def json_only(server: Server) -> Iterator[str]:
    handler = type("Handler", (_JsonOnly,), {"upstream": server.url})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{proxy.server_address[1]}"
    proxy.shutdown()
    proxy.server_close()


def test_remote_envs_speak_json_to_a_server_that_answers_json(json_only: str, server: Server) -> None:
    env = RemoteEnv(json_only, "tests.faulty_envs:Image-v0", seed=2)
    try:
        obs, _ = env.reset()
        assert not env.client.speaks_msgpack  # every body went as JSON: the seed could not read msgpack
        assert obs.dtype == np.uint8 and obs.shape == (84, 84, 3)
        assert np.array_equal(obs, gym.make("tests.faulty_envs:Image-v0").reset(seed=2)[0])
        assert env.step(1)[0].dtype == np.uint8
    finally:
        env.close()
    vec = RemoteVectorEnv(json_only, "CartPole-v1", 2, seed=1)
    try:
        obs, _ = vec.reset()
        local = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)
        assert np.array_equal(obs, local.reset(seed=1)[0])
        stepped = vec.step(np.array([0, 1]))
        assert np.array_equal(stepped[0], local.step(np.array([0, 1]))[0])
        assert not vec.envs[0].client.speaks_msgpack
    finally:
        vec.close()


def readme_example(fence: str) -> str:
    """The README's msgpack example in one language: the fenced block that starts with its marker."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"```{fence}\n{'#' if fence == 'python' else '//'} msgpack example\n")
    body = text[text.index("\n", start) + 1:]
    return body[: body.index("```")]


def first_reset(seed: int) -> np.ndarray:
    return gym.make("CartPole-v1").reset(seed=seed)[0]


def test_the_readmes_python_example_reads_an_observation(server: Server, capsys: pytest.CaptureFixture) -> None:
    exec(readme_example("python"), {"BASE": server.url})
    printed = capsys.readouterr().out
    values = np.array(printed.strip(" []\n").split(), np.float32)
    assert np.allclose(values, first_reset(0), atol=1e-7), printed


@pytest.mark.timeout(180)
def test_the_readmes_javascript_example_reads_an_observation(server: Server, tmp_path: Path) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the JavaScript example cannot run")
    installed = subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "@msgpack/msgpack@3"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=150)
    if installed.returncode != 0:
        pytest.skip(f"npm could not install @msgpack/msgpack (no registry?): {installed.stderr[-300:]}")
    script = tmp_path / "example.mjs"
    script.write_text(f"const BASE = {server.url!r};\n" + readme_example("js"))
    run = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    shape, values = run.stdout.strip().split(" ", 1)
    assert shape == "[" and values.startswith("4 ]"), run.stdout  # node prints [ 4 ] [ ...values ]
    numbers = np.array(values[3:].strip(" []\n").replace(",", " ").split(), np.float32)
    assert np.allclose(numbers, first_reset(0), atol=1e-7), run.stdout
