"""Custom env modules, found the way a user expects whichever way the server is started; and env
processes that hold the env side only, never the server's."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    ROOT,
    Server,
    create,
    faulty,
    free_port,
    start_server,
    wait_answering,
)

pytestmark = pytest.mark.timeout(120)

MAZE = """
import os
import sys

import gymnasium as gym
from gymnasium import spaces

SERVER_SIDE = {"api", "supervisor", "litestar", "uvicorn", "anyio", "click", "yaml"}


class Maze(gym.Env):
    observation_space = spaces.Discrete(4)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        held = sorted({m.split(".")[0] for m in sys.modules} & SERVER_SIDE)
        return 0, {"cwd": os.getcwd(), "server_modules": held}

    def step(self, action):
        return 1, 1.0, True, False, {}


gym.register(id="Maze-v0", entry_point=Maze)
"""


@pytest.fixture()
def lab(tmp_path: Path) -> Path:
    """A user's directory with a package of envs in it, and a module that fails as it is imported."""
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "envs.py").write_text(MAZE)
    (tmp_path / "mylab" / "broken.py").write_text("import no_such_dependency_here\n")
    return tmp_path


def served(tmp: Path, *flags: str, cwd: Path) -> Iterator[httpx.Client]:
    srv = start_server(tmp, *flags, cwd=cwd, allow_faulty=False)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            yield c
    finally:
        srv.stop()


def reset_info(c: httpx.Client, env_id: str) -> dict:
    iid = create(c, env_id)
    r = c.post(f"/v1/envs/{iid}/reset/")
    assert r.status_code == 200, r.text
    return r.json()["info"]


def test_env_processes_hold_nothing_of_the_server(server: Server, client: httpx.Client) -> None:
    """The server runs as the installed command here, whose main script imports the whole server:
    an env process must not have imported it again."""
    info = reset_info(client, faulty("ReportsModules"))
    assert info["server_modules"] == [], info
    assert info["main"] is None or "gym-supervisor" not in info["main"]


def test_preload_and_allow_module_from_the_working_directory(lab: Path) -> None:
    for flags, env_id in ((["--preload", "mylab.envs"], "Maze-v0"),
                          (["--allow-module", "mylab.envs"], "mylab.envs:Maze-v0")):
        for c in served(lab / "run", *flags, cwd=lab):
            info = reset_info(c, env_id)
            assert info["cwd"] == str(lab) and info["server_modules"] == []


def test_env_path_finds_modules_elsewhere_and_a_missing_one_says_where_it_looked(lab: Path, tmp_path_factory:
                                                                                 pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    for c in served(lab / "run", "--env-path", str(lab), "--allow-module", "mylab.envs",
                    "--allow-module", "nolab.envs", cwd=elsewhere):
        assert reset_info(c, "mylab.envs:Maze-v0")["cwd"] == str(elsewhere)
        r = c.post("/v1/envs/", json={"env_id": "nolab.envs:Maze-v0"})
        message = r.json()["message"]
        assert r.status_code == 400 and "malformed" not in message
        assert "there is no module 'nolab.envs'" in message and "--env-path" in message
        assert f"({elsewhere}, {lab})" in message  # the working directory, then --env-path
        assert list(c.get("/v1/envs/").json()["all_envs"].values()) == ["mylab.envs:Maze-v0"]  # none made


def test_a_module_that_fails_to_import_says_so_and_why(lab: Path) -> None:
    for c in served(lab / "run", "--allow-module", "mylab.broken", cwd=lab):
        r = c.post("/v1/envs/", json={"env_id": "mylab.broken:Maze-v0"})
        message = r.json()["message"]
        assert r.status_code == 500 and "malformed" not in message, r.text
        assert message == (
            "env 'mylab.broken:Maze-v0' could not be made: importing its module 'mylab.broken' raised "
            "ModuleNotFoundError: No module named 'no_such_dependency_here'; no env was created"
        )
        assert c.get("/v1/envs/").json()["all_envs"] == {}


def test_a_missing_preload_stops_the_start_saying_where_it_looked(lab: Path) -> None:
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "gym-supervisor"), "serve", "--port", str(free_port()),
                          "--preload", "mylab.nothing", "--env-path", "/nonexistent"],
                         cwd=lab, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "--preload mylab.nothing: ModuleNotFoundError" in out.stderr
    assert f"{lab}, /nonexistent" in out.stderr


def test_scripts_serve_runs_in_the_users_directory(lab: Path) -> None:
    """As the README says to run it: from the directory that holds the user's envs."""
    port = free_port()
    log = lab / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ROOT / "scripts" / "serve"), "--port", str(port), "--preload", "mylab.envs"],
                                cwd=lab, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_answering(proc, f"http://127.0.0.1:{port}", log, 90)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            info = reset_info(c, "Maze-v0")
            assert info["cwd"] == str(lab) and info["server_modules"] == []
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert "server_started" in log.read_text() and "preload=('mylab.envs',)" in log.read_text()


def test_the_installed_command_tells_its_version() -> None:
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "gym-supervisor"), "--version"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("gym-supervisor 0.")

