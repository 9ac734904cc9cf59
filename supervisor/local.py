"""The local backend: env processes forked on this machine by the server's env forkserver, each
under the limits, user, pids cgroup and network the server gives it."""

import asyncio
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import msgspec

from envproc import sandbox
from envproc.protocol import EnvLimits
from supervisor import cgroups
from supervisor.asked import AskedLimits, tighter
from supervisor.cgroups import PidsCgroups
from supervisor.errors import ConfigError
from supervisor.forkserver import Forkserver
from supervisor.handle import EnvHandle
from supervisor.limits import Limits
from supervisor.place import Ended, Launched
from supervisor.usage import Usage, oom_kills, usage_of_envs
from supervisor.users import EnvUsers

CLOSE_TIMEOUT = 5.0


class LocalBackend:
    """Owns the env forkserver, the env users (and the uids being freed of their last
    processes), and the pids cgroups. It is the place (supervisor/place.py) of its envs too,
    and each node's agent runs one (supervisor/agent.py)."""

    name = "local"
    node = ""

    def __init__(self, limits: Limits, data_dir: str, address_space: bool, cwd: str | None = None) -> None:
        """`address_space`: the memory limit is an address-space limit too (see the registry);
        `cwd`: the directory env modules are looked for first (default: the working one)."""
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
        env_path = tuple(dict.fromkeys([cwd or os.getcwd(), *(os.path.abspath(p) for p in limits.env_path)]))
        self._forkserver = Forkserver(env_path, limits.preload, self._users.cannot_read_python(data_dir))
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
        env_limits = self.placed(asked_limits(self.limits, asked, memory_cap, self._address_space),
                                 f"{instance_id}-{restarts}")
        return EnvHandle(
            self, instance_id, env_id, kwargs, seed, env_limits, self.limits.max_lifetime,
            restarts=restarts, max_reply=self.limits.max_reply_mb * 2**20, on_death=on_death,
            on_exit=lambda h: self.freed(h.limits), owner=owner,
        )

    def placed(self, limits: EnvLimits, label: str) -> EnvLimits:
        """`limits` completed with what this machine gives an env: a user (taken), a pids
        cgroup (made, named for `label`), the network and the file limit."""
        uid, gid = self._users.take()
        return msgspec.structs.replace(
            limits, max_files=self.limits.env_max_files, cgroup=self.cgroups.make(label),
            no_network=self.limits.env_no_network, uid=uid, gid=gid, own_uid=self._users.own,
        )

    def unplaced(self, limits: EnvLimits, forked: bool) -> None:
        """Give back what `placed` took for an env that did not start (`forked`: its process
        was made, and its exit gives its user back)."""
        self.cgroups.release(limits.cgroup)
        if not forked:
            self._users.give_back(limits.uid)

    async def launch(self, limits: EnvLimits, label: str, timeout: float) -> Launched:
        """Fork an env process on two new socket pairs (its limits are complete already)."""
        parent_end, child_end = socket.socketpair()
        out_end, out_child = socket.socketpair()
        try:
            pid, ended = await self.fork(child_end, out_child, timeout)
        except BaseException:
            parent_end.close()
            out_end.close()
            raise
        finally:
            child_end.close()  # ours only: the child's death must read as EOF here
            out_child.close()
        return Launched(pid, limits, ended, parent_end, out_end)

    async def fork(self, pipe_end: socket.socket, output_end: socket.socket, timeout: float) -> tuple[int, "asyncio.Future[Ended]"]:
        """Have the forkserver fork an env process on these sockets: its pid, and the future of
        how it ends (with the OOM killer's evidence, should a SIGKILL from outside end it)."""
        pid, exit_code = await self._forkserver.spawn(pipe_end, output_end, timeout)
        before = oom_kills()
        ended: asyncio.Future[Ended] = asyncio.get_running_loop().create_future()

        def on_exit(done: "asyncio.Future[int | None]") -> None:
            now = oom_kills()
            if not ended.done():
                ended.set_result(Ended(done.result(), None if None in (before, now) else now != before))

        exit_code.add_done_callback(on_exit)
        return pid, ended

    def kill(self, pid: int, cgroup: str | None, reaped: bool) -> None:
        """SIGKILL the env's process group, helpers included, and the env itself while unreaped.

        The group is signalled even after the env is reaped: its helpers live on in it, and a
        group id is not given to a new process while the group has members.
        """
        for send in (os.killpg,) if reaped else (os.killpg, os.kill):  # kill: in case setsid() had not run
            try:
                send(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if cgroup:
            cgroups.kill_all(cgroup)  # helpers that left the group with setsid() too

    async def start(self, handle: EnvHandle, timeout: float) -> None:
        """Start the handle's process; if that fails, its uid and cgroup are given back."""
        try:
            await handle.start(timeout)
        except BaseException:
            self.unplaced(handle.limits, forked=handle.pid is not None)
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

    def nodes(self) -> list[dict[str, Any]]:
        return []

    async def close(self) -> None:
        """After every env is closed: what escaped an own-uid env's group goes, then the cgroups
        and the forkserver."""
        if self._reaping:
            await asyncio.wait(self._reaping, timeout=CLOSE_TIMEOUT)
        await self.cgroups.close()
        await self._forkserver.close()

    def freed(self, limits: EnvLimits) -> None:
        """An env process ended: its uid, if its own, serves again once every process of it is
        gone (its helpers may have outlived it and its guardian)."""
        if limits.own_uid and limits.uid is not None:
            task = asyncio.ensure_future(self._give_back(limits.uid))
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)

    async def _give_back(self, uid: int) -> None:
        await self._forkserver.reap(uid)
        self._users.give_back(uid)


def asked_limits(limits: Limits, asked: AskedLimits, memory_cap: int, address_space: bool) -> EnvLimits:
    """An env's memory and CPU limits: the server's, a user's cap and what its create asked,
    whichever is tightest (`address_space`: the memory limit is an address-space limit too)."""
    memory_mb = int(tighter(tighter(limits.env_memory_mb or 0, memory_cap), asked.memory_mb))
    return EnvLimits(
        memory_mb=memory_mb,
        address_space_mb=memory_mb if address_space or asked.memory_mb else 0,
        cpu_seconds=tighter(limits.env_cpu_seconds, asked.cpu_seconds),
    )
