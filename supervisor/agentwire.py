"""The messages between the server and each cluster node's agent (supervisor/agent.py), over
TCP: a 4-byte length, then one msgpack-encoded message of this tagged union.

The server opens every connection. Its first message is a Hello with the secret the server gave
the agent (through Ray) at its start: a connection that does not begin so is closed unread. One
control connection carries the rest; an env's request pipe and its output are one connection
each, handed to the env process itself, so a step goes from the server to the env with no
agent in between.
"""

import asyncio
import socket
import struct
from typing import Literal

import msgspec

from envproc.protocol import EnvLimits
from supervisor.usage import Usage

MAX_FRAME = 1 << 20  # the largest message: a usage report of thousands of envs fits easily
MAX_HELLO = 1 << 10  # the largest first message: a stranger's may cost the agent no more
_LENGTH = struct.Struct("!I")


class Message(msgspec.Struct, frozen=True, tag_field="op", tag=str.lower):
    pass


class Hello(Message):
    """The first message on every connection: who opens it, and for what."""

    secret: str
    role: Literal["control", "pipe", "output"]
    token: int = 0  # for "pipe" and "output": the launch they belong to


class Launch(Message):
    """Fork an env process on the pipe and output connections of `token`, under `limits`
    completed by the node (user, cgroup named for `label`, network, files)."""

    token: int
    label: str
    limits: EnvLimits
    timeout: float


class Kill(Message):
    """SIGKILL the process tree of a live env process."""

    pid: int


class Measure(Message):
    """What these env processes' trees use now."""

    seq: int
    pids: list[int]


class Sweep(Message):
    """Remove the cgroups ended envs left behind."""


class Forked(Message):
    token: int
    pid: int
    limits: EnvLimits  # as completed on the node


class ForkFailed(Message):
    token: int
    reason: str


class Exited(Message):
    pid: int
    code: int | None  # as supervisor/place.Ended
    oom: bool | None


class Measured(Message):
    seq: int
    usage: list[Usage | None]  # in the order asked (None: not live there, or unreadable)


AnyMessage = Hello | Launch | Kill | Measure | Sweep | Forked | ForkFailed | Exited | Measured

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(AnyMessage).decode


class BadFrame(Exception):
    """The other side sent what is not a message of ours."""


def pack(message: Message) -> bytes:
    body = _encode(message)
    return _LENGTH.pack(len(body)) + body


def _unpack(body: bytes) -> Message:
    try:
        return _decode(body)
    except msgspec.DecodeError as exc:
        raise BadFrame(f"not a message: {exc}") from None


async def read(reader: asyncio.StreamReader) -> Message:
    """The next message (IncompleteReadError at the end of the stream)."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if size > MAX_FRAME:
        raise BadFrame(f"a message of {size} bytes")
    return _unpack(await reader.readexactly(size))


async def read_first(sock: socket.socket) -> Message:
    """The first message of a raw non-blocking socket, reading not one byte past it: what
    follows is the env process's to read."""
    header = await _exactly(sock, _LENGTH.size)
    (size,) = _LENGTH.unpack(header)
    if size > MAX_HELLO:
        raise BadFrame(f"a message of {size} bytes")
    return _unpack(await _exactly(sock, size))


async def _exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise ConnectionError("closed before the end of its first message")
        data += chunk
    return data
