"""The watcher: every watch_interval, the usage of every env read once (in a thread of its own)
and what supervisor/watch.py decides carried out: envs over memory killed, idle and old ones
ended, old deaths forgotten; and every few rounds the data dir measured against its cap."""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from envproc.protocol import MonitorClose
from supervisor.lifecycle import State
from supervisor.watch import over_memory, to_end, to_forget

if TYPE_CHECKING:
    from supervisor.registry import Registry

log = logging.getLogger("gym_supervisor.env")

DATA_DIR_EVERY = 10  # the data dir's size is measured every this many rounds (a walk of it)
MONITOR_CLOSE_TIMEOUT = 5.0
# The watcher's blocking reads get a thread of their own: clients polling env info, which use
# the shared pool, cannot delay a memory round.
_watch_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="env-watch")
_data_dir_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-dir")  # a walk may be long


class Watcher:
    """Owns the watching task, its count of rounds and the walk of the data dir under way."""

    def __init__(self, registry: "Registry") -> None:
        self._registry = registry
        self._task: asyncio.Task[None] | None = None
        self._rounds = 0
        self._measuring: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="env-watch")

    async def stop(self) -> None:
        for task in (self._measuring, self._task):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._measuring, self._task) if t is not None), return_exceptions=True)

    async def _watch(self) -> None:
        """A round that fails is logged and the next one runs: one bad round must not end every
        limit the watcher enforces."""
        while True:
            await asyncio.sleep(self._registry.limits.watch_interval)
            try:
                await self._round()
            except Exception:
                log.exception("watch_failed")

    async def _round(self) -> None:
        registry, limits = self._registry, self._registry.limits
        loop = asyncio.get_running_loop()
        live = [h for h in registry.handles() if h.cause is None and h.pid is not None]
        usage = await loop.run_in_executor(_watch_thread, registry.backend.usage, live)
        read_at = loop.time()
        for h, used in zip(live, usage, strict=True):
            h.observe(used, read_at)
        await asyncio.gather(*(h.kill(cause, kind="memory") for h, cause in over_memory(live)))
        await loop.run_in_executor(_watch_thread, registry.backend.sweep)
        self._rounds += 1
        due = registry.data_dir.cap_mb and self._rounds % DATA_DIR_EVERY == 1
        if due and (self._measuring is None or self._measuring.done()):  # a slow walk delays no round
            self._measuring = asyncio.ensure_future(self._measure_data_dir())
        now = time.time()
        for h, cause, kind in to_end(registry.handles(), now, limits.idle_timeout, limits.max_lifetime):
            h.end(cause, kind)
        for h, fate in to_forget(registry.handles(), now, limits.dead_retention):
            if registry.listed(h):  # its client may have closed it meanwhile
                await registry.close(h.instance_id, fate=fate)
                log.info("env_forgotten instance=%s env_id=%r cause=%r", h.instance_id, h.env_id, h.cause)

    async def _measure_data_dir(self) -> None:
        if await asyncio.get_running_loop().run_in_executor(_data_dir_thread, self._registry.data_dir.measure):
            await self._close_monitors()

    async def _close_monitors(self) -> None:
        """The data dir is past its cap: running monitors are closed (an env at work on a
        request at a later round, once it is idle)."""
        writing = [h for h in self._registry.handles() if h.monitoring and h.state is State.READY]
        await asyncio.gather(*(h.call(MonitorClose, MONITOR_CLOSE_TIMEOUT) for h in writing), return_exceptions=True)
        for h in writing:
            log.warning("monitor_closed instance=%s env_id=%r reason=data_dir_full", h.instance_id, h.env_id)
