"""One env's child process behind a small interface: start, call with timeout, kill, info."""

import asyncio
import collections
import logging
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from envproc.protocol import (
    Close,
    Done,
    EnvLimits,
    Make,
    MonitorClose,
    MonitorStart,
    Raised,
    Request,
    Reset,
    Step,
    encode,
)
from supervisor.errors import (
    BadRequest,
    EnvBusy,
    EnvCrashed,
    EnvGone,
    EnvTimeout,
    SupervisorError,
    refusal,
)
from supervisor.exits import NO_LIMITS, describe_exit, exit_kind
from supervisor.lifecycle import Lifecycle
from supervisor.output import OutputTail
from supervisor.pipe import PipeLost, ReplyPipe
from supervisor.place import Ended, Place
from supervisor.usage import Usage

log = logging.getLogger("gym_supervisor.env")
P = TypeVar("P", bound=asyncio.BaseProtocol)

HISTORY_EVERY = 2.0  # seconds between two samples of an env's usage history
HISTORY_LEN = 90  # samples kept: three minutes
REAP_WAIT = 5.0  # seconds to wait for a killed or closing process to be reaped

# What a request in flight is told when the server itself ends its env: its class and message.
Fate = tuple[type[SupervisorError], str]

def _of_life(name: str) -> Any:
    """A read-only attribute of the handle that is its Lifecycle's `name`."""
    return property(lambda self: getattr(self.life, name), doc=f"the env's {name}, as its Lifecycle holds it")


