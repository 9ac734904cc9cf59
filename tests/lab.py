"""A lab server for the tests: a users file of tokens made by the `gym-supervisor token` command,
and an HTTP client per user."""

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import COMMAND, Server, start_server

# name -> (role flag, caps added to the block the token command prints)
PEOPLE = {
    "alice": ("", ""),
    "bob": ("", ""),
    "quinn": ("", "max_envs = 2\nmax_env_memory_mb = 512\nmax_step_timeout = 1\n"),  # the one with caps
    "vic": ("--viewer", ""),
    "root": ("--admin", ""),
}


def make_token(name: str, flag: str = "") -> tuple[str, str]:
    """A token from the installed command, and its block for the users file."""
    out = subprocess.run([COMMAND, "token", name, *([flag] if flag else [])], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    token, blank, block = out.split("\n", 2)
    assert blank == ""
    return token, block


@dataclass
class Lab:
    server: Server
    tokens: dict[str, str]
    users_file: Path

    def client(self, name: str | None, token: str | None = None) -> httpx.Client:
        """A client as `name` (None: no token; or the token given)."""
        token = token or (self.tokens[name] if name else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=30)


def start_lab(tmp: Path, *extra: str, people: dict[str, tuple[str, str]] = PEOPLE) -> Lab:
    tokens, blocks = {}, []
    for name, (flag, caps) in people.items():
        tokens[name], block = make_token(name, flag)
        blocks.append(block + caps)
    tmp.mkdir(parents=True, exist_ok=True)
    users_file = tmp / "users.toml"
    users_file.write_text("\n".join(blocks))
    return Lab(start_server(tmp, "--users", str(users_file), *extra), tokens, users_file)


def lab_fixture(*extra: str) -> Callable[..., Iterator[Lab]]:
    """A module's lab server, with `extra` flags, stopped after the module's tests."""

    @pytest.fixture(scope="module")
    def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
        lab = start_lab(tmp_path_factory.mktemp("lab"), *extra)
        try:
            yield lab
        finally:
            lab.server.stop()

    return lab
