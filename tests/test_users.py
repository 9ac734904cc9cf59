"""A shared server: tokens, what each role may do on each route, isolation between users, quotas."""

import hashlib
import subprocess
import tomllib
from pathlib import Path

import httpx
import pytest

from api.users import BadUsersFile, read_users
from tests.conftest import COMMAND, create, faulty
from tests.lab import Lab, lab_fixture

pytestmark = pytest.mark.timeout(60)

ROLES = ["none", "bad", "owner", "other", "viewer", "admin"]
PEOPLE = {"owner": "alice", "other": "bob", "viewer": "vic", "admin": "root"}


lab = lab_fixture()


def as_role(lab: Lab, role: str) -> httpx.Client:
    if role == "bad":
        return lab.client(None, token="not-a-token-of-anyone")
    return lab.client(PEOPLE.get(role))


# (method, path, body, status by role: none, bad, owner, other, viewer, admin). {env} is an env of
# the owner's; the admin routes' {env} is an id nobody has, so that no cell changes another.
V1 = (401, 401, 200, 400, 400, 400)  # v1 routes act on the caller's own envs, whatever the role
VIEW = (401, 401, 403, 403, 200, 200)
ADMIN = (401, 401, 403, 403, 403, 400)  # the admin passes the guard; the id is unknown
MATRIX = [
    ("GET", "/v1/envs/", None, (401, 401, 200, 200, 200, 200)),
    ("GET", "/v1/envs/{env}/", None, V1),
    ("POST", "/v1/envs/{env}/reset/", {}, V1),
    ("POST", "/v1/envs/{env}/step/", {"action": 1}, V1),
    ("GET", "/v1/envs/{env}/action_space/", None, V1),
    ("GET", "/v1/envs/{env}/observation_space/", None, V1),
    ("GET", "/v1/envs/{env}/action_space/sample", None, V1),
    ("GET", "/v1/envs/{env}/action_space/contains/1", None, V1),
    ("POST", "/v1/envs/{env}/observation_space/contains", {"name": "Box"}, V1),
    ("GET", "/v1/envs/{env}/render", None, (401, 401, 200, 400, 200, 200)),  # viewers and admins see frames
    ("GET", "/v1/me", None, (401, 401, 200, 200, 200, 200)),
    ("GET", "/admin", None, (200, 200, 200, 200, 200, 200)),  # the page asks for a token itself
    ("GET", "/schema/openapi.json", None, (200, 200, 200, 200, 200, 200)),
    ("POST", "/v1/envs/{env}/monitor/start/", {"directory": "matrix", "force": True}, (401, 401, 204, 400, 400, 400)),
    ("POST", "/v1/envs/{env}/monitor/close/", None, (401, 401, 204, 400, 400, 400)),
    ("POST", "/v1/envs/{env}/restart", None, V1),
    ("POST", "/v1/envs/unknown1/close/", None, (401, 401, 400, 400, 400, 400)),
    ("POST", "/v1/upload/", {"training_dir": "x", "api_key": "y"}, (401, 401, 501, 501, 501, 501)),
    ("POST", "/v1/shutdown/", None, (401, 401, 403, 403, 403, None)),  # the admin's is tested apart
    ("GET", "/v1/admin/envs", None, VIEW),
    ("GET", "/v1/admin/stats", None, VIEW),
    ("GET", "/metrics", None, VIEW),
    ("POST", "/v1/admin/envs/nobody00/kill", None, ADMIN),
    ("POST", "/v1/admin/envs/nobody00/restart", None, ADMIN),
    ("POST", "/v1/admin/users/nobody/kill", None, (401, 401, 403, 403, 403, 200)),
    ("GET", "/healthz", None, (200, 200, 200, 200, 200, 200)),
]


@pytest.fixture(scope="module")
def own_env(lab: Lab) -> str:
    with lab.client("alice") as c:
        iid = create(c, faulty("Image"), kwargs={"render_mode": "rgb_array"})
        assert c.post(f"/v1/envs/{iid}/reset/").status_code == 200
        return iid


