"""The watcher that enforces memory limits, idleness and age outlives a round that fails."""

import asyncio
import logging
import time

import pytest

from envproc.protocol import Reset, Step
from supervisor.errors import EnvCrashed
from supervisor.limits import Limits
from supervisor.registry import Registry
from supervisor.watcher import Watcher

pytestmark = pytest.mark.timeout(60)


class FailsOnce(Watcher):
    """A watcher whose first round raises, as a bug or a race in one round would."""

    failed = 0

    async def _round(self) -> None:
        if not self.failed:
            self.failed += 1
            raise RuntimeError("one bad round")
        await super()._round()


def test_a_failed_watch_round_is_logged_and_the_limits_still_act(caplog: pytest.LogCaptureFixture) -> None:
    limits = Limits(allow_modules=("tests.faulty_envs",), idle_timeout=1, env_memory_mb=150, watch_interval=0.1)

    async def scenario(registry: Registry) -> str:
        await registry.start()
        try:
            idle = await registry.create("CartPole-v1", {}, None, 30)
            hog = await registry.create("tests.faulty_envs:HelperHog-v0", {}, None, 30)
            await registry.call(hog, Reset, 30)
            with pytest.raises(EnvCrashed, match=r"hit its memory limit 150 MB \(its processes held"):  # 3 x 80 MB
                await registry.call(hog, Step, 30, body=b'{"action": 3}')
            deadline = time.monotonic() + 20
            while registry.get(idle).cause is None:
                assert time.monotonic() < deadline, "the idle env was never culled"
                await asyncio.sleep(0.05)
            return registry.get(idle).cause or ""
        finally:
            await registry.shutdown(0)

    registry = Registry(limits)
    registry._watcher = watcher = FailsOnce(registry)
    with caplog.at_level(logging.ERROR, logger="gym_supervisor.env"):
        cause = asyncio.run(scenario(registry))
    assert watcher.failed == 1
    assert cause == "was closed as idle after 1 s"
    failed = [r for r in caplog.records if r.getMessage() == "watch_failed"]
    assert failed and failed[0].exc_info and "one bad round" in str(failed[0].exc_info[1])


def test_dead_envs_past_the_cap_are_forgotten_oldest_first() -> None:
    from supervisor.watch import to_forget

    class Dead:
        def __init__(self, died: float) -> None:
            self.died, self.cause = died, "was killed by SIGSEGV"

    envs = [Dead(100.0 + i) for i in range(5)]
    forgotten = to_forget(envs, now=110.0, retention=600, kept=3)  # type: ignore[arg-type]
    assert [h.died for h, _ in forgotten] == [100.0, 101.0]  # the two oldest, early
    assert "dead envs being too many" in forgotten[0][1]
    assert [h.died for h, _ in to_forget(envs, now=701.5, retention=600, kept=10)] == [100.0, 101.0]  # retention
