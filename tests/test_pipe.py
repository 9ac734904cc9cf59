"""The parent's pipe protocol on a real socket pair: framing, order, stale and wrong replies."""

import asyncio
import os
import socket
from collections.abc import Callable
from multiprocessing.connection import Connection

import pytest
import uvloop

from envproc.protocol import Done, Sample, decode_request, encode
from supervisor.pipe import PipeLost, ReplyPipe

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable:
    """Both loops: the server runs on uvloop, whose sockets are non-blocking under a reader."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


class Problems(list):
    """Mismatches the pipe reported, with an event to wait for the first."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()

    def __call__(self, what: str) -> None:
        self.append(what)
        self.seen.set()


async def connected() -> tuple[ReplyPipe, Connection, Problems]:
    ours, theirs = socket.socketpair()
    problems = Problems()
    _, pipe = await asyncio.get_running_loop().create_unix_connection(
        lambda: ReplyPipe(problems), sock=ours
    )
    return pipe, Connection(theirs.detach()), problems


def answer(child: Connection, n: int, body: Callable[[int], bytes], seq: Callable[[int], int] = lambda s: s) -> None:
    """The child's side, run in a thread: answer n requests in order."""
    for _ in range(n):
        req = decode_request(child.recv_bytes())
        child.send_bytes(encode(Done(seq(req.seq), body(req.seq))))


def test_replies_of_any_size_arrive_whole_and_in_order(run: Callable) -> None:
    sizes = [0, 1, 70_000, 3_000_000]  # the big one arrives in many pieces

    async def main() -> None:
        pipe, child, problems = await connected()
        futs = [pipe.send(i, encode(Sample(seq=i))) for i in range(len(sizes))]
        await asyncio.to_thread(answer, child, len(sizes), lambda s: bytes([s]) * sizes[s])
        bodies = [(await f).body for f in futs]
        assert [(len(b), b[:1]) for b in bodies] == [(n, bytes([i])[:n]) for i, n in enumerate(sizes)]
        assert problems == []
        pipe.close()

    run(main())


def test_late_reply_to_an_abandoned_request_is_dropped(run: Callable) -> None:
    async def main() -> None:
        pipe, child, problems = await connected()
        first = pipe.send(1, encode(Sample(seq=1)))
        first.cancel()  # its client gave up
        second = pipe.send(2, encode(Sample(seq=2)))
        await asyncio.to_thread(answer, child, 2, lambda s: str(s).encode())
        assert (await second).body == b"2"
        assert problems == []
        pipe.close()

    run(main())


def test_reply_with_the_wrong_seq_is_reported_not_delivered(run: Callable) -> None:
    async def main() -> None:
        pipe, child, problems = await connected()
        fut = pipe.send(1, encode(Sample(seq=1)))
        await asyncio.to_thread(answer, child, 1, lambda s: b"stale", seq=lambda s: 7)
        await asyncio.wait_for(problems.seen.wait(), 10)
        assert problems == ["broke the protocol: it answered request 1 with the reply to 7"]
        with pytest.raises(PipeLost):
            await fut
        pipe.close()

    run(main())


def test_pipe_closed_by_the_child_fails_waiting_requests(run: Callable) -> None:
    async def main() -> None:
        pipe, child, _ = await connected()
        fut = pipe.send(1, encode(Sample(seq=1)))
        child.close()
        with pytest.raises(PipeLost):
            await fut
        with pytest.raises(PipeLost):
            await pipe.send(2, encode(Sample(seq=2)))

    run(main())


@pytest.mark.parametrize(("raw", "says"), [
    (b"\xff\xff\xff\xfc", "a frame of length -4"),  # once, a loop that never advanced: the server froze
    (b"\x00\x00\x00\x03abc", "something that is not a reply"),
])
def test_what_env_code_writes_to_its_pipe_is_a_fault_not_a_hang(run: Callable, raw: bytes, says: str) -> None:
    async def main() -> None:
        pipe, child, problems = await connected()
        fut = pipe.send(1, encode(Sample(seq=1)))
        os.write(child.fileno(), raw + b"\x00" * 64)  # env code may write anything to its descriptor
        await asyncio.wait_for(problems.seen.wait(), 10)
        assert len(problems) == 1 and says in problems[0]
        with pytest.raises(PipeLost):
            await asyncio.wait_for(fut, 10)

    run(main())