@pytest.mark.parametrize(("method", "path", "body", "statuses"), MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_every_route_answers_each_role_as_documented(lab: Lab, own_env: str, method: str, path: str,
                                                     body: object, statuses: tuple) -> None:
    with lab.client("alice") as alice:
        alice.post(f"/v1/envs/{own_env}/reset/")  # a restart cell may have left it unreset
    for role, expected in zip(ROLES, statuses, strict=True):
        if expected is None:
            continue
        with as_role(lab, role) as c:
            r = c.request(method, path.format(env=own_env), json=body)
        assert r.status_code == expected, (role, r.text)
        if r.status_code >= 400:
            assert r.headers["content-type"] == "application/json", (role, r.headers)
        if expected == 401:
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "Authorization: Bearer" in r.json()["message"]
        if expected == 403:
            assert "role" in r.json()["message"]
        if expected == 400 and role in ("other", "viewer", "admin") and "{env}" in path:
            assert r.json() == {"message": f"Instance_id {own_env} unknown"}  # as for an id never made


def test_create_is_open_to_every_role_and_lists_only_the_callers_envs(lab: Lab) -> None:
    made = {}
    for role in ("other", "viewer", "admin"):
        with as_role(lab, role) as c:
            made[role] = create(c, "CartPole-v1")
    for role, iid in made.items():
        with as_role(lab, role) as c:
            assert set(c.get("/v1/envs/").json()["all_envs"]) == {iid}
            assert c.get(f"/v1/envs/{iid}/").json()["owner"] == PEOPLE[role]
            assert c.post(f"/v1/envs/{iid}/close/").status_code == 204


def test_another_users_ids_cannot_be_probed_even_after_close(lab: Lab) -> None:
    with lab.client("alice") as alice, lab.client("bob") as bob:
        iid = create(bob, "CartPole-v1")
        assert bob.post(f"/v1/envs/{iid}/close/").status_code == 204
        assert "was closed" in bob.get(f"/v1/envs/{iid}/").json()["message"]  # its owner is told its fate
        assert alice.get(f"/v1/envs/{iid}/").json() == {"message": f"Instance_id {iid} unknown"}
        assert alice.post(f"/v1/envs/{iid}/close/").json() == {"message": f"Instance_id {iid} unknown"}


def test_quota_refuses_the_create_past_max_envs_and_dead_envs_do_not_count(lab: Lab) -> None:
    with lab.client("quinn") as quinn, lab.client("root") as root:
        first, second = create(quinn, "CartPole-v1"), create(quinn, "CartPole-v1")
        before = lab.server.descendants()
        r = quinn.post("/v1/envs/", json={"env_id": "CartPole-v1"})
        assert r.status_code == 429 and "max_envs = 2" in r.json()["message"], r.text
        assert lab.server.descendants() == before  # nothing was started for it
        assert root.post(f"/v1/admin/envs/{first}/kill").json()["state"] == "dead"
        third = create(quinn, "CartPole-v1")  # the dead env no longer counts
        r = quinn.post(f"/v1/envs/{first}/restart")  # bringing the dead one back would make three
        assert r.status_code == 429, r.text
        assert quinn.get(f"/v1/envs/{first}/").json()["state"] == "dead"
        for iid in (first, second, third):
            assert quinn.post(f"/v1/envs/{iid}/close/").status_code == 204


def test_memory_cap_bounds_each_env_and_refuses_a_create_asking_more(lab: Lab) -> None:
    with lab.client("quinn") as quinn:
        r = quinn.post("/v1/envs/", json={"env_id": "CartPole-v1", "limits": {"memory_mb": 1024}})
        assert r.status_code == 400 and "max_env_memory_mb" in r.json()["message"], r.text
        iid = create(quinn, "CartPole-v1")
        assert quinn.get(f"/v1/envs/{iid}/").json()["limits"]["memory_mb"] == 512
        quinn.post(f"/v1/envs/{iid}/close/")


def test_step_timeout_cap_bounds_the_users_own_timeout(lab: Lab) -> None:
    with lab.client("quinn") as quinn:
        iid = create(quinn, faulty("Slow"), kwargs={"seconds": 4})
        quinn.post(f"/v1/envs/{iid}/reset/")
        r = quinn.post(f"/v1/envs/{iid}/step/", json={"action": 0}, headers={"X-Request-Timeout": "30"})
        assert r.status_code == 504 and "after 1 s" in r.json()["message"], r.text
        quinn.post(f"/v1/envs/{iid}/close/")


def test_monitor_directories_live_under_the_users_name(lab: Lab) -> None:
    with lab.client("bob") as bob:
        iid = create(bob, "CartPole-v1")
        assert bob.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "/runs/one"}).status_code == 204
        assert (lab.server.data_dir / "bob" / "runs" / "one").is_dir()
        r = bob.post(f"/v1/envs/{iid}/monitor/start/", json={"directory": "../alice/x"})
        assert r.status_code == 400 and "leaves the server's data directory" in r.json()["message"]
        bob.post(f"/v1/envs/{iid}/close/")


