"""The seam between the registry (ids, quotas, restarts, culling) and where env processes run.

`LocalBackend` (supervisor/local.py) forks them on this machine; a cluster backend places them
on other machines behind the same methods. The registry calls nothing else of a backend, and
reaches each env only through the handle a backend gives it (start, call with a timeout, kill,
close, info).
"""

from collections.abc import Callable
from typing import Any, Protocol

from supervisor.asked import AskedLimits
from supervisor.handle import EnvHandle
from supervisor.usage import Usage


class Backend(Protocol):
    name: str  # "local", ...

    @property
    def env_path(self) -> tuple[str, ...]:
        """Where env modules are looked for (for the start-up log)."""
        ...

    def serve(self) -> None:
        """Begin serving, on the running event loop."""

    async def room(self, timeout: float) -> None:
        """Wait, within `timeout`, until one more process could start, if that is worth waiting for."""

    def handle(
        self, instance_id: str, env_id: str, kwargs: dict[str, Any], seed: int | None, restarts: int,
        asked: AskedLimits, owner: str, memory_cap: int, on_death: Callable[[EnvHandle], bool],
    ) -> EnvHandle:
        """A handle for one process of an instance, not started. It must not await: the
        registry admits the env and counts it as starting in the same step."""
        ...

    async def start(self, handle: EnvHandle, timeout: float) -> None:
        """Start the handle's process within `timeout`; if it fails, nothing of it is left."""

    async def dispose(self, handle: EnvHandle, timeout: float, force: bool = False, **how: Any) -> None:
        """Close the handle for good (killing it if it will not close), and free what it held."""

    def usage(self, handles: list[EnvHandle]) -> list[Usage | None]:
        """Each env's CPU and memory now, in order (blocking; the watcher's thread calls it)."""
        ...

    def sweep(self) -> None:
        """Free what ended envs left behind (blocking; the watcher's thread calls it)."""

    def nodes(self) -> list[dict[str, Any]]:
        """The machines envs run on beside this one, for the admin's views (none for local)."""
        ...

    async def close(self) -> None:
        """Once every env is closed: stop what the backend runs itself."""
