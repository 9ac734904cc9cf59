"""The HTTP connection, guarded: what one client can make the server hold is bounded (the size
and pace of a request's head, the pace and length in time of its body, the body bytes held for
all requests together, the number of connections), and a client past a bound is answered as
nginx would (431, 408, 503), in JSON, and cut off. uvicorn offers none of these for httptools
but the keep-alive timeout.

The checks cost a request that arrives whole nothing but a few comparisons: no timer is set
for it, and its head is measured from what the parser already collected.
"""

import asyncio
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.params import MAX_BODY

MAX_HEAD = 32 * 1024  # bytes of request line and headers
MAX_HEADERS = 100
MAX_BODIES = 16 * MAX_BODY  # body bytes held, for requests whose handling has not ended, all together
BODY_TIME = 6  # a body must arrive within this many read timeouts of its head, whatever its pace
LINGER = 2.0  # seconds a refused connection is read (and its bytes dropped) before it is closed
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


class Limits(msgspec.Struct, frozen=True):
    read_timeout: float  # seconds a client may leave a request half sent (0: for ever)
    max_connections: int  # open at once (0: no limit)


class GuardedHttp(HttpToolsProtocol):
    """Owns one connection's bounds: its head's size and deadline, its body's pace and
    deadline, and the body bytes it holds of the server's budget."""

    limits = Limits(read_timeout=10.0, max_connections=0)  # a subclass per server sets its own

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between requests, or in a head: not in a body
        self._head_bytes = 0  # of a head that has not ended, as it arrived
        self._turns = 0  # heads and bodies ended on this connection
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0  # when body bytes last came
        self._body_due = 0.0  # when the body in progress must be whole
        self._held = 0  # body bytes this connection holds of the server's budget

    # --- the connection ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.limits.max_connections
        if cap and len(self.connections) > cap:
            self._refuse(503, f"the server has its limit of {cap} connections open; retry later", linger=False)
            return
        self._arm()  # its first head must come in time, or the connection goes

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered and closing: what it still sends is dropped unread
        turns = self._turns
        super().data_received(data)
        if self.transport.is_closing() or self._refused:
            return
        if not self._in_head:  # in a body: its pace counts, from now
            self._last_read = self.loop.time()
            if self._timer is None:
                self._arm()
        elif self._turns == turns:  # a chunk that ended no head and no body was all head: count it
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._refuse(431, f"the request's line and headers pass {MAX_HEAD:,} bytes")
            elif self._timer is None:
                self._arm()  # the head's deadline runs from when it was first seen unfinished

    # --- the parser's events ---

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._turns += 1
        self._disarm()
        self._body_due = self.loop.time() + BODY_TIME * self.limits.read_timeout
        refusal = self._admit()
        if refusal is None:
            super().on_headers_complete()
            return
        app, self.app = self.app, _answer(*refusal)  # the refusal is this request's answer, then close
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_body(self, body: bytes) -> None:
        self._held += len(body)
        state = self.server_state
        state.body_bytes = getattr(state, "body_bytes", 0) + len(body)  # type: ignore[attr-defined]
        if state.body_bytes > MAX_BODIES:  # type: ignore[attr-defined]
            self._refuse(503, "the server holds too many request bodies at once; retry shortly")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._turns += 1
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if not self.pipeline:  # every request it sent is answered: what it held is free
            self._release()
        super().on_response_complete()

    # --- the bounds ---

    def _admit(self) -> tuple[int, str] | None:
        """None, or why this request is refused now that its head is known."""
        headers = self.headers
        if len(self.url) + sum(len(n) + len(v) for n, v in headers) > MAX_HEAD:  # a big head that came whole
            return 431, f"the request's line and headers pass {MAX_HEAD:,} bytes"
        if len(headers) > MAX_HEADERS:
            return 431, f"the request has {len(headers)} headers, more than {MAX_HEADERS}"
        return None

    def _release(self) -> None:
        if self._held:
            self.server_state.body_bytes -= self._held  # type: ignore[attr-defined]
            self._held = 0

    def _arm(self, delay: float | None = None) -> None:
        if self.limits.read_timeout:
            self._timer = self.loop.call_later(delay or self.limits.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _busy(self) -> bool:
        """The server itself still works on an earlier request of this connection (pipelining):
        it does not read on meanwhile, so the client cannot be late."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._refused:
            return
        timeout, now = self.limits.read_timeout, self.loop.time()
        if not self._in_head:  # a body: late if idle for the whole timeout, or past its due time
            if self.pipeline:
                self._arm()
                return
            idle = now - self._last_read
            if idle < timeout and now < self._body_due:
                self._arm(min(timeout - idle, self._body_due - now))
                return
            late = (f"its body was not sent within {BODY_TIME * timeout:g} s" if now >= self._body_due
                    else f"its body paused for {timeout:g} s")
            self._refuse(408, f"the request was cut off: {late} (--read-timeout); send requests whole")
        elif self._head_bytes == 0:
            self.transport.close()  # it never began a request: nothing to answer
        elif self._busy():
            self._arm()  # a head that waits behind the server's own work
        else:
            self._refuse(408, f"the request's head was not sent within {timeout:g} s (--read-timeout); "
                              "send requests whole")

    def _refuse(self, status: int, message: str, linger: bool = True) -> None:
        """Answer at once, outside any request cycle, and close. The close lingers (as nginx's
        does): a client still sending when refused would otherwise get a reset that destroys
        the answer before it reads it; what it sends meanwhile is dropped. Where an earlier
        request's answer is still due, the connection closes after it instead, unanswered."""
        self._refused = True
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and (self._in_head or cycle.response_started):
            cycle.keep_alive = False  # an answer to an earlier request is due: close after it
            return
        body = msgspec.json.encode({"message": message})
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, REASONS[status], len(body)) + body
        )
        if linger and self.transport.can_write_eof():  # not past the connection cap: that would hold more
            self.transport.write_eof()
            self._timer = self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()


def _answer(status: int, message: str) -> Any:
    """An ASGI app that answers every request with this status and message, and closes."""
    body = msgspec.json.encode({"message": message})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    return app
