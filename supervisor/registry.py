"""Every env of the server by instance id, and the forkserver their processes come from."""

import asyncio
import importlib.util
import logging
import multiprocessing
import os
import pwd
import time
import uuid
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

import msgspec

from envproc import protocol, sandbox
from envproc.protocol import EnvLimits
from supervisor.asked import NONE_ASKED, AskedLimits, tighter
from supervisor.cgroups import PidsCgroups
from supervisor.errors import (
    BadRequest,
    ConfigError,
    ServerBusy,
    SupervisorError,
    UnknownInstance,
)
from supervisor.exits import memory_cause
from supervisor.handle import EnvHandle, State, tree_pss
from supervisor.restart import RestartPolicy, crash_loop, loop_cause, recent

log = logging.getLogger("gym_supervisor.env")

# Imported once in the forkserver, so that every env process starts with them loaded.
BASE_PRELOAD = ("envproc.worker", "gymnasium.envs.classic_control", "gymnasium.envs.toy_text")

CLOSE_TIMEOUT = 5.0


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What the registry enforces; the API layer builds it from the server's settings."""

    allow_modules: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    max_envs: int = 0  # env processes alive or starting at once; 0: no limit
    env_memory_mb: int = 0  # per env, its whole process tree; 0: no limit
    env_cpu_seconds: float = 0  # per env process; 0: no limit
    env_max_files: int = 0  # open files per env process; 0: as inherited
    env_max_procs: int = 0  # processes and threads per env, where a pids cgroup can be had; 0: no limit
    idle_timeout: float = 0  # close an env with no request for this long; 0: never
    max_lifetime: float = 0  # close an env this long after its creation; 0: never
    dead_retention: float = 600  # forget a dead env's cause after this long
    watch_interval: float = 0.5  # seconds between looks at the envs (memory, idleness, age)
    create_timeout: float = 60  # for automatic restarts, which have no request to take one from
    restart: RestartPolicy | None = None  # the default for envs created without one
    env_user: str | None = None  # the user env code runs as
    env_no_network: bool = False  # each env in a network namespace of its own

RETRY_AFTER = 5  # seconds a client is told to wait when the server is full


