"""The warm pool (--prespawn ENV_ID=N): envs started and made ahead of their creates, refilled
in the background, so that a create of a pooled id costs a handover instead of a fork and a make."""

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from envproc.protocol import Seed
from supervisor.errors import ConfigError, ShuttingDown, SupervisorError

if TYPE_CHECKING:
    from supervisor.handle import EnvHandle
    from supervisor.registry import Registry

log = logging.getLogger("gym_supervisor.env")

MAX_PER_ID = 64
MAKE_TIMEOUT = 60.0


def parse_prespawn(specs: tuple[str, ...]) -> dict[str, int]:
    """`("CartPole-v1=4",)` -> `{"CartPole-v1": 4}`; ConfigError saying what is wrong otherwise."""
    out: dict[str, int] = {}
    for spec in specs:
        env_id, eq, count = spec.rpartition("=")
        if not eq or not env_id or not count.isdigit() or not 1 <= int(count) <= MAX_PER_ID:
            raise ConfigError(f"--prespawn {spec!r}: give ENV_ID=N, N from 1 to {MAX_PER_ID}")
        out[env_id] = int(count)
    return out


class Pool:
    """Owns the ready envs of each pooled env id (made with no kwargs and no seed, owned by no
    one, listed nowhere and counted in no limit until taken) and the tasks that refill them."""

    def __init__(self, registry: "Registry", sizes: dict[str, int]) -> None:
        self._registry = registry
        self.sizes = sizes
        self._ready: dict[str, list[EnvHandle]] = {env_id: [] for env_id in sizes}
        self._filling: dict[str, asyncio.Task[None]] = {}
        self._failed: set[str] = set()  # ids whose make failed: not retried (it would fail alike)
        self._disposing: set[asyncio.Future[None]] = set()  # pooled envs that died waiting

    def start(self) -> None:
        for env_id in self.sizes:
            self._refill(env_id)

    def ready(self, env_id: str) -> int:
        return len(self._ready.get(env_id, []))

    def take(self, env_id: str) -> "EnvHandle | None":
        """A ready env of this id, if the pool has one alive; the pool refills behind it."""
        ready = self._ready.get(env_id)
        while ready:
            handle = ready.pop()
            if handle.cause is None:
                self._refill(env_id)
                return handle
            task = asyncio.ensure_future(self._registry.dispose(handle))  # died waiting: reap it
            self._disposing.add(task)
            task.add_done_callback(self._disposing.discard)
        return None

    async def handover(self, handle: "EnvHandle", owner: str, seed: int | None, timeout: float) -> None:
        """Make a pooled env the owner's, as if made now with `seed`."""
        handle.life.owner, handle.seed, handle.reserve = owner, seed, False
        handle.life.created = handle.life.last_active = time.time()
        if seed is not None:
            await handle.call(Seed, timeout, seed=seed)

    def _refill(self, env_id: str) -> None:
        if env_id in self._failed or env_id in self._filling:
            return
        task = asyncio.create_task(self._fill(env_id), name=f"pool-{env_id}")
        self._filling[env_id] = task
        task.add_done_callback(lambda _: self._filling.pop(env_id, None))

    async def _fill(self, env_id: str) -> None:
        ready = self._ready[env_id]
        while len(ready) < self.sizes[env_id]:
            try:
                ready.append(await self._registry.launch_pooled(env_id, MAKE_TIMEOUT))
            except ShuttingDown:
                return
            except SupervisorError as exc:
                self._failed.add(env_id)
                log.warning("pool_failed env_id=%r error=%r", env_id, str(exc))
                return

    async def close(self) -> None:
        for task in self._filling.values():
            task.cancel()
        await asyncio.gather(*self._filling.values(), *self._disposing, return_exceptions=True)
        handles = [h for ready in self._ready.values() for h in ready]
        for ready in self._ready.values():
            ready.clear()
        await asyncio.gather(*(self._registry.dispose(h) for h in handles), return_exceptions=True)
