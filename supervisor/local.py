"""The local backend: env processes forked on this machine by the server's env forkserver, each
under the limits, user, pids cgroup and network the server gives it."""

import asyncio
import os
from collections.abc import Callable
from typing import Any

from envproc import sandbox
from envproc.protocol import EnvLimits
from supervisor.asked import AskedLimits, tighter
from supervisor.cgroups import PidsCgroups
from supervisor.datadir import DataDir
from supervisor.errors import ConfigError
from supervisor.forkserver import Forkserver
from supervisor.handle import EnvHandle
from supervisor.limits import Limits
from supervisor.usage import Usage, usage_of_envs
from supervisor.users import EnvUsers

CLOSE_TIMEOUT = 5.0


class LocalBackend:
    """Owns the env forkserver, the env users (and the uids being freed of their last
    processes), and the pids cgroups."""

    name = "local"

    def __init__(self, limits: Limits, data_dir: DataDir, address_space: bool) -> None:
        """`address_space`: the memory limit is an address-space limit too (see the registry)."""
        self.limits = limits
        self._address_space = address_space
        self._users = EnvUsers(limits.env_user, limits.env_uid_range)
        if limits.env_no_network and self._users.any is None:
            raise ConfigError(
                "--env-no-network needs --env-user or --env-uid-range: env code left as root, even with no "
                "capability, could still reach the server through what is root's (its files, its process)"
            )
        if limits.env_no_network and (why := sandbox.can_unshare_network()) is not None:
            raise ConfigError(f"--env-no-network: this machine does not let the server make network namespaces ({why})")
        env_path = tuple(dict.fromkeys([os.getcwd(), *(os.path.abspath(p) for p in limits.env_path)]))
        self._forkserver = Forkserver(env_path, limits.preload, self._users.cannot_read_python(data_dir.path))
        self._forkserver.start()  # here, so that a preload that fails stops the server from starting
        self.cgroups = PidsCgroups(limits.env_max_procs, limits.max_procs or 0)
        self._reaping: set[asyncio.Future[None]] = set()  # uids being freed of their last processes

    @property
    def env_path(self) -> tuple[str, ...]:
        return self._forkserver.config.env_path

    def serve(self) -> None:
        """On the event loop, once it runs."""
        self._forkserver.adopt()

    async def room(self, timeout: float) -> None:
        """Wait (within `timeout`) for a uid to come back, when every one is taken and some are
        being freed: a uid serves again as soon as its last process is gone."""
        if self._users.exhausted and self._reaping:
            await asyncio.wait(self._reaping, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    def handle(
        self, instance_id: str, env_id: str, kwargs: dict[str, Any], seed: int | None, restarts: int,
        asked: AskedLimits, owner: str, memory_cap: int, on_death: Callable[[EnvHandle], bool],
    ) -> EnvHandle:
        """A handle for one process of an instance, its limits set (a uid and a cgroup taken);
        nothing awaits here, so the registry's admission and this stay one step."""
        limits = self.limits
        uid, gid = self._users.take()
        memory_mb = int(tighter(tighter(limits.env_memory_mb or 0, memory_cap), asked.memory_mb))
        env_limits = EnvLimits(
            memory_mb=memory_mb,
            address_space_mb=memory_mb if self._address_space or asked.memory_mb else 0,
            cpu_seconds=tighter(limits.env_cpu_seconds, asked.cpu_seconds),
            max_files=limits.env_max_files,
            cgroup=self.cgroups.make(f"{instance_id}-{restarts}"),
            no_network=limits.env_no_network,
            uid=uid,
            gid=gid,
            own_uid=self._users.own,
        )
        return EnvHandle(
            self._forkserver, instance_id, env_id, kwargs, seed, env_limits, limits.max_lifetime,
            restarts=restarts, max_reply=limits.max_reply_mb * 2**20, on_death=on_death,
            on_exit=self._on_exit, owner=owner,
        )

    async def start(self, handle: EnvHandle, timeout: float) -> None:
        """Start the handle's process; if that fails, its uid and cgroup are given back."""
        try:
            await handle.start(timeout)
        except BaseException:
            self.cgroups.release(handle.limits.cgroup)
            if handle.pid is None:  # never forked: no exit will give its uid back
                self._users.give_back(handle.limits.uid)
            raise

    async def dispose(self, handle: EnvHandle, timeout: float = CLOSE_TIMEOUT, force: bool = False,
                      **how: Any) -> None:
        """Close a handle for good: its process, and then its cgroup."""
        await handle.close(timeout, force=force, **how)
        self.cgroups.release(handle.limits.cgroup)

    def usage(self, handles: list[EnvHandle]) -> list[Usage | None]:
        """Each live env's process tree's CPU and memory, read from /proc and its cgroup
        (blocking: the watcher's thread calls it); None where it could not be read."""
        return usage_of_envs([(h.pid, h.limits.cgroup, h.limits.memory_mb * 2**20) for h in handles])

    def sweep(self) -> None:
        """Remove cgroups their envs left behind (blocking: the watcher's thread calls it)."""
        self.cgroups.sweep()

    async def close(self) -> None:
        """After every env is closed: what escaped an own-uid env's group goes, then the cgroups
        and the forkserver."""
        if self._reaping:
            await asyncio.wait(self._reaping, timeout=CLOSE_TIMEOUT)
        await self.cgroups.close()
        await self._forkserver.close()

    def _on_exit(self, handle: EnvHandle) -> None:
        """An env process ended: its uid, if its own, serves again once every process of it is
        gone (its helpers may have outlived it and its guardian)."""
        if handle.limits.own_uid and handle.limits.uid is not None:
            task = asyncio.ensure_future(self._give_back(handle.limits.uid))
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)

    async def _give_back(self, uid: int) -> None:
        await self._forkserver.reap(uid)
        self._users.give_back(uid)