def test_token_command_prints_the_token_alone_then_the_block_with_its_hash() -> None:
    out = subprocess.run([COMMAND, "token", "carol", "--viewer"], check=True, capture_output=True, text=True,
                         timeout=30).stdout
    token, blank, block = out.split("\n", 2)
    assert len(token) >= 40 and blank == ""
    entry = tomllib.loads(block)["users"][0]
    assert entry == {"name": "carol", "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "role": "viewer"}
    assert token not in block
    again = subprocess.run([COMMAND, "token", "carol"], check=True, capture_output=True, text=True, timeout=30).stdout
    assert again.split("\n")[0] != token and 'role = "user"' in again
    bad = subprocess.run([COMMAND, "token", "../root"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "user name" in bad.stderr


HASH = "ab" * 32


@pytest.mark.parametrize(("text", "reason"), [
    (f'[[users]]\nname = "a"\ntoken_sha256 = "{HASH}"\nrol = "admin"\n', "unknown field `rol`"),
    (f'[[users]]\nname = "a"\ntoken_sha256 = "{HASH}"\nrole = "boss"\n', "role is 'user', 'viewer' or 'admin'"),
    ('[[users]]\nname = "a"\ntoken_sha256 = "xyz"\n', "64 hex digits"),
    (f'[[users]]\nname = "a"\ntoken_sha256 = "{HASH}"\n[[users]]\nname = "a"\ntoken_sha256 = "{"cd" * 32}"\n',
     "listed twice"),
    (f'[[users]]\nname = "a"\ntoken_sha256 = "{HASH}"\n[[users]]\nname = "b"\ntoken_sha256 = "{HASH}"\n',
     "the same token_sha256"),
    (f'[[users]]\nname = "../a"\ntoken_sha256 = "{HASH}"\n', "key name"),
    (f'[[users]]\nname = "a"\ntoken_sha256 = "{HASH}"\nmax_envs = 0\n', "key max_envs"),
    ('[[users]\n', "not valid TOML"),
])
def test_a_bad_users_file_is_refused_with_the_reason(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "users.toml"
    path.write_text(text)
    with pytest.raises(BadUsersFile, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_users(str(path))
    started = subprocess.run([COMMAND, "serve", "--port", "0", "--users", str(path)], capture_output=True, text=True,
                             timeout=30)
    assert started.returncode == 2 and reason in started.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.org"])
def test_an_open_server_refuses_to_listen_beyond_loopback(tmp_path: Path, host: str) -> None:
    r = subprocess.run([COMMAND, "serve", "--host", host, "--port", "0", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "--users" in r.stderr and "--insecure-open" in r.stderr and host in r.stderr
