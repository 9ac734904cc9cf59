"""Every env of the server by instance id, and the forkserver their processes come from."""

import asyncio
import collections
import logging
import time
import uuid
from typing import Any

import msgspec

from envproc import protocol
from supervisor.asked import NONE_ASKED, AskedLimits
from supervisor.backend import Backend
from supervisor.datadir import DataDir
from supervisor.errors import (
    BadRequest,
    ConfigError,
    EnvCrashed,
    EnvGone,
    QuotaExceeded,
    ServerBusy,
    ShuttingDown,
    SupervisorError,
    TooLarge,
    UnknownInstance,
)
from supervisor.fates import Fates
from supervisor.handle import EnvHandle
from supervisor.lifecycle import DEATHS
from supervisor.limits import Limits
from supervisor.local import LocalBackend
from supervisor.pool import Pool, parse_prespawn
from supervisor.probe import Probe
from supervisor.restart import RestartPolicy
from supervisor.restarter import Restarter
from supervisor.usage import default_max_procs, default_memory_mb
from supervisor.watcher import Watcher

log = logging.getLogger("gym_supervisor.env")

CLOSE_TIMEOUT = 5.0
RETRY_AFTER = 5  # seconds a client is told to wait when the server is full


class Registry:
    """Owns every env handle, keyed by instance id, from create until close, and the fates of
    recently closed or forgotten ids."""

    def __init__(self, limits: Limits) -> None:
        # An address-space limit breaks envs that reserve much more than they use (JAX, torch):
        # only a memory limit the admin set is one too; the default is watched only.
        address_space = limits.env_memory_mb is not None
        self.limits = limits = msgspec.structs.replace(  # the defaults that depend on the machine
            limits,
            env_memory_mb=default_memory_mb() if limits.env_memory_mb is None else limits.env_memory_mb,
            max_procs=default_max_procs() if limits.max_procs is None else limits.max_procs,
        )
        self.data_dir = DataDir(limits.data_dir, limits.data_dir_max_mb)
        self.backend: Backend  # where env processes run
        if limits.backend == "ray":
            from supervisor.cluster import RayBackend  # Ray is an extra: imported only when asked for

            self.backend = RayBackend(limits, self.data_dir.path, address_space)
        else:
            self.backend = LocalBackend(limits, self.data_dir.path, address_space)
        self._envs: dict[str, EnvHandle] = {}
        self._starting: set[EnvHandle] = set()
        self._fates = Fates()
        self._closing = False
        self._closed = asyncio.Event()
        self._hurry = asyncio.Event()
        self._watcher = Watcher(self)
        self.restarts = Restarter(self)
        self.probe = Probe(self)
        self.pool = Pool(self, parse_prespawn(limits.prespawn))
        for env_id in self.pool.sizes:
            try:
                self.check_env_id(env_id)
            except BadRequest as exc:
                raise ConfigError(f"--prespawn {env_id}: {exc}") from None
        self.deaths: collections.Counter[str] = collections.Counter({kind: 0 for kind in DEATHS})
        self.started = time.time()

    @property
    def env_path(self) -> tuple[str, ...]:
        return self.backend.env_path

    async def start(self) -> None:
        self.backend.serve()
        self._watcher.start()
        self.pool.start()

    def prepare_directory(self, instance_id: str, directory: str) -> str:
        """Make a client's monitor directory for an env, under the data dir (and in it under its
        owner's name, where envs have owners), owned by the env's user when it has one (never
        following a link the env could plant); its path."""
        handle = self.get(instance_id)
        limits = handle.limits
        owner = (limits.uid, limits.gid) if limits.uid is not None and limits.gid is not None else None
        return self.data_dir.make(directory, owner, under=handle.owner)

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
        restart: RestartPolicy | None = None, asked: AskedLimits = NONE_ASKED, owner: str = "", quota: int = 0,
        memory_cap: int = 0,
    ) -> str:
        """Start an env for `owner`, who may run `quota` envs at most (0: any number), each with
        at most `memory_cap` MB (0: the server's limit); its id."""
        if self._closing:
            raise ShuttingDown()
        self.check_env_id(env_id)
        cap = self.limits.max_kwargs_bytes
        if cap and (size := len(msgspec.json.encode(kwargs))) > cap:
            raise TooLarge(f"create's kwargs take {size:,} bytes of JSON, more than this server's limit of {cap:,} "
                           "(--max-kwargs-bytes); pass less, or ask the admin")
        server_mb = self.limits.env_memory_mb or 0
        pooled = not kwargs and asked == NONE_ASKED and (not memory_cap or (server_mb and memory_cap >= server_mb))
        if pooled and self.pool.ready(env_id):
            self._admit(owner, quota)
        handle = self.pool.take(env_id) if pooled else None
        if handle is not None:
            self._starting.add(handle)  # counted against its owner's quota while it is handed over
            try:
                await self.pool.handover(handle, owner, seed, timeout)
            except BaseException:
                await self.dispose(handle)
                raise
            finally:
                self._starting.discard(handle)
            if self._closing:  # the shutdown began during the handover: it must not outlive the server
                await self.dispose(handle)
                raise ShuttingDown()
            log.info("env_created instance=%s env_id=%r pid=%s from=pool", handle.instance_id, env_id, handle.pid)
        else:
            handle = await self.launch(self._new_id(), env_id, kwargs, seed, timeout, 0, asked, owner, quota,
                                       memory_cap)
        instance_id = handle.instance_id
        self._envs[instance_id] = handle
        self.restarts.set_policy(instance_id, restart)
        return instance_id

    async def launch(
        self, instance_id: str, env_id: str, kwargs: dict[str, Any], seed: int | None, timeout: float, restarts: int,
        asked: AskedLimits, owner: str, quota: int = 0, memory_cap: int = 0, admit: bool = True,
    ) -> EnvHandle:
        """Start one process for an instance, if the server (and the owner's quota) may run one
        more (every path that starts a process comes here); nothing is left running if it fails.
        `admit` False: the server's own env (the probe, the pool), admitted by no limit."""
        await self.backend.room(timeout)
        # From the admission to `_starting` nothing awaits: two creates cannot both take the last place.
        if admit:
            self._admit(owner, quota)
        handle = self.backend.handle(instance_id, env_id, kwargs, seed, restarts, asked, owner, memory_cap,
                                     self._on_death)
        handle.reserve = not admit
        self._starting.add(handle)
        try:
            await self.backend.start(handle, timeout)
        except BaseException as exc:
            if self._closing and isinstance(exc, SupervisorError):
                raise ShuttingDown() from None  # the shutdown killed it while it started
            raise
        finally:
            self._starting.discard(handle)
        if self._closing:  # the shutdown began while this env started: it must not outlive the server
            await self.dispose(handle)
            raise ShuttingDown()
        return handle

    def _admit(self, owner: str, quota: int = 0) -> None:
        """Refuse one more env process past --max-envs, or one more env of `owner` past `quota`."""
        limit = self.limits.max_envs
        if limit and self.live() >= limit:
            raise ServerBusy(
                f"the server runs its limit of {limit} envs; close one of yours or retry later", RETRY_AFTER
            )
        if quota and (mine := self.live(owner)) >= quota:
            raise QuotaExceeded(f"user {owner} runs {mine} envs, their quota (max_envs = {quota}); "
                                "close one of them first")

    def _new_id(self) -> str:
        instance_id = uuid.uuid4().hex[:8]
        while instance_id in self._envs or instance_id in self._fates:
            instance_id = uuid.uuid4().hex[:8]
        return instance_id

    async def launch_pooled(self, env_id: str, timeout: float) -> EnvHandle:
        """An env for the warm pool: made with no kwargs and no seed, under the id it will keep."""
        if self._closing:
            raise ShuttingDown()
        return await self.launch(self._new_id(), env_id, {}, None, timeout, 0, NONE_ASKED, "", admit=False)

    async def launch_probe(self, instance_id: str, env_id: str, timeout: float) -> EnvHandle:
        """The health probe's env: the server's own, outside --max-envs, listed nowhere."""
        if self._closing:
            raise ShuttingDown()
        return await self.launch(instance_id, env_id, {}, None, timeout, 0, NONE_ASKED, "", admit=False)

    async def health(self) -> str | None:
        """None while an env can be made and stepped; else why not."""
        if self._closing:
            return ShuttingDown().args[0]
        return await self.probe.check()

    async def dispose(self, handle: EnvHandle, timeout: float = CLOSE_TIMEOUT, force: bool = False,
                      **how: Any) -> None:
        """Close a handle for good, and free what its backend held for it."""
        await self.backend.dispose(handle, timeout, force, **how)

    async def restart(self, instance_id: str, timeout: float, quota: int = 0) -> dict[str, Any]:
        """Kill the instance's process, whatever its state, and start a fresh one under its id.
        Requests waiting their turn on the old process go to the new one. `quota`: the envs its
        owner may run, if the restart counts against it (a restart by an admin does not)."""
        if self._closing:
            raise ShuttingDown()
        await self.restarts.settle(instance_id, timeout)
        old = self.get(instance_id)
        if old.cause is not None:  # a dead env's new process is one more: it must fit, before the old goes
            self._admit(old.owner, quota)
        report = {"pid": old.pid, "state": old.state.value, "cause": old.cause}
        new = await self.restarts.by_hand(old, timeout)
        return {"instance_id": instance_id, "old": report, "new": {"pid": new.pid}}

    def swap(self, old: EnvHandle, new: EnvHandle) -> bool:
        """Put a restarted process's handle in its instance's place, if `old` still holds it."""
        if not self.listed(old):
            return False
        self._envs[old.instance_id] = new
        return True

    def fate_of(self, instance_id: str, owner: str | None = None) -> str | None:
        """What became of an id no longer listed, as far as the server remembers."""
        return self._fates.get(instance_id, owner)

    def _on_death(self, handle: EnvHandle) -> bool:
        """An env died (not closed): count it, and restart it if it died of something a restart
        answers and its policy says so (True if it will try)."""
        if self._closing:
            return False
        self.deaths[handle.death or "crash"] += 1
        return self.restarts.after_death(handle)

    def restart_policy(self, instance_id: str) -> RestartPolicy | None:
        """The policy an env runs under, as the server bounded it."""
        return self.restarts.policy(instance_id)

    def live(self, owner: str | None = None) -> int:
        """Env processes running or starting, of `owner` or of all; dead envs kept for their
        cause do not count, nor an owner's envs being restarted."""
        if owner is None:
            return sum(1 for h in self._starting if not h.reserve) + sum(1 for h in self._envs.values() if h.cause is None)
        return (sum(1 for h in self._starting if h.owner == owner and not h.restarts and not h.reserve)
                + sum(1 for h in self._envs.values() if h.cause is None and h.owner == owner))

    def handles(self) -> list[EnvHandle]:
        """Every env listed, of every owner (for admins)."""
        return list(self._envs.values())

    def listed(self, handle: EnvHandle) -> bool:
        """The handle still stands for its instance (not closed, not replaced by a restart)."""
        return self._envs.get(handle.instance_id) is handle

    async def kill(self, instance_id: str, by: str) -> None:
        """Kill an env now, whatever it does, for admin `by`: a request in flight is answered
        502 at once, the next ones 410; it is not restarted."""
        handle = self.get(instance_id)
        who = f"admin {by}" if by else "an admin"  # an open server's one user has no name
        fate = (EnvCrashed, f"env {instance_id} ({handle.env_id}) was killed by {who} while this request ran; "
                            "close it and create a new one")
        await handle.kill(f"was killed by {who}", fate, kind="admin_kill")

    async def close_owner(self, owner: str, fate: str) -> list[str]:
        """Close every env of `owner` (a user removed); their ids."""
        ids = [iid for iid, h in self._envs.items() if h.owner == owner]
        await asyncio.gather(*(self.close(iid, fate=fate) for iid in ids), return_exceptions=True)
        return ids

    def get(self, instance_id: str) -> EnvHandle:
        try:
            return self._envs[instance_id]
        except KeyError:
            raise UnknownInstance(instance_id, self._fates.get(instance_id)) from None

    def owned(self, instance_id: str, owner: str) -> EnvHandle:
        """An env of `owner`'s; any other id reads as unknown, whoever's it is."""
        handle = self._envs.get(instance_id)
        if handle is None or handle.owner != owner:
            raise UnknownInstance(instance_id, self._fates.get(instance_id, owner))
        return handle

    async def call(self, instance_id: str, kind: type[protocol.Request], timeout: float, **fields: Any) -> bytes:
        """One request to an env. A request that waited on a process that died, and was never
        sent to it, goes to the process that replaced it (a restart), if there is one."""
        if self._closing:
            raise ShuttingDown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        handle = self.get(instance_id)
        while True:
            if handle.cause is not None and self.restarts.under_way(instance_id):
                await self.restarts.settle(instance_id, deadline - loop.time())
                handle = self.get(instance_id)
            try:
                return await handle.call(kind, timeout, deadline=deadline, **fields)
            except EnvGone:
                if self._closing:
                    raise ShuttingDown() from None
                if self.restarts.under_way(instance_id):
                    await self.restarts.settle(instance_id, deadline - loop.time())
                new = self._envs.get(instance_id)
                if new is None or new is handle or deadline <= loop.time():
                    raise
                handle = new

    async def close(self, instance_id: str, timeout: float = CLOSE_TIMEOUT, fate: str = "was closed") -> None:
        handle = self._envs.pop(instance_id, None)
        if handle is None:
            raise UnknownInstance(instance_id, self._fates.get(instance_id))
        self._fates.remember(instance_id, fate, handle.owner)
        self.restarts.forget(instance_id)
        await self.dispose(handle, timeout, fate=(EnvGone, f"env {instance_id} ({handle.env_id}) was closed "
                                                           "by a close request while this request ran"))

    async def shutdown(self, grace: float) -> None:
        """Stop: no new request runs; requests running may finish within `grace` seconds (or
        until `hurry`); then every env is closed, and those still busy are killed, their
        requests answered 503. Idempotent: the lifespan's shutdown calls it again."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await asyncio.gather(self.restarts.stop(), self._watcher.stop(), return_exceptions=True)
        fate = (ShuttingDown, ShuttingDown().args[0])
        hurry = asyncio.ensure_future(self._hurry.wait())
        # a create under way is not worth waiting for: its client is answered 503 now
        starting = [handle.kill("was stopped: the server is shutting down", fate) for handle in self._starting]

        async def stop(iid: str, handle: EnvHandle) -> None:
            close = asyncio.ensure_future(
                self.dispose(handle, max(deadline - loop.time(), 0.001), wait_turn=True, fate=fate))
            await asyncio.wait([close, hurry], return_when=asyncio.FIRST_COMPLETED)
            if not close.done():  # a second signal: now
                await handle.kill("was stopped: the server is shutting down", fate)
                await close

        try:
            await asyncio.gather(*starting, *(stop(i, h) for i, h in self._envs.items()), return_exceptions=True)
            hurry.cancel()
            self._envs.clear()
            await self.probe.close()
            await self.pool.close()
            await self.backend.close()
            self.data_dir.close()
        finally:
            self._closed.set()  # a second caller must not wait for ever on a first that failed

    def hurry(self) -> None:
        """End the shutdown's grace now (a second SIGINT or SIGTERM)."""
        self._hurry.set()

