"""Whom env code runs as: the server's own user, one named user for all envs (--env-user), or a
user of its own per env, from a range of uids no account has (--env-uid-range)."""

import grp
import logging
import os
import pwd
import re
from collections import deque

from envproc import sandbox
from envproc.forkserver import STDLIB_FOR_ENVS
from supervisor.errors import ConfigError, ServerBusy

log = logging.getLogger("gym_supervisor.env")


class EnvUsers:
    """Owns the choice of uid/gid for each new env, and the free uids of a range."""

    def __init__(self, name: str | None, uid_range: str | None) -> None:
        self.shared: tuple[int, int] | None = None
        self._free: deque[int] | None = None
        if name is not None and uid_range is not None:
            raise ConfigError("--env-user and --env-uid-range exclude each other: one user for all envs, "
                              "or one per env")
        if name is not None:
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                raise ConfigError(f"--env-user {name}: no such user on this machine") from None
            _need_root(f"--env-user {name}")
            self.shared = user.pw_uid, user.pw_gid
        if uid_range is not None:
            start, count = _parse_range(uid_range)
            _need_root(f"--env-uid-range {uid_range}")
            if (taken := _in_use(start, count)) is not None:
                raise ConfigError(f"--env-uid-range {uid_range} includes {taken}; choose a range that no "
                                  "account, group or running process uses")
            self._free = deque(range(start, start + count))

    @property
    def exhausted(self) -> bool:
        """Every uid of the range runs an env (or is being freed of one)."""
        return self._free is not None and not self._free

    @property
    def own(self) -> bool:
        """Each env has a uid of its own."""
        return self._free is not None

    @property
    def any(self) -> tuple[int, int] | None:
        """A uid/gid an env may run as (to check what such a user can read), or None: the server's."""
        if self._free is not None:
            return (self._free[0], self._free[0]) if self._free else None
        return self.shared

    def cannot_read_python(self, data_dir: str) -> bool:
        """True if env code's user cannot read the Python installation: env code then imports
        only what the forkserver loaded, so it loads what env code is likely to import. Also
        warns if that user cannot reach the data dir (monitors would fail)."""
        user = self.any
        if user is None:
            return False
        if (why := sandbox.cannot_read_as(*user, data_dir)) is not None:
            log.warning("data_dir_unreachable uid=%d path=%s reason=%r (monitors will fail)", user[0], data_dir, why)
        stdlib = os.path.dirname(os.__file__)
        why = sandbox.cannot_read_as(*user, stdlib)
        if why is not None:
            log.warning("env_user_cannot_read_python uid=%d path=%s reason=%r preloaded=%d", user[0],
                        stdlib, why, len(STDLIB_FOR_ENVS))
        return why is not None

    def take(self) -> tuple[int | None, int | None]:
        """The uid/gid for a new env: its own from the range (the one free longest, so that a
        uid comes back as late as it can), the shared one, or none."""
        if self._free is None:
            return self.shared if self.shared else (None, None)
        if not self._free:
            raise ServerBusy("every uid of --env-uid-range runs an env; close one of yours or retry later", 5)
        uid = self._free.popleft()
        return uid, uid

    def give_back(self, uid: int | None) -> None:
        """An env's processes are gone: its uid may serve another env."""
        if self._free is not None and uid is not None and uid not in self._free:
            self._free.append(uid)


def _in_use(start: int, count: int) -> str | None:
    """What already uses an id of the range, if anything does: an account, a group, or a running
    process (systemd's dynamic users, say, have no account)."""
    inside = range(start, start + count)
    for user in pwd.getpwall():
        if user.pw_uid in inside:
            return f"uid {user.pw_uid}, which is user {user.pw_name}'s"
    for group in grp.getgrall():
        if group.gr_gid in inside:
            return f"gid {group.gr_gid}, which is group {group.gr_name}'s"
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                uid = os.stat(f"/proc/{name}").st_uid
                if uid in inside:
                    with open(f"/proc/{name}/stat", "rb") as f:
                        if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                            continue  # a zombie: it holds the uid, but can do nothing with it
            except (OSError, IndexError):
                continue
            if uid in inside:
                return f"uid {uid}, which process {name} runs as"
    return None


def _parse_range(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+):(\d+)", text)
    if not match or int(match[2]) < 1 or int(match[1]) < 1:
        raise ConfigError(f"--env-uid-range {text}: give START:COUNT, both positive (e.g. 61184:4096)")
    start, count = int(match[1]), int(match[2])
    if start + count > 2**31:
        raise ConfigError(f"--env-uid-range {text}: goes past the largest uid")
    return start, count


def _need_root(flag: str) -> None:
    if os.geteuid() != 0:
        raise ConfigError(f"{flag}: the server must run as root to run envs as another user")
