"""The Python client against a real server: the seed's client cases, RemoteEnv, RemoteVectorEnv."""

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import tests.faulty_envs  # noqa: F401  (registers the test envs for the local side of comparisons)
from api.client import (
    Client,
    EnvCrashed,
    EnvGone,
    EnvTimeout,
    RemoteEnv,
    RemoteVectorEnv,
    ServerError,
    ServerFull,
)
from tests.conftest import ROOT, Server, faulty, start_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def remote(server: Server) -> Iterator[Client]:
    c = Client(server.url)
    yield c
    c.close()


def test_importing_the_client_loads_no_server_code() -> None:
    code = "import sys, api.client; print(sorted({m.split('.')[0] for m in sys.modules} & {'litestar', 'uvicorn', 'supervisor'}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_seeds_client_cases(remote: Client) -> None:
    iid = remote.env_create("CartPole-v1")
    assert iid in remote.env_list_all()
    assert remote.env_action_space_info(iid)["n"] == 2
    assert 0 <= remote.env_action_space_sample(iid) < 2
    assert [remote.env_action_space_contains(iid, x) for x in (0, 1, 2)] == [True, True, False]
    obs_info = remote.env_observation_space_info(iid)
    assert obs_info["name"] == "Box" and obs_info["shape"] == [4]
    assert remote.env_observation_space_contains(iid, {"name": "Box"})
    assert len(remote.env_reset(iid)) == 4
    observation, reward, done, info = remote.env_step(iid, 0)
    assert len(observation) == 4 and type(reward) is float and type(done) is bool and type(info) is dict
    remote.env_monitor_start(iid, "client-monitor", force=True)
    remote.env_monitor_close(iid)
    with pytest.raises(ServerError) as err:
        remote.upload("client-monitor", api_key="k")
    assert err.value.status_code == 501
    remote.env_close(iid)
    assert iid not in remote.env_list_all()
    with pytest.raises(ServerError) as err:
        remote.env_reset("bad_id")
    assert err.value.status_code == 400 and "Instance_id" in err.value.message
    with pytest.raises(ServerError, match="malformed environment ID"):
        remote.env_create("bad string")


def test_server_faults_are_typed_errors(remote: Client) -> None:
    iid = remote.env_create(faulty("Segfaults"))
    remote.env_reset(iid)
    with pytest.raises(EnvCrashed, match="SIGSEGV") as err:
        remote.env_step(iid, 0)
    assert err.value.status_code == 502
    with pytest.raises(EnvGone):
        remote.env_reset(iid)
    iid = remote.env_create(faulty("Spins"))
    remote.env_reset(iid)
    with pytest.raises(EnvTimeout, match="after 0.5 s"):
        remote.env_step(iid, 0, timeout=0.5)
    info = remote.env_info(iid)
    assert info["state"] == "dead"
    assert remote.env_restart(iid)["old"]["state"] == "dead"


def _warnings_of(env: gym.Env) -> set[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    return {str(w.message).split(" at ")[0] for w in caught}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "FrozenLake-v1", "tests.faulty_envs:Structured-v0"])
def test_remote_env_passes_check_env_with_no_warning_of_its_own(server: Server, env_id: str) -> None:
    env = RemoteEnv(server.url, env_id)
    try:
        remote_warnings = _warnings_of(env)
    finally:
        env.close()
    local_warnings = _warnings_of(gym.make(env_id).unwrapped)
    assert remote_warnings <= local_warnings, remote_warnings - local_warnings


def test_remote_env_seed_matches_a_local_reset(server: Server) -> None:
    env = RemoteEnv(server.url, "CartPole-v1", seed=7)
    try:
        local = gym.make("CartPole-v1")
        obs, _ = env.reset()
        assert obs.dtype == np.float32 and obs.shape == (4,)
        assert np.array_equal(obs, local.reset(seed=7)[0])
        for action in [0, 1, 1, 0, 1]:
            got, want = env.step(action), local.step(action)
            assert np.array_equal(got[0], want[0]) and got[1:4] == want[1:4]
        assert env.render() is None  # as a local env made without render_mode
    finally:
        env.close()


def test_remote_vector_env_matches_sync_vector_env(server: Server) -> None:
    n, seed = 8, 100
    remote = RemoteVectorEnv(server.url, "CartPole-v1", n)
    local = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(n)])
    try:
        r_obs, _ = remote.reset(seed=seed)
        l_obs, _ = local.reset(seed=seed)
        assert np.array_equal(r_obs, l_obs)
        rng = np.random.default_rng(0)
        ended = np.zeros(n, dtype=bool)
        for _ in range(150):  # long enough for every episode to end and autoreset (next-step mode)
            actions = rng.integers(0, 2, n)
            r, l = remote.step(actions), local.step(actions)
            for got, want in zip(r[:4], l[:4], strict=True):
                assert np.array_equal(got, want)
            ended |= l[2] | l[3]
        assert ended.all()  # every env went through an autoreset
    finally:
        remote.close()
        local.close()
    listing = Client(server.url)
    try:
        assert not set(listing.env_list_all()) & {e.instance_id for e in remote.envs}  # close closed them all
    finally:
        listing.close()


def test_example_agent_runs_against_a_server(server: Server) -> None:
    out = subprocess.run(
        [sys.executable, "scripts/example_agent.py", "--url", server.url, "--episodes", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert [line.split(":")[0] for line in out.stdout.splitlines()] == ["episode 0", "episode 1", "episode 2"]


def test_a_vector_env_that_cannot_make_all_its_envs_leaves_none_behind(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--max-envs", "3")
    try:
        with pytest.raises(ServerFull) as err:
            RemoteVectorEnv(srv.url, "CartPole-v1", 5)
        assert err.value.status_code == 503 and err.value.retry_after == 5
        assert "limit of 3 envs" in err.value.message
        listing = Client(srv.url)
        try:
            assert listing.env_list_all() == {}  # the three it made were closed
        finally:
            listing.close()
    finally:
        srv.stop()


@pytest.mark.timeout(900)  # a venv and pip: minutes where packages must be fetched
def test_the_client_extra_installs_the_client_and_nothing_of_the_server(server: Server, tmp_path: Path) -> None:
    """What a training machine that only talks to a remote server runs: pip install '...[client]'."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    pip = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{ROOT}[client]"],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr
    listed = subprocess.run([py, "-m", "pip", "list", "--format", "freeze"], capture_output=True, text=True,
                            timeout=60).stdout.lower()
    assert "httpx==" in listed and "gymnasium==" in listed
    assert not {"litestar", "uvicorn", "psutil"} & {line.split("==")[0] for line in listed.splitlines()}
    code = (f"from api.client import RemoteEnv\n"
            f"env = RemoteEnv({server.url!r}, 'CartPole-v1', seed=1)\n"
            "obs, _ = env.reset()\n"
            "print(env.step(env.action_space.sample())[1])\n"
            "env.close()\n")
    out = subprocess.run([py, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "1.0", out.stderr