class Registry:
    """Owns every env handle, keyed by instance id, from create until close."""

    def __init__(self, limits: Limits) -> None:
        for name in limits.preload:
            try:
                found = importlib.util.find_spec(name) is not None
            except ModuleNotFoundError:  # its parent package is missing
                found = False
            if not found:
                raise ConfigError(f"--preload {name}: no such module here")
        self.limits = limits
        self._user = _resolve_user(limits.env_user)
        if limits.env_no_network and (why := sandbox.can_unshare_network()) is not None:
            raise ConfigError(f"--env-no-network: this machine does not let the server make network namespaces ({why})")
        self._ctx = multiprocessing.get_context("forkserver")
        self._envs: dict[str, EnvHandle] = {}
        self._starting = 0
        self._closing = False
        self._watcher: asyncio.Task[None] | None = None
        self._cgroups = PidsCgroups(limits.env_max_procs)
        self._policies: dict[str, RestartPolicy] = {}
        self._history: dict[str, list[float]] = {}  # automatic restart times per instance
        self._restarting: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Start the forkserver with its modules imported, so the first create is fast too."""
        self._ctx.set_forkserver_preload([*BASE_PRELOAD, *self.limits.preload])
        await asyncio.get_running_loop().run_in_executor(None, forkserver.ensure_running)
        self._watcher = asyncio.create_task(self._watch(), name="env-watch")

    def prepare_directory(self, path: Path) -> None:
        """Make a directory an env will write to, owned by the env's user when it has one."""
        path.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(path, *self._user)

    def check_env_id(self, env_id: str) -> None:
        """Refuse `module:EnvId` for a module not allowed, before anything imports it."""
        if ":" not in env_id:
            return
        module = env_id.split(":", 1)[0]
        allowed = self.limits.allow_modules + self.limits.preload
        if module not in allowed:
            hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
            raise BadRequest(
                f"module '{module}' of env id '{env_id}' is not allowed on this server "
                f"(the admin allows one with --allow-module {module}){hint}"
            )

    async def create(
        self, env_id: str, kwargs: dict[str, Any], seed: int | None, timeout: float,
        restart: RestartPolicy | None = None, asked: AskedLimits = NONE_ASKED,
    ) -> str:
        if self._closing:
            raise ServerBusy("the server is shutting down and starts no new env")
        self.check_env_id(env_id)
        limit = self.limits.max_envs
        if limit and self.live() >= limit:
            raise ServerBusy(
                f"the server runs its limit of {limit} envs; close one of yours or retry later", RETRY_AFTER
            )
        instance_id = uuid.uuid4().hex[:8]
        while instance_id in self._envs:
            instance_id = uuid.uuid4().hex[:8]
        handle = await self._launch(instance_id, env_id, kwargs, seed, timeout, 0, asked)
        self._envs[instance_id] = handle
        policy = restart or self.limits.restart
        if policy is not None:
            self._policies[instance_id] = policy
        return instance_id

    async def _launch(
        self, instance_id: str, env_id: str, kwargs: dict[str, Any], seed: int | None, timeout: float, restarts: int,
        asked: AskedLimits,
    ) -> EnvHandle:
        """Start one process for an instance; nothing is left running if it fails."""
        env_limits = EnvLimits(
            memory_mb=int(tighter(self.limits.env_memory_mb, asked.memory_mb)),
            cpu_seconds=tighter(self.limits.env_cpu_seconds, asked.cpu_seconds),
            max_files=self.limits.env_max_files,
            cgroup=self._cgroups.make(f"{instance_id}-{restarts}"),
            no_network=self.limits.env_no_network,
            uid=self._user[0] if self._user else None,
            gid=self._user[1] if self._user else None,
        )
        handle = EnvHandle(
            self._ctx, instance_id, env_id, kwargs, seed, env_limits, self.limits.max_lifetime,
            restarts=restarts, on_death=self._on_death,
        )
        self._starting += 1
        try:
            await handle.start(timeout)
        except BaseException:
            self._cgroups.release(env_limits.cgroup)
            raise
        finally:
            self._starting -= 1
        if self._closing:  # close_all ran while this env started: it must not outlive the server
            await self._dispose(handle)
            raise ServerBusy("the server is shutting down and starts no new env")
        return handle

    async def _dispose(self, handle: EnvHandle, timeout: float = CLOSE_TIMEOUT, force: bool = False) -> None:
        """Close a handle for good: its process, and then its cgroup."""
        await handle.close(timeout, force=force)
        self._cgroups.release(handle.limits.cgroup)

    async def restart(self, instance_id: str, timeout: float) -> dict[str, Any]:
        """Kill the instance's process, whatever its state, and start a fresh one under its id."""
        await self._settle(instance_id, timeout)
        old = self.get(instance_id)
        report = {"pid": old.pid, "state": old.state.value, "cause": old.cause}
        await self._dispose(old, force=True)
        try:
            new = await self._launch(instance_id, old.env_id, old.kwargs, old.seed, timeout, old.restarts + 1, _asked(old))
        except BaseException as exc:
            old.amend_cause(f"was restarted, but the new process failed: {exc}")
            raise
        if self._envs.get(instance_id) is not old:  # closed while it restarted
            await self._dispose(new)
            raise UnknownInstance(instance_id)
        self._envs[instance_id] = new
        log.info("env_restarted instance=%s env_id=%s old_pid=%s pid=%s", instance_id, new.env_id, old.pid, new.pid)
        return {"instance_id": instance_id, "old": report, "new": {"pid": new.pid}}

    def _on_death(self, handle: EnvHandle) -> None:
        """An env died on its own: restart it if its policy says so."""
        iid = handle.instance_id
        if self._closing or self._envs.get(iid) is not handle or iid not in self._policies:
            return
        task = asyncio.create_task(self._restart_after_death(handle), name=f"restart-{iid}")
        self._restarting[iid] = task
        task.add_done_callback(lambda _: self._restarting.pop(iid, None))

    async def _restart_after_death(self, old: EnvHandle) -> None:
        iid, policy = old.instance_id, self._policies[old.instance_id]
        await old.reaped()
        now = time.time()
        history = recent(self._history.get(iid, []), now, policy)
        if crash_loop(history, now, policy):
            old.amend_cause(loop_cause(policy))
            log.warning("env_crash_loop instance=%s env_id=%s cause=%r", iid, old.env_id, old.cause)
            return
        self._history[iid] = [*history, now]
        try:
            new = await self._launch(
                iid, old.env_id, old.kwargs, old.seed, self.limits.create_timeout, old.restarts + 1, _asked(old)
            )
        except SupervisorError as exc:
            old.amend_cause(f"restarting it failed: {exc}")
            return
        if self._envs.get(iid) is not old:  # closed or restarted by hand meanwhile
            await self._dispose(new)
            return
        self._envs[iid] = new
        log.info("env_restarted instance=%s env_id=%s old_pid=%s pid=%s restarts=%d",
                 iid, new.env_id, old.pid, new.pid, new.restarts)

    async def _settle(self, instance_id: str, timeout: float) -> None:
        """Let an automatic restart under way finish (within the request's timeout)."""
        pending = self._restarting.get(instance_id)
        if pending is not None:
            try:
                await asyncio.wait_for(asyncio.shield(pending), timeout)
            except TimeoutError:
                pass

    def live(self) -> int:
        """Env processes running or starting; dead envs kept for their cause do not count."""
        return self._starting + sum(1 for h in self._envs.values() if h.cause is None)

    def get(self, instance_id: str) -> EnvHandle:
        try:
            return self._envs[instance_id]
        except KeyError:
            raise UnknownInstance(instance_id) from None

    async def call(self, instance_id: str, kind: type[protocol.Request], timeout: float, **fields: Any) -> bytes:
        handle = self.get(instance_id)
        if handle.cause is not None and instance_id in self._restarting:
            await self._settle(instance_id, timeout)
            handle = self.get(instance_id)
        return await handle.call(kind, timeout, **fields)

    def list_all(self) -> dict[str, str]:
        return {iid: h.env_id for iid, h in self._envs.items()}

    async def close(self, instance_id: str, timeout: float = CLOSE_TIMEOUT) -> None:
        handle = self._envs.pop(instance_id, None)
        if handle is None:
            raise UnknownInstance(instance_id)
        self._policies.pop(instance_id, None)
        self._history.pop(instance_id, None)
        await self._dispose(handle, timeout)

    async def close_all(self) -> None:
        self._closing = True
        for task in list(self._restarting.values()):
            task.cancel()
        await asyncio.gather(*self._restarting.values(), return_exceptions=True)
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        ids = list(self._envs)
        await asyncio.gather(*(self.close(i) for i in ids), return_exceptions=True)
        await self._cgroups.close()

    async def _watch(self) -> None:
        """Every watch_interval: stop envs over their memory, idle or too old; forget old deaths."""
        while True:
            await asyncio.sleep(self.limits.watch_interval)
            await self._stop_memory_hogs()
            self._cgroups.sweep()
            now = time.time()
            for h in list(self._envs.values()):
                if h.cause is None and h.state is State.READY:
                    if self.limits.idle_timeout and now - h.last_active > self.limits.idle_timeout:
                        h.end(f"was closed as idle after {self.limits.idle_timeout:g} s")
                    elif h.past_lifetime(now):
                        h.end(f"was closed at the end of its lifetime of {self.limits.max_lifetime:g} s")
                elif h.died is not None and now - h.died > self.limits.dead_retention:
                    await self.close(h.instance_id)
                    log.info("env_forgotten instance=%s env_id=%s cause=%r", h.instance_id, h.env_id, h.cause)

    async def _stop_memory_hogs(self) -> None:
        """Kill an env whose process tree holds more than its limit: helpers have rlimits of
        their own, so only the sum over the tree tells."""
        live = [h for h in self._envs.values() if h.cause is None and h.pid is not None and h.limits.memory_mb]
        if not live:
            return
        usage = await asyncio.get_running_loop().run_in_executor(None, lambda: [tree_pss(h.pid) for h in live])
        over = [
            (h, rss) for h, rss in zip(live, usage, strict=True) if rss is not None and rss > h.limits.memory_mb * 2**20
        ]
        await asyncio.gather(*(
            h.kill(f"{memory_cause(h.limits)} (its processes held {rss / 2**20:.0f} MB)") for h, rss in over
        ))


def _resolve_user(name: str | None) -> tuple[int, int] | None:
    if name is None:
        return None
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"--env-user {name}: no such user on this machine") from None
    if os.geteuid() != 0:
        raise ConfigError(f"--env-user {name}: the server must run as root to run envs as another user")
    return user.pw_uid, user.pw_gid


def _asked(old: EnvHandle) -> AskedLimits:
    """A restarted env keeps the limits its create asked for."""
    return AskedLimits(memory_mb=old.limits.memory_mb, cpu_seconds=old.limits.cpu_seconds)