class EnvHandle:
    """Owns one env's process, its pipe end and its turn (one request at a time); its state,
    cause of death and counters are its Lifecycle's (`life`)."""

    def __init__(
        self, place: Place, instance_id: str, env_id: str, kwargs: dict[str, Any], seed: int | None,
        limits: EnvLimits = NO_LIMITS, lifetime: float = 0, restarts: int = 0, max_reply: int = 0,
        on_death: Callable[["EnvHandle"], bool] | None = None,
        on_exit: Callable[["EnvHandle"], None] | None = None, owner: str = "",
    ) -> None:
        self._place = place
        self.life = Lifecycle(owner, lifetime, restarts)
        self.limits = limits
        self.max_reply = max_reply  # bytes an env's reply may take (0: any)
        # Told of every death but a close's (its kind is in `death`); True: a restart follows.
        self._on_death = on_death
        self._on_exit_hook = on_exit  # told when the process has ended, however it ended
        self._restart_follows = False
        self._fate: Fate | None = None
        self.reserve = False  # the server's own (the health probe, a pooled env): counted in no limit
        self.resources: dict[str, float] = {}  # of its node's, as its create asked (placement only)
        self.instance_id = instance_id
        self.env_id = env_id
        self.kwargs = kwargs
        self.seed = seed
        self.pid: int | None = None
        self._closing = False  # its end is a close (or a failed start), not a death to report
        self._seq = 0  # the last request's number
        self._running = 0  # the number of the request the env works on (0: none)
        # Held from a request's send until its reply (or the env's end), whoever waits for it:
        # the env works on one request at a time and is never sent the next one before.
        self._turn = asyncio.Lock()
        self.waiting = 0  # requests waiting for the turn
        self._pipe: ReplyPipe | None = None
        self._exited: asyncio.Future[Ended] | None = None
        self.usage: Usage | None = None  # its process tree's, as the watcher read it last
        self._usage_at = 0.0  # when (monotonic)
        self.cpu_percent: float | None = None  # of one core, between the watcher's last two readings
        # (time, CPU percent, RSS bytes), one every HISTORY_EVERY s at most: the admin page's graphs.
        self.history: collections.deque[tuple[float, float, int]] = collections.deque(maxlen=HISTORY_LEN)
        self.monitoring = False  # a monitor runs in it (it writes to the data dir)
        self.output: OutputTail | None = None

    # --- the interface ---

    async def start(self, timeout: float) -> None:
        """Start the process and build the env within `timeout`; on any failure nothing is left
        running and no descriptor is left open."""
        deadline = asyncio.get_running_loop().time() + timeout
        launched = await self._place.launch(self.limits, f"{self.instance_id}-{self.restarts}", timeout)
        self.pid, self.limits, self._exited = launched.pid, launched.limits, launched.ended
        self._exited.add_done_callback(self._on_exit)
        try:
            if self.cause is not None:  # killed while it was being forked (the server stops)
                raise self._gone()
            self.output = await _adopt(launched.output, OutputTail)
            self._pipe = await _adopt(launched.pipe, lambda: ReplyPipe(self._on_fault, self._settled, self.max_reply))
            await self.call(Make, timeout, deadline=deadline, env_id=self.env_id, kwargs=self.kwargs,
                            seed=self.seed, limits=self.limits)
            if self.cause is not None:  # it died between its make's reply and now
                raise self._gone()
            self.life.ready()
        except BaseException as exc:
            for end, adopted in ((launched.output, self.output), (launched.pipe, self._pipe)):
                if adopted is None:  # an adopted one is its transport's to close (in _release)
                    end.close()
            self._closing = True  # not an env's death: a create that failed, told to its client
            await self.kill("failed to start")
            self._release()
            log.info("env_not_created instance=%s env_id=%r pid=%s error=%r", self.instance_id, self.env_id, self.pid, str(exc))
            raise
        log.info("env_created instance=%s env_id=%r pid=%s", self.instance_id, self.env_id, self.pid)

    async def call(self, kind: type[Request], timeout: float, *, deadline: float | None = None,
                   **fields: Any) -> bytes:
        """Send one request when the env has answered every earlier one, and return its reply's
        body; env failures come back as errors. The timeout counts from now (or ends at the
        loop time `deadline`, if given), waiting included: one that runs out while the request
        waits its turn leaves the env alone (504, not run); one that runs out while the env
        works on it kills the env (504, then 410)."""
        if self.cause is not None:
            raise self._gone()
        assert self._pipe is not None
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + timeout
        self._seq += 1
        seq = self._seq  # unique, which is all the pipe's check needs
        try:  # before the turn: a request that cannot be sent must not hold it
            message = encode(kind(seq=seq, **fields))
        except OverflowError:
            raise BadRequest("a number in the request is too large to send to the env (more than 64 bits)") from None
        sent = False
        try:
            async with asyncio.timeout_at(deadline):
                self.waiting += 1
                try:
                    await self._turn.acquire()
                finally:
                    self.waiting -= 1
                if self.cause is None and not self._pipe.lost:
                    fut = self._pipe.send(seq, message)
                    self.life.sent()
                    self._running = seq
                    sent = True
                    reply = await fut
        except TimeoutError:
            if not sent:
                raise EnvBusy(
                    f"{self._name} was busy with an earlier request for all of this request's {timeout:g} s, "
                    "so this request was not run and the env is unchanged; retry it, or give it a longer timeout"
                ) from None
            await self.kill(f"was killed after {timeout:g} s without a reply", kind="timeout")
            raise EnvTimeout(f"{self._name} {self.cause}{self._advice()}{await self._last_output()}") from None
        except PipeLost:
            await self._wait_exit()
            if self._fate is not None:
                kind_, message = self._fate
                raise kind_(message) from None
            raise EnvCrashed(f"{self._name} {self.cause}{self._advice()}{await self._last_output()}") from None
        except asyncio.CancelledError:
            if sent:  # nobody waits for the reply now, but the env still gets no longer than asked
                loop.call_at(deadline, self._expire, seq, timeout)
            raise
        if not sent:  # it died while this request waited its turn
            self._settled()
            if self.cause is None:  # its pipe closed; its exit is on the way
                await self._wait_exit()
            raise self._gone()
        life = self.life
        life.active()
        if life.past_lifetime(life.last_active) and not self._turn.locked():
            self.end(f"was closed at the end of its lifetime of {self.lifetime:g} s", "lifetime")  # this reply still goes out
        if type(reply) is Done:
            if kind is Step:
                life.steps += 1
            elif kind is Reset:
                life.episodes += 1
            elif kind is MonitorStart or kind is MonitorClose:
                self.monitoring = kind is MonitorStart
            return reply.body
        assert isinstance(reply, Raised)
        raise refusal(reply, self._name, self.env_id)

    async def kill(self, cause: str, fate: Fate | None = None, kind: str = "crash") -> None:
        """SIGKILL the env's whole process group (it cannot ignore that), then reap it. `fate`:
        what the request in flight is told, when the server ends the env on purpose."""
        if fate is not None and self.cause is None:
            self._fate = fate
        self._set_cause(cause, kind)
        if self._exited is None:  # not forked yet: start() finds the cause and goes no further
            return
        self._signal_group()
        await self._wait_exit()

    async def close(self, timeout: float, force: bool = False, fate: Fate | None = None,
                    wait_turn: bool = False) -> None:
        """Ask the env to close; kill it if it is busy (unless `wait_turn`: then it may finish
        its request first, within `timeout`), if it will not close, or if `force`. No process is
        left afterwards."""
        self._closing = True
        if not force and self.cause is None and self._pipe is not None and (wait_turn or not self._turn.locked()):
            try:
                await self.call(Close, timeout)
                await asyncio.wait_for(asyncio.shield(self._exited), min(timeout, 1.0))  # it ends itself
            except Exception:
                pass  # closing anyway: a dead, raising, busy or hung env is killed below
        await self.kill("was closed", fate)
        self._release()
        self.life.closed()
        log.info("env_closed instance=%s env_id=%r pid=%s", self.instance_id, self.env_id, self.pid)

    def end(self, cause: str, kind: str) -> None:
        """Stop the env now without waiting; it stays listed, dead with this cause (idle or
        lifetime: not a kind that is restarted)."""
        self._set_cause(cause, kind)
        self._signal_group()

    def amend_cause(self, more: str, kind: str | None = None) -> None:
        """Add what became of a dead env (a crash loop, a failed restart) to its cause."""
        self.life.amend(more, kind)

    async def reaped(self) -> None:
        """Wait until the process is gone (bounded; a stuck one is killed)."""
        await self._wait_exit()

    def observe(self, used: Usage | None, now: float) -> None:
        """The watcher's reading of its processes' usage at monotonic time `now`."""
        before, at = self.usage, self._usage_at
        self.usage, self._usage_at = used, now
        if used is None:
            return
        if before is not None and now > at:
            self.cpu_percent = round(max(used.cpu_seconds - before.cpu_seconds, 0.0) / (now - at) * 100, 1)
        if self.cpu_percent is not None and (not self.history or now - self.history[-1][0] >= HISTORY_EVERY):
            self.history.append((now, self.cpu_percent, used.rss_bytes))

    @property
    def place(self) -> Place:
        """Where its process runs (the backend's business; the views read its `node`)."""
        return self._place

    def past_lifetime(self, now: float) -> bool:
        return self.life.past_lifetime(now)

    def info(self) -> dict[str, Any]:
        """What an admin wants to know of this env, its process tree's CPU and memory included
        (as the watcher read them last, at most one round ago: a request reads no /proc)."""
        used = self.usage if self.cause is None else None
        return {
            "instance_id": self.instance_id,
            "owner": self.owner,
            "env_id": self.env_id,
            "state": self.state.value,
            "pid": self.pid,
            "node": self._place.node,
            "created": self.created,
            "last_active": self.last_active,
            "steps": self.steps,
            "episodes": self.episodes,
            "waiting": self.waiting,
            "monitoring": self.monitoring,
            "cpu_seconds": used.cpu_seconds if used else None,
            "cpu_percent": self.cpu_percent if used else None,
            "rss_bytes": used.rss_bytes if used else None,
            "limits": {"memory_mb": self.limits.memory_mb, "cpu_seconds": self.limits.cpu_seconds},
            "restarts": self.restarts,
            "cause": self.cause,
            "output": self.output.lines() if self.output else [],
        }

    # --- its life, as the registry, the views and the watcher read it ---

    state = _of_life("state")
    cause = _of_life("cause")
    death = _of_life("death")
    died = _of_life("died")
    steps = _of_life("steps")
    episodes = _of_life("episodes")
    restarts = _of_life("restarts")
    lifetime = _of_life("lifetime")
    created = _of_life("created")
    last_active = _of_life("last_active")
    owner = _of_life("owner")

    # --- messages ---

    @property
    def _name(self) -> str:
        return f"env {self.instance_id} ({self.env_id})" if self.life.made else f"env '{self.env_id}'"

    def _advice(self) -> str:
        """What the client should do next, said after a failure."""
        if not self.life.made:
            return " while it was being made; no env was created"
        if self._restart_follows:
            return "; it is being restarted under the same id: reset it before its next step"
        return "; close it and create a new one"

    def _gone(self) -> SupervisorError:
        """For a request that was not run: the env is dead (or died being made: no env is)."""
        if not self.life.made:
            return EnvCrashed(f"{self._name} {self.cause}{self._advice()}")
        return EnvGone(f"{self._name} {self.cause}; close it and create a new one")

    # --- process plumbing ---

    def _set_cause(self, cause: str, kind: str) -> None:
        """The first cause sticks: it is the one the client and the log are told."""
        if not self.life.die(cause, kind):
            return
        if self._pipe is not None:
            self._pipe.close()  # the requests waiting on a dead env are told so now, not at its reaping
        if not self._closing:
            log.warning("env_dead instance=%s owner=%r env_id=%r pid=%s kind=%s cause=%r",
                        self.instance_id, self.owner, self.env_id, self.pid, kind, cause)
            if self._on_death is not None:
                self._restart_follows = self._on_death(self)

    def _signal_group(self) -> None:
        """SIGKILL the env's process group and cgroup, through its place (see LocalBackend.kill)."""
        if self.pid is not None:
            self._place.kill(self.pid, self.limits.cgroup, self._exited is not None and self._exited.done())

    def _settled(self) -> None:
        """The env answered its request (or is gone): the next one may be sent."""
        self._running = 0
        self.life.settled()
        if self._turn.locked():
            self._turn.release()

    def _expire(self, seq: int, timeout: float) -> None:
        """A request whose caller went away ran out of time: the env is killed as if it had waited."""
        if self._running == seq and self.cause is None:
            self._set_cause(f"was killed after {timeout:g} s without a reply", "timeout")
            self._signal_group()

    def _on_exit(self, exited: "asyncio.Future[Ended]") -> None:
        code, oom, lost = exited.result()
        if lost:
            self._set_cause(lost, "node_lost")
        else:
            self._set_cause(describe_exit(code, self.limits, oom), exit_kind(code, self.limits, oom))
        self._signal_group()  # however it ended, nothing it spawned outlives it
        if self._on_exit_hook is not None:
            self._on_exit_hook(self)

    def _on_fault(self, cause: str) -> None:
        self._set_cause(cause, "crash")
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
            self._set_cause("closed its pipe without exiting and was killed", "crash")
            self._signal_group()

    def _release(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        if self.output is not None:
            self.output.close()  # a helper that escaped every kill must not hold our descriptor


async def _adopt(sock: socket.socket, factory: Callable[[], P]) -> P:
    """Read one end of a socket pair with an asyncio protocol on the event loop.

    A socket, not a pipe: uvloop closes a pipe's descriptor twice (libuv, then the file
    object), which in a threaded process can close another thread's new descriptor. A TCP
    socket where the env runs on another node.
    """
    loop = asyncio.get_running_loop()
    try:
        if sock.family == socket.AF_UNIX:
            _, protocol = await loop.create_unix_connection(factory, sock=sock)
        else:
            _, protocol = await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    return protocol
