"""uvicorn's Server, stopping this server's way: running requests get a grace period, then
their envs are killed and they are answered 503; a second signal stops at once; exit status 0."""

import asyncio
import signal
import socket
from types import FrameType

import uvicorn

from supervisor.registry import Registry


class Server(uvicorn.Server):
    """Owns the stop: SIGINT, SIGTERM or the shutdown route."""

    def __init__(self, config: uvicorn.Config, registry: Registry, grace: float) -> None:
        super().__init__(config)
        self.registry = registry
        self.grace = grace
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not passed on to uvicorn's own: it would raise the signal again once stopped, and a
        # clean stop would then exit as killed by it.
        if self.should_exit and sig in (signal.SIGINT, signal.SIGTERM):
            self.force_exit = True
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.registry.hurry)
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stopping = asyncio.ensure_future(self.registry.shutdown(self.grace))
        await super().shutdown(sockets)
        await stopping  # uvicorn skips the app's own shutdown on a second signal


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is told plainly (OSError)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
