"""When an env that died on its own is started again: a pure decision over its restart times."""

from typing import Annotated

import msgspec
from msgspec import Meta


class RestartPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Restart after a crash or timeout kill, at most `max` times within `within_s` seconds
    (None: the server's --restart-within)."""

    max: Annotated[int, Meta(ge=1)]
    within_s: Annotated[float, Meta(gt=0)] | None = None


def recent(history: list[float], now: float, policy: RestartPolicy) -> list[float]:
    """The restart times that still count against the policy."""
    return [t for t in history if now - t < (policy.within_s or 0)]


def crash_loop(history: list[float], now: float, policy: RestartPolicy) -> bool:
    """True when one more restart would be more than `max` within `within_s`."""
    return len(recent(history, now, policy)) >= policy.max


def loop_cause(policy: RestartPolicy) -> str:
    return f"crash loop: {policy.max} restarts in {policy.within_s:g} s"


ASKED_MAX = 3  # the most restarts a create may ask for where the server sets no --restart-max


def bounded(asked: RestartPolicy, server_max: int, server_within: float) -> RestartPolicy:
    """A create's policy within the server's bounds: at most --restart-max restarts (ASKED_MAX
    where the server sets none), in a window no shorter than --restart-within, so that no
    client can ask for a crash loop that never ends."""
    return RestartPolicy(min(asked.max, server_max or ASKED_MAX), max(asked.within_s or server_within, server_within))
