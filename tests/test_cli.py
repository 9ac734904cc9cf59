"""The command line: every setting has its flag, bad values are refused before anything starts."""

import subprocess
from pathlib import Path

import httpx
import msgspec
import pytest

from api.settings import Settings
from tests.conftest import COMMAND, ROOT, create, start_server

pytestmark = pytest.mark.timeout(60)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_help_lists_a_flag_for_every_setting() -> None:
    out = cli("serve", "--help")
    assert out.returncode == 0
    for field in msgspec.structs.fields(Settings):
        assert "--" + field.name.replace("_", "-") in out.stdout
    assert "-l TEXT, --listen TEXT" in out.stdout and "-p N" in out.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--step-timeout", "0"], "step_timeout"),
        (["--create-timeout", "-1"], "create_timeout"),
        (["--port", "70000"], "port"),
        (["--log-level", "loud"], "invalid choice"),
        (["--preload", "no_such_module"], "no_such_module"),
        (["--preload", "no_such.sub"], "no_such.sub"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(args: list[str], says: str) -> None:
    out = cli("serve", *args)
    assert out.returncode == 2 and says in out.stderr


def test_the_seeds_listen_and_port_flags(tmp_path: Path) -> None:
    srv = start_server(tmp_path, seed_flags=True)  # it answers on the port given with -p
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert create(c, "CartPole-v1")
    finally:
        srv.stop()


def test_the_startup_log_states_the_effective_settings(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--env-memory-mb", "300", "--step-timeout", "7", "--env-path", "elsewhere")
    try:
        line = next(x for x in srv.log.read_text().splitlines() if "server_started" in x)
        for says in (f"url={srv.url} ", "env_memory_mb=300 ", "step_timeout=7.0 ", "create_timeout=60.0 ",
                     f"data_dir='{srv.data_dir}'", "allow_module=('tests.faulty_envs',)", "shutdown_grace=5.0 ",
                     f"env_path=('{ROOT}', '{ROOT / 'elsewhere'}')"):
            assert says in line, (says, line)
    finally:
        srv.stop()
