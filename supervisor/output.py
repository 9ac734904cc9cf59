"""What an env prints: read as it comes so the env never blocks on it; only the last lines kept."""

import asyncio
from collections import deque

LINES = 50  # kept per env
LINE_CHARS = 500  # of each line
SHOWN_IN_ERRORS = 5  # of the last lines, quoted in a crash's message


class OutputTail(asyncio.Protocol):
    """Owns the last LINES lines an env process and its helpers wrote to stdout or stderr."""

    def __init__(self) -> None:
        self._transport: asyncio.BaseTransport | None = None
        self._lines: deque[bytes] = deque(maxlen=LINES)
        self._partial = b""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        # A flood is cut in C: only the last LINES lines of a chunk can matter.
        parts = (self._partial + data[-LINES * (LINE_CHARS + 1) :] if len(data) > LINES * (LINE_CHARS + 1)
                 else self._partial + data).split(b"\n")
        self._partial = parts.pop()[-LINE_CHARS:]
        self._lines.extend(p[:LINE_CHARS] for p in parts[-LINES:])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial:
            self._lines.append(self._partial)
            self._partial = b""
        if not self.closed.done():
            self.closed.set_result(None)

    def lines(self) -> list[str]:
        tail = [*self._lines, *([self._partial] if self._partial else [])][-LINES:]
        return [line.decode(errors="replace").rstrip("\r") for line in tail]

    def quote(self) -> str:
        """The last few lines, for an error message ('' if it printed nothing)."""
        last = [line for line in self.lines() if line.strip()][-SHOWN_IN_ERRORS:]
        return "; its last output: " + " | ".join(last) if last else ""
