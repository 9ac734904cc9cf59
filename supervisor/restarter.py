"""Restarts: by hand (a restart request, an admin's) and after a death the policy answers, both
one path, that puts a new process under the old instance id."""

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from supervisor.asked import AskedLimits
from supervisor.errors import EnvCrashed, SupervisorError, UnknownInstance
from supervisor.restart import RestartPolicy, bounded, crash_loop, loop_cause, recent

if TYPE_CHECKING:
    from supervisor.handle import EnvHandle
    from supervisor.registry import Registry

log = logging.getLogger("gym_supervisor.env")

RESTARTED = {"crash", "timeout", "memory", "cpu", "node_lost"}  # deaths a restart policy answers; the server's own ends it does not


class Restarter:
    """Owns the restart policy of each instance that has one, the times of its automatic
    restarts (for the crash-loop rule), and the restarts under way."""

    def __init__(self, registry: "Registry") -> None:
        self._registry = registry
        self._policies: dict[str, RestartPolicy] = {}
        self._history: dict[str, list[float]] = {}
        self._running: dict[str, asyncio.Task["EnvHandle | None"]] = {}

    def set_policy(self, instance_id: str, asked: RestartPolicy | None) -> None:
        """The policy a create asked for, or the server's default, held to the server's bounds."""
        limits = self._registry.limits
        if asked is None and limits.restart_max:
            asked = RestartPolicy(limits.restart_max)
        if asked is not None:
            self._policies[instance_id] = bounded(asked, limits.restart_max, limits.restart_within)

    def policy(self, instance_id: str) -> RestartPolicy | None:
        return self._policies.get(instance_id)

    def forget(self, instance_id: str) -> None:
        """The instance is closed: no policy, no history."""
        self._policies.pop(instance_id, None)
        self._history.pop(instance_id, None)

    def under_way(self, instance_id: str) -> bool:
        return instance_id in self._running

    async def settle(self, instance_id: str, timeout: float) -> None:
        """Let a restart under way finish (within `timeout`)."""
        pending = self._running.get(instance_id)
        if pending is not None:
            try:
                await asyncio.wait_for(asyncio.shield(pending), timeout)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        """The server stops: no restart goes on."""
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def by_hand(self, old: "EnvHandle", timeout: float) -> "EnvHandle":
        """Kill `old` whatever it does and start its new process; the new handle. It goes on if
        the caller goes away (the instance must not be left without a process)."""
        iid = old.instance_id
        task = self._track(iid, asyncio.create_task(self._replace(old, timeout), name=f"restart-{iid}"))
        new = await asyncio.shield(task)
        assert new is not None
        return new

    def after_death(self, handle: "EnvHandle") -> bool:
        """An env died of `handle.death`: start its restart if its policy answers that death
        (True if the env will come back, False if it will not, a crash loop included)."""
        iid = handle.instance_id
        policy = self._policies.get(iid)
        if handle.death not in RESTARTED or policy is None or not self._registry.listed(handle):
            return False
        timeout = self._registry.limits.create_timeout
        self._track(iid, asyncio.create_task(self._replace(handle, timeout, policy), name=f"restart-{iid}"))
        return not crash_loop(self._history.get(iid, []), time.time(), policy)

    def _track(self, iid: str, task: "asyncio.Task[EnvHandle | None]") -> "asyncio.Task[EnvHandle | None]":
        self._running[iid] = task
        task.add_done_callback(lambda done: self._running.pop(iid, None) if self._running.get(iid) is done else None)
        return task

    async def _replace(self, old: "EnvHandle", timeout: float,
                       policy: RestartPolicy | None = None) -> "EnvHandle | None":
        """The one restart: the old process gone, a new one under the instance's id, swapped in
        if the instance is still listed. By hand (no `policy`), a failure is raised to the
        caller; after a death, under `policy` (as it stood then: a close may forget it while the
        old process is reaped), it becomes part of the old env's cause, and a crash loop ends
        the restarts."""
        registry, iid = self._registry, old.instance_id
        by_hand = policy is None
        if by_hand:
            fate = (EnvCrashed, f"env {iid} ({old.env_id}) was restarted by a restart request while this request "
                                "ran; reset it before its next step")
            await registry.dispose(old, force=True, fate=fate)
        else:
            await old.reaped()
            now = time.time()
            history = recent(self._history.get(iid, []), now, policy)
            if crash_loop(history, now, policy):
                old.amend_cause(loop_cause(policy), "crash_loop")
                registry.deaths["crash_loop"] += 1
                log.warning("env_crash_loop instance=%s env_id=%r cause=%r", iid, old.env_id, old.cause)
                return None
            self._history[iid] = [*history, now]
        try:
            new = await registry.launch(iid, old.env_id, old.kwargs, old.seed, timeout, old.restarts + 1,
                                        _asked(old), old.owner, memory_cap=old.limits.memory_mb)
        except BaseException as exc:
            if not (by_hand or isinstance(exc, SupervisorError)):
                raise
            old.amend_cause(f"was restarted, but the new process failed: {exc}" if by_hand
                            else f"restarting it failed: {exc}")
            if by_hand:
                raise
            return None
        if not registry.swap(old, new):  # closed (or restarted by hand) meanwhile
            await registry.dispose(new)
            if by_hand:
                raise UnknownInstance(iid, registry.fate_of(iid, old.owner))
            return None
        log.info("env_restarted instance=%s env_id=%r old_pid=%s pid=%s restarts=%d by=%s",
                 iid, new.env_id, old.pid, new.pid, new.restarts, "hand" if by_hand else "policy")
        return new


def _asked(old: "EnvHandle") -> AskedLimits:
    """A restarted env keeps the limits its create asked for."""
    return AskedLimits(memory_mb=old.limits.address_space_mb, cpu_seconds=old.limits.cpu_seconds,
                       resources=old.resources)
