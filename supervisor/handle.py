"""One env's child process behind a small interface: start, call with timeout, kill, info."""

import asyncio
import enum
import logging
import multiprocessing.process
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

import psutil

from envproc import worker
from envproc.protocol import (
    Close,
    Done,
    EnvLimits,
    Make,
    Raised,
    Request,
    Reset,
    Step,
    encode,
)
from supervisor import cgroups
from supervisor.errors import (
    BadRequest,
    EnvCrashed,
    EnvGone,
    EnvRaised,
    EnvTimeout,
    EnvUsage,
    LookupFailed,
    NotAvailable,
)
from supervisor.exits import NO_LIMITS, describe_exit
from supervisor.output import OutputTail
from supervisor.pipe import PipeLost, ReplyPipe

log = logging.getLogger("gym_supervisor.env")
P = TypeVar("P", bound=asyncio.BaseProtocol)

# Process.start() talks to the forkserver synchronously; one thread does it for every env so
# that the event loop never waits on it and multiprocessing's bookkeeping is never raced.
_starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="env-start")

REAP_WAIT = 5.0  # seconds to wait for a killed or closing process to be reaped


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    DEAD = "dead"
    CLOSED = "closed"


class EnvHandle:
    """Owns one env's process, its pipe end, its state and its cause of death."""

    def __init__(
        self, ctx: BaseContext, instance_id: str, env_id: str, kwargs: dict[str, Any], seed: int | None,
        limits: EnvLimits = NO_LIMITS, lifetime: float = 0, restarts: int = 0,
        on_death: Callable[["EnvHandle"], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self.limits = limits
        self.lifetime = lifetime
        self.restarts = restarts  # how many processes this instance had before this one
        self._on_death = on_death  # told of a death the env brought on itself (crash, timeout, limit)
        self._ended_by_us = False
        self.instance_id = instance_id
        self.env_id = env_id
        self.kwargs = kwargs
        self.seed = seed
        self.pid: int | None = None
        self.cause: str | None = None  # set once, when the process is known dead or doomed
        self.died: float | None = None  # when the cause was set
        self.created = time.time()
        self.last_active = self.created
        self.steps = 0
        self.episodes = 0
        self._closed = False
        self._closing = False
        self._seq = 0
        self._proc: Any = None
        self._pipe: ReplyPipe | None = None
        self._exited: asyncio.Future[int | None] | None = None
        self.output: OutputTail | None = None

    # --- the interface ---

    async def start(self, timeout: float) -> None:
        """Start the process and build the env; on any failure nothing is left running."""
        loop = asyncio.get_running_loop()
        parent_end, child_end = self._ctx.Pipe()
        out_end, out_child = self._ctx.Pipe()  # duplex: a socket pair, see _adopt
        self._proc = self._ctx.Process(target=worker.main, args=(child_end, out_child), name=f"env-{self.instance_id}")
        try:
            await loop.run_in_executor(_starter, _start, self._proc)
        finally:
            child_end.close()  # ours only: the child's death must read as EOF here
            out_child.close()
        self.output = await _adopt(out_end, OutputTail)
        self.pid = self._proc.pid
        self._exited = loop.create_future()
        loop.add_reader(self._proc.sentinel, self._on_sentinel)
        try:
            self._pipe = await _adopt(parent_end, lambda: ReplyPipe(self._on_mismatch))
            await self.call(Make, timeout, env_id=self.env_id, kwargs=self.kwargs, seed=self.seed, limits=self.limits)
        except BaseException as exc:
            self._closing = True  # not an env's death: a create that failed, told to its client
            await self.kill("failed to start")
            self._release()
            log.info("env_not_created instance=%s env_id=%s pid=%s error=%r", self.instance_id, self.env_id, self.pid, str(exc))
            raise
        log.info("env_created instance=%s env_id=%s pid=%s", self.instance_id, self.env_id, self.pid)

    async def call(self, kind: type[Request], timeout: float, **fields: Any) -> bytes:
        """Send one request and return the reply's body; env failures come back as errors."""
        if self.cause is not None:
            raise EnvGone(f"{self._name} {self.cause}; close it and create a new one")
        assert self._pipe is not None
        self._seq += 1
        fut = self._pipe.send(self._seq, encode(kind(self._seq, **fields)))
        try:
            async with asyncio.timeout(timeout):
                reply = await fut
        except TimeoutError:
            await self.kill(f"was killed after {timeout:g} s without a reply")
            raise EnvTimeout(f"{self._name} {self.cause}; create a new one{await self._last_output()}") from None
        except PipeLost:
            await self._wait_exit()
            raise EnvCrashed(f"{self._name} {self.cause}; close it and create a new one{await self._last_output()}") from None
        self.last_active = time.time()
        if self.past_lifetime(self.last_active) and not self._pipe.in_flight:
            self.end(f"was closed at the end of its lifetime of {self.lifetime:g} s")  # this reply still goes out
        if type(reply) is Done:
            if kind is Step:
                self.steps += 1
            elif kind is Reset:
                self.episodes += 1
            return reply.body
        assert isinstance(reply, Raised)
        if reply.kind == "request":
            raise BadRequest(reply.message)
        if reply.kind == "usage":
            raise EnvUsage(f"{self._name}: {_usage_advice(reply)}")
        if reply.kind == "unavailable":
            raise NotAvailable(reply.message)
        if reply.kind == "lookup":
            raise LookupFailed(self.env_id, reply.message)
        raise EnvRaised(f"{self._name}", reply.exc_type, reply.message)

    async def kill(self, cause: str) -> None:
        """SIGKILL the env's whole process group (it cannot ignore that), then reap it."""
        self._set_cause(cause)
        self._signal_group()
        await self._wait_exit()

    async def close(self, timeout: float, force: bool = False) -> None:
        """Ask an idle env to close (unless `force`); kill a busy one, or one that will not close.
        No process is left afterwards."""
        self._closing = True
        if not force and self.cause is None and self._pipe is not None and not self._pipe.in_flight:
            try:
                await self.call(Close, timeout)
            except Exception:
                pass  # closing anyway: a dead, raising or hung env is killed below
        if self._exited is not None and not self._exited.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), min(timeout, 1.0))
            except TimeoutError:
                pass
        await self.kill("was closed")
        self._release()
        self._closed = True
        log.info("env_closed instance=%s env_id=%s pid=%s", self.instance_id, self.env_id, self.pid)

    def end(self, cause: str) -> None:
        """Stop the env now without waiting; it stays listed, dead with this cause, and is not
        restarted: the server chose to end it."""
        self._ended_by_us = True
        self._set_cause(cause)
        self._signal_group()

    def amend_cause(self, more: str) -> None:
        """Add what became of a dead env (a crash loop, a failed restart) to its cause."""
        self.cause = more if self.cause is None else f"{more} (last: {self.cause})"

    async def reaped(self) -> None:
        """Wait until the process is gone (bounded; a stuck one is killed)."""
        await self._wait_exit()

    def past_lifetime(self, now: float) -> bool:
        return bool(self.lifetime) and now - self.created > self.lifetime

    def info(self) -> dict[str, Any]:
        """What an admin wants to know of this env, its process tree's CPU and memory included."""
        cpu, rss = tree_usage(self.pid) if self.cause is None and self.pid is not None else (None, None)
        return {
            "instance_id": self.instance_id,
            "env_id": self.env_id,
            "state": self.state.value,
            "pid": self.pid,
            "created": self.created,
            "last_active": self.last_active,
            "steps": self.steps,
            "episodes": self.episodes,
            "cpu_seconds": cpu,
            "rss_bytes": rss,
            "restarts": self.restarts,
            "cause": self.cause,
            "output": self.output.lines() if self.output else [],
        }

    @property
    def state(self) -> State:
        if self._closed:
            return State.CLOSED
        if self.cause is not None:
            return State.DEAD
        if self._pipe is None or self._seq == 0:
            return State.STARTING
        return State.BUSY if self._pipe.in_flight else State.READY

    # --- process plumbing ---

    @property
    def _name(self) -> str:
        return f"env {self.instance_id} ({self.env_id})"

    def _set_cause(self, cause: str) -> None:
        """The first cause sticks: it is the one the client and the log are told."""
        if self.cause is not None:
            return
        self.cause = cause
        self.died = time.time()
        if not self._closing:
            log.warning("env_dead instance=%s env_id=%s pid=%s cause=%r", self.instance_id, self.env_id, self.pid, cause)
            if self._on_death is not None and not self._ended_by_us:
                self._on_death(self)

    def _signal_group(self) -> None:
        """SIGKILL the env's process group, helpers included, and the env itself while unreaped.

        The group is signalled even after the env is reaped: its helpers live on in it, and a
        group id is not given to a new process while the group has members.
        """
        if self.pid is None:
            return
        reaped = self._exited is not None and self._exited.done()
        for send in (os.killpg,) if reaped else (os.killpg, os.kill):  # kill: in case setsid() had not run
            try:
                send(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.limits.cgroup:
            cgroups.kill_all(self.limits.cgroup)  # helpers that left the group with setsid() too

    def _on_sentinel(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._proc.sentinel)
        code = self._proc.exitcode  # readable sentinel: this does not block
        self._set_cause(describe_exit(code, self.limits))
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(code)
        self._signal_group()  # however it ended, nothing it spawned outlives it

    def _on_mismatch(self, what: str) -> None:
        self._set_cause(f"broke the protocol: it {what}")
        self._signal_group()

    async def _last_output(self) -> str:
        """The env's last lines, once its processes are gone and have flushed them (bounded wait)."""
        if self.output is None:
            return ""
        try:
            await asyncio.wait_for(asyncio.shield(self.output.closed), 0.5)
        except TimeoutError:
            pass
        return self.output.quote()

    async def _wait_exit(self) -> None:
        assert self._exited is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), REAP_WAIT)
        except TimeoutError:
            # It closed its pipe but lives on, or ignores SIGKILL's delivery (D state): make sure.
            self._set_cause("closed its pipe without exiting and was killed")
            self._signal_group()

    def _release(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        if self.output is not None:
            self.output.close()  # a helper that escaped every kill must not hold our descriptor
        if self._proc is not None and self._exited is not None and self._exited.done():
            self._proc.join(0)
            self._proc.close()


async def _adopt(conn: Connection, factory: Callable[[], P]) -> P:
    """Read a multiprocessing connection with an asyncio protocol on the event loop.

    A socket (the connection is one end of a socket pair), since uvloop closes a pipe's
    descriptor twice (libuv, then the file object), which in a threaded process can close
    another thread's new descriptor; it closes a socket once.
    """
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    conn.close()
    _, protocol = await asyncio.get_running_loop().create_unix_connection(factory, sock=sock)
    return protocol


def _start(proc: Any) -> None:
    """Start a process, in the starter thread, and take it out of multiprocessing's bookkeeping.

    Process.start() polls every process it knows of, reading their sentinels; were ours among
    them, that thread would read a sentinel the event loop had just closed and reused, and steal
    a starting process's pid from its pipe. The handle alone reaps its process.
    """
    proc.start()
    multiprocessing.process._children.discard(proc)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_pss(pid: int) -> int | None:
    """The memory a process tree holds, shared pages split among their sharers (PSS): forks of
    one env share most of their pages, which a sum of RSS would count once per process."""
    try:
        procs = _tree(pid)
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass  # it ended while we looked
    return total


def tree_usage(pid: int) -> tuple[float | None, int | None]:
    """CPU seconds (user + system) and resident memory of a process and all its descendants."""
    try:
        procs = _tree(pid)
    except psutil.Error:
        return None, None
    cpu, rss = 0.0, 0
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
        except psutil.Error:
            pass  # it ended while we looked
    return round(cpu, 3), rss


def _usage_advice(reply: Raised) -> str:
    if reply.exc_type == "ResetNeeded":
        return f"{reply.message}; call reset first"
    return reply.message
