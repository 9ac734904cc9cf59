"""The parent's end of an env pipe as an asyncio protocol: frames in, replies out in order."""

import asyncio
from collections import deque
from collections.abc import Callable

import msgspec

from envproc.protocol import AnyReply, decode_reply

# multiprocessing.Connection's framing, which the child's send_bytes/recv_bytes use: a signed
# 4-byte big-endian length, or -1 followed by an 8-byte length for frames of 2 GiB and more.
_BIG = -1
_MAX_SMALL = 0x7FFFFFFF


def frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < _MAX_SMALL:
        return n.to_bytes(4, "big") + payload
    return _BIG.to_bytes(4, "big", signed=True) + n.to_bytes(8, "big") + payload


class PipeLost(Exception):
    """The child's end of the pipe closed: it died, or closed it."""


class ReplyPipe(asyncio.Protocol):
    """Owns the byte stream from one child and the FIFO of requests waiting for their replies.

    The child answers strictly in order, so each reply belongs to the oldest waiting request;
    its seq must say so. A request whose waiter gave up (timeout, client gone) keeps its place
    and its late reply is dropped, so it can never be read as the answer to a later request.
    `on_fault(cause)` is told of a child that broke the protocol or sent a reply over
    `max_reply` bytes (0: any size), before its frame is buffered; `on_settled` is called as
    each request leaves the FIFO, answered or lost.
    """

    def __init__(self, on_fault: Callable[[str], None], on_settled: Callable[[], None] = lambda: None,
                 max_reply: int = 0) -> None:
        self._buf = bytearray()
        self._waiting: deque[tuple[int, asyncio.Future[AnyReply]]] = deque()
        self._transport: asyncio.Transport | None = None
        self._on_fault = on_fault
        self._on_settled = on_settled
        self._max_reply = max_reply
        self._faulted = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(self, seq: int, payload: bytes) -> "asyncio.Future[AnyReply]":
        fut: asyncio.Future[AnyReply] = asyncio.get_running_loop().create_future()
        if self.lost:
            fut.set_exception(PipeLost())
            return fut
        self._waiting.append((seq, fut))
        assert self._transport is not None
        self._transport.write(frame(payload))
        return fut

    def data_received(self, data: bytes) -> None:
        if self._faulted:
            return  # it broke the protocol: nothing more of it is read
        if not self._buf:  # the common case, a reply in one piece: read it where it lies
            used = self._frames(data)
            if not self._faulted and used < len(data):
                self._buf += memoryview(data)[used:]
            return
        buf = self._buf
        buf += data
        used = self._frames(buf)  # frames are decoded from views of the buffer: the body is copied once
        if self._faulted:
            buf.clear()
        elif used:
            del buf[:used]

    def _frames(self, data: bytes | bytearray) -> int:
        """Deliver every whole frame at the start of `data`; how many bytes they took."""
        start = 0
        with memoryview(data) as view:
            while not self._faulted:
                avail = len(view) - start
                if avail < 4:
                    break
                n = int.from_bytes(view[start : start + 4], "big", signed=True)
                head = 4
                if n == _BIG:
                    if avail < 12:
                        break
                    n, head = int.from_bytes(view[start + 4 : start + 12], "big"), 12
                if n < 0:  # env code can write to its pipe: a length that cannot be is a fault, not a loop
                    self._fault(f"broke the protocol: it sent a frame of length {n}")
                    break
                if self._max_reply and n > self._max_reply:
                    self._fault(f"sent a reply of {n / 2**20:.1f} MB, more than this server takes "
                                f"({self._max_reply / 2**20:g} MB, --max-reply-mb)")
                    break
                if avail < head + n:
                    break
                with view[start + head : start + head + n] as frame_view:
                    self._deliver(frame_view)
                start += head + n
        return start

    def _deliver(self, raw: memoryview) -> None:
        try:
            reply = decode_reply(raw)
        except msgspec.DecodeError:
            self._fault("broke the protocol: it sent something that is not a reply")
            return
        if not self._waiting:
            self._fault(f"broke the protocol: it sent a reply (seq {reply.seq}) nobody asked for")
            return
        seq, fut = self._waiting.popleft()
        if reply.seq != seq:
            self._faulted = True
            self._on_fault(f"broke the protocol: it answered request {seq} with the reply to {reply.seq}")
            if not fut.done():
                fut.set_exception(PipeLost())  # never a wrong answer: the env is killed for it
        elif not fut.done():
            fut.set_result(reply)
        self._on_settled()

    def _fault(self, cause: str) -> None:
        """The child cannot be trusted: say why, and read no more of it (its requests are lost)."""
        self._faulted = True
        self._on_fault(cause)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self._waiting:
            _, fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(PipeLost())
            self._on_settled()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
