"""The server's own probe env, for /healthz: made and stepped as any env is, listed nowhere and
counted in no quota."""

import asyncio
import time
from typing import TYPE_CHECKING

from envproc.protocol import Reset, Step
from supervisor.errors import SupervisorError

if TYPE_CHECKING:
    from supervisor.handle import EnvHandle
    from supervisor.registry import Registry

PROBE_ENV = "CartPole-v1"  # built into Gymnasium: its failure is the server's, not an env module's
PROBE_ID = "healthz"
PROBE_TIMEOUT = 10.0
FRESH = 1.0  # seconds an answer stands: a flood of health checks costs one probe a second


class Probe:
    """Owns the probe env's handle (kept between checks, made again once it dies) and the last
    answer."""

    def __init__(self, registry: "Registry") -> None:
        self._registry = registry
        self._handle: EnvHandle | None = None
        self._lock = asyncio.Lock()
        self._why: str | None = None
        self._at = -FRESH

    async def check(self) -> str | None:
        """None while an env can be made and stepped; else why not."""
        async with self._lock:
            if time.monotonic() - self._at >= FRESH:
                self._why = await self._run()
                self._at = time.monotonic()
            return self._why

    async def _run(self) -> str | None:
        try:
            if self._handle is None or self._handle.cause is not None:
                await self.close()
                self._handle = await self._registry.launch_probe(PROBE_ID, PROBE_ENV, PROBE_TIMEOUT)
            await self._handle.call(Reset, PROBE_TIMEOUT)
            await self._handle.call(Step, PROBE_TIMEOUT, body=b'{"action": 0}')
        except SupervisorError as exc:
            return f"the probe env could not be made or stepped: {exc}"
        return None

    async def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            await self._registry.dispose(handle)
