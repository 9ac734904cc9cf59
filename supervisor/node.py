"""The server's side of one cluster node's agent: the place (supervisor/place.py) of every env
on that node. Launches, kills and usage go over one control connection; each env's pipe and
output are TCP connections of their own that the agent hands to the env process."""

import asyncio
import itertools
import logging
import socket
from typing import Any

from envproc.protocol import EnvLimits
from supervisor import agentwire as wire
from supervisor.errors import ServerBusy
from supervisor.place import Ended, Launched
from supervisor.usage import Usage

log = logging.getLogger("gym_supervisor.cluster")

CONNECT_TIMEOUT = 10.0  # seconds to reach an agent; past them its node is lost (unreachable)


class Node:
    """Owns the control connection to one agent, the launches and usage readings it waits for,
    and the future end of every env process alive on the node."""

    def __init__(self, node_id: str, ip: str, host: str, port: int, secret: str, agent_pid: int,
                 resources: dict[str, float], actor: Any = None) -> None:
        self.node = ip  # for people: where its envs run
        self.node_id = node_id  # Ray's
        self.host, self.port = host, port  # where its agent listens
        self.agent_pid = agent_pid
        self.resources = resources  # Ray's totals for the node
        self.cpus = resources.get("CPU", 1.0)
        self._held: dict[Any, dict[str, float]] = {}  # env handle -> what it holds of `resources`
        self.actor = actor  # Ray's handle of the agent, to end it
        self._secret = secret
        self.lost: str | None = None  # why it is no longer used
        self.reached = False  # its control connection was made once
        self.launching = 0
        self._writer: asyncio.StreamWriter | None = None
        self._connected: asyncio.Future[None] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._tokens = itertools.count(1)
        # token -> the forked process's pid, limits and end, once the agent says so
        self._forks: dict[int, asyncio.Future[tuple[int, EnvLimits, asyncio.Future[Ended]]]] = {}
        self._ends: dict[int, asyncio.Future[Ended]] = {}  # pid -> how it ends
        self._readings: dict[int, asyncio.Future[list[Usage | None]]] = {}

    @property
    def envs(self) -> int:
        """Env processes alive there."""
        return len(self._ends)

    @property
    def load(self) -> float:
        return (self.envs + self.launching) / max(self.cpus, 1.0)

    def fits(self, want: dict[str, float]) -> bool:
        """Whether the node has `want` free, beside what its envs hold."""
        return all(self._free(name) >= amount for name, amount in want.items())

    def free(self, want: dict[str, float]) -> str:
        """What is free of the resources in `want`, in words."""
        return ", ".join(f"{name} {self._free(name):g} of {self.resources.get(name, 0):g}" for name in want)

    def hold(self, handle: Any, want: dict[str, float]) -> None:
        if want:
            self._held[handle] = want

    def release(self, handle: Any) -> None:
        """Its process ended, or never started: what it held is free."""
        self._held.pop(handle, None)

    def _free(self, name: str) -> float:
        return self.resources.get(name, 0.0) - sum(held.get(name, 0.0) for held in self._held.values())

    def connect(self) -> None:
        """Open the control connection, in the background (launches wait for it)."""
        self._connected = asyncio.get_running_loop().create_future()
        self._reading = asyncio.ensure_future(self._serve())

    async def launch(self, limits: EnvLimits, label: str, timeout: float) -> Launched:
        """Have the agent fork an env process on two new connections within `timeout`."""
        self.launching += 1
        token = next(self._tokens)
        fork = self._forks[token] = asyncio.get_running_loop().create_future()
        ends: list[socket.socket] = []
        try:
            async with asyncio.timeout(timeout):
                if self.lost is not None:
                    raise self._refusal()
                assert self._connected is not None
                await asyncio.shield(self._connected)
                for role in ("pipe", "output"):
                    ends.append(await self._open(role, token))
                self._send(wire.Launch(token, label, limits, timeout))
                pid, limits, ended = await fork
        except BaseException as exc:
            for end in ends:
                end.close()
            if fork.done() and not fork.cancelled() and fork.exception() is None:  # forked, but too late
                self._send(wire.Kill(fork.result()[0]))
            if isinstance(exc, TimeoutError):
                raise ServerBusy(f"the agent of node {self.node} did not start the env within {timeout:g} s; "
                                 "retry") from None
            if isinstance(exc, OSError):  # its port refused or dropped us: the agent is gone or going
                raise ServerBusy(f"node {self.node}'s agent could not be reached ({exc.strerror or exc}); retry") from None
            raise
        finally:
            self.launching -= 1
            self._forks.pop(token, None)
        return Launched(pid, limits, ended, ends[0], ends[1])

    def kill(self, pid: int, cgroup: str | None, reaped: bool) -> None:
        """The agent kills it and its tree (and at its exit, whatever is left in its cgroup)."""
        if not reaped:
            self._send(wire.Kill(pid))

    async def measure(self, pids: list[int]) -> list[Usage | None]:
        seq = next(self._tokens)
        reading = self._readings[seq] = asyncio.get_running_loop().create_future()
        try:
            self._send(wire.Measure(seq, pids))
            return await reading
        finally:
            self._readings.pop(seq, None)

    def sweep(self) -> None:
        self._send(wire.Sweep())

    def close(self) -> None:
        """Stop using the node (the server stops): its agent kills what is left there."""
        self.lose("the server stopped using it")

    def lose(self, why: str) -> None:
        """The node or its agent is gone (or the server lets it go): every env there ends with
        that cause, and whoever waits for a launch or a reading is told."""
        if self.lost is not None:
            return
        self.lost = why
        if self._ends or self.launching:
            log.error("node_lost node=%s node_id=%s envs=%d reason=%r", self.node, self.node_id, len(self._ends), why)
        cause = f"ended with its node: node {self.node} lost ({why})"
        for ended in self._ends.values():
            if not ended.done():
                ended.set_result(Ended(None, None, lost=cause))
        self._ends.clear()
        for fork in self._forks.values():
            if not fork.done():
                fork.set_exception(self._refusal())
        for reading in self._readings.values():
            if not reading.done():
                reading.set_exception(ConnectionError(why))
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(self._refusal())
            self._connected.exception()  # read: nobody may be waiting
        if self._writer is not None:
            self._writer.close()
        if self._reading is not None and self._reading is not asyncio.current_task():
            self._reading.cancel()

    def info(self) -> dict[str, Any]:
        return {"node": self.node, "node_id": self.node_id, "agent": f"{self.host}:{self.port}",
                "agent_pid": self.agent_pid, "cpus": self.cpus, "envs": self.envs, "lost": self.lost,
                "resources": {name: self.resources.get(name, 0.0) for name in sorted(self.resources)
                              if not name.startswith(("node:", "object_store", "memory"))},
                "held": {name: self.resources.get(name, 0.0) - self._free(name) for name in
                         sorted({n for held in self._held.values() for n in held})}}

    # --- the control connection ---

    def _refusal(self) -> ServerBusy:
        return ServerBusy(f"node {self.node} was lost ({self.lost}) while this env was being started there; retry")

    async def _open(self, role: str, token: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (self.host, self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_sendall(sock, wire.pack(wire.Hello(self._secret, role, token)))  # type: ignore[arg-type]
        except BaseException:
            sock.close()
            raise
        return sock

    def _send(self, message: wire.Message) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(wire.pack(message))

    async def _serve(self) -> None:
        assert self._connected is not None
        try:
            try:
                reader, self._writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                              CONNECT_TIMEOUT)
            except (TimeoutError, OSError) as exc:
                self.lose(f"its agent at {self.host}:{self.port} could not be reached: {str(exc) or type(exc).__name__}")
                return
            self.reached = True
            sock = self._writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._writer.write(wire.pack(wire.Hello(self._secret, "control")))
            if not self._connected.done():
                self._connected.set_result(None)
            while True:
                self._take(await wire.read(reader))
        except asyncio.CancelledError:
            raise
        except asyncio.IncompleteReadError:
            self.lose("its agent's connection closed")
        except (ConnectionError, OSError, wire.BadFrame) as exc:
            self.lose(f"its agent's connection failed: {str(exc) or type(exc).__name__}")

    def _take(self, message: wire.Message) -> None:
        match message:
            case wire.Forked(token=token, pid=pid, limits=limits):
                ended = self._ends[pid] = asyncio.get_running_loop().create_future()
                fork = self._forks.get(token)
                if fork is not None and not fork.done():
                    fork.set_result((pid, limits, ended))  # its end too: it may come before the launch resumes
                else:  # its create gave up meanwhile
                    self._send(wire.Kill(pid))
            case wire.ForkFailed(token=token, reason=reason):
                fork = self._forks.get(token)
                if fork is not None and not fork.done():
                    fork.set_exception(ServerBusy(f"node {self.node} could not start this env ({reason}); retry"))
            case wire.Exited(pid=pid, code=code, oom=oom):
                ended = self._ends.pop(pid, None)
                if ended is not None and not ended.done():
                    ended.set_result(Ended(code, oom))
            case wire.Measured(seq=seq, usage=usage):
                reading = self._readings.get(seq)
                if reading is not None and not reading.done():
                    reading.set_result(usage)
