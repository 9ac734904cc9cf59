"""The users file (--users): who may call the server, by the SHA-256 of their token, with their
role and caps; and new tokens for it (`gym-supervisor token`)."""

import hashlib
import re
import secrets
import tomllib
from typing import Annotated

import msgspec
from msgspec import Meta

from supervisor.view import Caller, Role

# A name is also a directory under the data dir (the user's monitors): no "/", no "." or "..".
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Name = Annotated[str, Meta(pattern=NAME)]


class UserEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    token_sha256: Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}$")]
    role: Role = "user"
    max_envs: Annotated[int, Meta(ge=1)] | None = None
    max_env_memory_mb: Annotated[int, Meta(ge=1)] | None = None
    max_step_timeout: Annotated[float, Meta(gt=0)] | None = None


class UsersFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    users: list[UserEntry]


class BadUsersFile(Exception):
    """The users file cannot be used; `str()` says why, for the admin."""


class Users:
    """Owns the callers of one reading of the users file, keyed by their token's digest.

    A token is never compared as such: its SHA-256 is looked up. A timing difference in the
    lookup could tell only of the digest of the attacker's own guess, which says nothing of any
    token (finding a token from its digest is as hard as inverting SHA-256).
    """

    def __init__(self, entries: list[UserEntry]) -> None:
        self._by_digest: dict[bytes, Caller] = {}
        self.names: set[str] = set()
        for entry in entries:
            if entry.name in self.names:
                raise BadUsersFile(f"user {entry.name!r} is listed twice; each name once")
            digest = bytes.fromhex(entry.token_sha256)
            if digest in self._by_digest:
                raise BadUsersFile(f"users {self._by_digest[digest].name!r} and {entry.name!r} have the same "
                                   "token_sha256; make each a token of its own (gym-supervisor token NAME)")
            self.names.add(entry.name)
            self._by_digest[digest] = Caller(
                name=entry.name, role=entry.role, max_envs=entry.max_envs or 0,
                max_env_memory_mb=entry.max_env_memory_mb or 0, max_step_timeout=entry.max_step_timeout or 0,
            )

    def get(self, token: str) -> Caller | None:
        return self._by_digest.get(hashlib.sha256(token.encode()).digest())


def read_users(path: str) -> Users:
    """The users of a TOML users file; BadUsersFile with the reason if it cannot be used."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise BadUsersFile(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadUsersFile(f"{path} is not valid TOML: {exc}") from None
    try:
        parsed = msgspec.convert(raw, UsersFile)
    except msgspec.ValidationError as exc:
        raise BadUsersFile(f"{path}: {_readable(str(exc))}") from None
    return Users(parsed.users)


def _readable(error: str) -> str:
    """msgspec's `... - at `$.users[0].role`` said in the file's terms."""
    match = re.fullmatch(r"(.*?)(?: - at `\$\.users\[(\d+)\](?:\.(\w+))?`)?", error)
    assert match is not None  # the pattern matches any string
    what, index, key = match.groups()
    what = {
        "name": "a name is letters, digits, '.', '_' or '-' (64 at most), not starting with '.', '_' or '-'",
        "token_sha256": "token_sha256 is the SHA-256 of the token in 64 hex digits",
        "role": f"{what}: role is 'user', 'viewer' or 'admin'",
    }.get(key or "", what) if "regex" in what or key == "role" else what
    where = f"[[users]] entry {int(index) + 1}" + (f", key {key}" if key else "") if index else "the file"
    return f"{where}: {what}"


def new_token(name: str, role: Role) -> str:
    """A new random token alone on the first line, a blank line, then the block to paste into
    the users file (which holds the token's SHA-256, never the token)."""
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    return f'{token}\n\n[[users]]\nname = "{name}"\ntoken_sha256 = "{digest}"\nrole = "{role}"\n'
