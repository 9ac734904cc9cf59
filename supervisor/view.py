"""The registry as one caller sees it: their own envs only, within their quotas."""

from typing import Any, Literal

import msgspec

from envproc import protocol
from supervisor.asked import NONE_ASKED, AskedLimits
from supervisor.errors import BadRequest
from supervisor.handle import EnvHandle
from supervisor.registry import Registry
from supervisor.restart import RestartPolicy

Role = Literal["user", "viewer", "admin"]


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    """Who sends a request: a user of the users file, or the open server's one user."""

    name: str
    role: Role = "user"
    max_envs: int = 0  # envs alive at once (0: no quota)
    max_env_memory_mb: int = 0  # the memory limit of each of their envs, at most (0: the server's)
    max_step_timeout: float = 0  # seconds any request of theirs may run, at most (0: the server's cap)

    def timeout_cap(self, server_cap: float) -> float:
        return min(server_cap, self.max_step_timeout) if self.max_step_timeout else server_cap


OPEN = Caller(name="", role="admin")  # a server without users: one user, who may do anything


class CallerView:
    """Owns nothing but the filter: others' ids do not exist here, and creates and restarts
    count against the caller's quota. Every v1 route goes through one, whatever the role;
    `sees_all` opens every env's reads to viewers and admins where a route allows it (render)."""

    def __init__(self, registry: Registry, caller: Caller, sees_all: bool = False) -> None:
        self._registry = registry
        self.caller = caller
        self._sees_all = sees_all and caller.role in ("viewer", "admin")

    def get(self, instance_id: str) -> EnvHandle:
        if self._sees_all:
            return self._registry.get(instance_id)
        return self._registry.owned(instance_id, self.caller.name)

    async def create(
        self, env_id: str, kwargs: dict[str, Any], seed: int | None, timeout: float,
        restart: RestartPolicy | None = None, asked: AskedLimits = NONE_ASKED,
    ) -> str:
        cap = self.caller.max_env_memory_mb
        if cap and asked.memory_mb > cap:
            raise BadRequest(f"limits.memory_mb {asked.memory_mb} is more than user {self.caller.name}'s cap of "
                             f"{cap} MB per env (max_env_memory_mb); ask for {cap} or less")
        return await self._registry.create(env_id, kwargs, seed, timeout, restart, asked, owner=self.caller.name,
                                           quota=self.caller.max_envs, memory_cap=cap)

    def list_all(self) -> dict[str, str]:
        return {h.instance_id: h.env_id for h in self._registry.handles() if h.owner == self.caller.name}

    def info(self, instance_id: str) -> dict[str, Any]:
        return self.get(instance_id).info()

    async def call(self, instance_id: str, kind: type[protocol.Request], timeout: float, **fields: Any) -> bytes:
        self.get(instance_id)
        return await self._registry.call(instance_id, kind, timeout, **fields)

    async def restart(self, instance_id: str, timeout: float) -> dict[str, Any]:
        self.get(instance_id)
        return await self._registry.restart(instance_id, timeout, quota=self.caller.max_envs)

    async def close(self, instance_id: str) -> None:
        self.get(instance_id)
        await self._registry.close(instance_id)

    def prepare_directory(self, instance_id: str, directory: str) -> str:
        self.get(instance_id)
        return self._registry.prepare_directory(instance_id, directory)

    def restart_policy(self, instance_id: str) -> RestartPolicy | None:
        return self._registry.restart_policy(instance_id)
