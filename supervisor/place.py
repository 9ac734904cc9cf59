"""Where an env's processes run, as its handle sees it: this machine (`LocalBackend`) or a
cluster node's agent (`supervisor/node.py`). A place forks an env process on two stream
sockets, kills its process tree, and says how it ended."""

import asyncio
import socket
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from envproc.protocol import EnvLimits


class Ended(NamedTuple):
    """How an env process ended."""

    code: int | None  # its exit code, -N for signal N; None: unknown (its forkserver ended first)
    oom: bool | None = None  # whether the kernel's OOM killer killed anything meanwhile (None: unknown)
    lost: str = ""  # the place itself was lost, in words ("node 10.0.0.5 lost"): the code says nothing


@dataclass
class Launched:
    """An env process just forked: its pid, its limits as its place completed them (user,
    cgroup), the future of its end, and the server's ends of its request pipe and its output."""

    pid: int
    limits: EnvLimits
    ended: "asyncio.Future[Ended]"
    pipe: socket.socket
    output: socket.socket


class Place(Protocol):
    node: str  # where, for people: "" for this machine, else the node's address

    async def launch(self, limits: EnvLimits, label: str, timeout: float) -> Launched:
        """Fork an env process under `limits` within `timeout`; `label` names its cgroup."""
        ...

    def kill(self, pid: int, cgroup: str | None, reaped: bool) -> None:
        """SIGKILL the process group of `pid` and everything in `cgroup`, without waiting;
        `reaped`: the process itself is gone (its pid may be another's now)."""
