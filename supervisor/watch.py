"""What the watcher does to envs each round, decided from their states, times and usage: pure
functions, so the decisions are tested without a process (the registry carries them out)."""

from collections.abc import Iterable

from supervisor.exits import memory_cause
from supervisor.handle import EnvHandle
from supervisor.lifecycle import State

DEAD_KEPT = 1024  # dead envs kept for their cause at most; past it the oldest are forgotten early


def over_memory(envs: Iterable[EnvHandle]) -> list[tuple[EnvHandle, str]]:
    """Envs whose process tree holds more than their limit, with the cause to kill them for:
    helpers have rlimits of their own, so only the sum over the tree (PSS) tells."""
    return [
        (h, f"{memory_cause(h.limits)} (its processes held {(h.usage.pss_bytes or 0) / 2**20:.0f} MB)")
        for h in envs
        if h.cause is None and h.usage is not None and h.usage.pss_bytes is not None and h.limits.memory_mb
        and h.usage.pss_bytes > h.limits.memory_mb * 2**20
    ]


def to_end(envs: Iterable[EnvHandle], now: float, idle_timeout: float,
           max_lifetime: float) -> list[tuple[EnvHandle, str, str]]:
    """Ready envs idle too long or past their lifetime, with the cause they end with and its
    kind (a busy env's request is answered first: it is looked at again after)."""
    out = []
    for h in envs:
        if h.cause is None and h.state is State.READY:
            if idle_timeout and now - h.last_active > idle_timeout:
                out.append((h, f"was closed as idle after {idle_timeout:g} s", "idle"))
            elif h.past_lifetime(now):
                out.append((h, f"was closed at the end of its lifetime of {max_lifetime:g} s", "lifetime"))
    return out


def to_forget(envs: Iterable[EnvHandle], now: float, retention: float, kept: int = DEAD_KEPT) -> list[tuple[EnvHandle, str]]:
    """Dead envs to forget, with what an unknown-id error will tell of them: those dead longer
    than `retention`, and the oldest past `kept` (so that crashing envs cannot pile up)."""
    dead = sorted((h for h in envs if h.died is not None), key=lambda h: h.died or 0.0)
    surplus = len(dead) - kept
    out = []
    for i, h in enumerate(dead):
        age = now - (h.died or now)
        if i < surplus:
            out.append((h, f"{h.cause}, and was forgotten {age:.0f} s later, {len(dead)} dead envs being too many,"))
        elif age > retention:
            out.append((h, f"{h.cause}, and was forgotten {retention:g} s later,"))
    return out
