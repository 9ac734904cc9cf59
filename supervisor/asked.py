"""Limits a create may ask for its env: tighter than the server's, never looser."""

from typing import Annotated

import msgspec
from msgspec import Meta


Resources = Annotated[
    dict[Annotated[str, Meta(min_length=1, max_length=64)], Annotated[float, Meta(ge=0)]], Meta(max_length=16)
]


class AskedLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    memory_mb: Annotated[int, Meta(ge=0)] = 0
    cpu_seconds: Annotated[float, Meta(ge=0)] = 0
    # With --backend ray: what the env holds of its node's Ray resources ({"CPU": 1, "GPU": 1}),
    # which decides where it may run (one machine ignores them: it is the only place).
    resources: Resources = {}


NONE_ASKED = AskedLimits()


def tighter(server: float, asked: float) -> float:
    """The limit an env gets (0: none): a client may lower the server's limit, or set one where
    the server has none, but never raise it."""
    if not asked:
        return server
    if not server:
        return asked
    return min(server, asked)
