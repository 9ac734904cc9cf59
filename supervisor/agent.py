"""A cluster node's agent: runs the local backend on its node (forkserver, env users, cgroups,
limits) and forks env processes there for the server, which reaches it over TCP
(supervisor/agentwire.py). Ray places one on each node (supervisor/cluster.py) and restarts
nothing: the server starts a new one where one ended."""

import asyncio
import hmac
import logging
import os
import socket
from typing import Any

from envproc.protocol import EnvLimits
from supervisor import agentwire as wire
from supervisor.limits import Limits
from supervisor.local import LocalBackend
from supervisor.place import Ended
from supervisor.usage import usage_of_envs

log = logging.getLogger("gym_supervisor.agent")

HELLO_TIMEOUT = 10.0  # seconds a new connection has to say who it is
PARKED_FOR = 30.0  # seconds an env's connection waits for its launch
MAX_GREETING = 256  # connections at once that have not said who they are; past it new ones are closed


class Agent:
    """Owns its node's LocalBackend, its listening socket, the server's control connection,
    the env connections waiting for their launch, and the env processes alive on the node."""

    def __init__(self, limits: Limits, secret: str, address_space: bool, cwd: str) -> None:
        self._limits = limits
        self._secret = secret
        self._address_space = address_space
        self._cwd = cwd
        self._backend: LocalBackend | None = None
        self._listener: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parked: dict[tuple[int, str], asyncio.Future[socket.socket]] = {}
        self._live: dict[int, EnvLimits] = {}  # pid -> its limits, as placed here
        self._tasks: set[asyncio.Future[Any]] = set()
        self._greeting = 0  # connections yet to say who they are

    async def serve(self, host: str) -> tuple[str, int, int]:
        """Start the forkserver and listen on `host`: the address, port and this process's pid.

        On the actor's event loop, whose thread lives as long as the agent: the forkserver's
        parent-death signal watches the thread that started it."""
        self._backend = LocalBackend(self._limits, self._limits.data_dir, self._address_space, cwd=self._cwd)
        self._backend.serve()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, 0), family=family, backlog=512)
        self._listener.setblocking(False)
        self._spawn(self._accept())
        return host, self._listener.getsockname()[1], os.getpid()

    async def close(self) -> None:
        """Kill every env process here, then end the forkserver."""
        for pid in list(self._live):
            self._kill(pid)
        if self._backend is not None:
            await self._backend.close()

    # --- connections ---

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self._listener)
            except OSError as exc:  # out of descriptors, say: the next accept may do, and must be tried
                log.warning("agent_accept_failed reason=%r", str(exc))
                await asyncio.sleep(0.1)
                continue
            if self._greeting >= MAX_GREETING:  # strangers holding connections open must not starve the server's
                conn.close()
                continue
            conn.setblocking(False)
            self._spawn(self._greet(conn))

    async def _greet(self, conn: socket.socket) -> None:
        """Read a new connection's Hello: a control connection is served; an env's waits for
        its launch. Anything else is closed."""
        self._greeting += 1
        try:
            hello = await asyncio.wait_for(wire.read_first(conn), HELLO_TIMEOUT)
        except (TimeoutError, ConnectionError, OSError, wire.BadFrame):
            conn.close()
            return
        finally:
            self._greeting -= 1
        if not isinstance(hello, wire.Hello) or not hmac.compare_digest(hello.secret.encode(), self._secret.encode()):
            log.warning("agent_refused peer=%s", _peer(conn))
            conn.close()
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hello.role == "control":
            await self._control(conn)
            return
        parked = self._parked.setdefault((hello.token, hello.role), asyncio.get_running_loop().create_future())
        if parked.done():  # a second connection for the same launch and role
            conn.close()
            return
        parked.set_result(conn)
        asyncio.get_running_loop().call_later(PARKED_FOR, self._unpark, hello.token, hello.role)

    def _unpark(self, token: int, role: str) -> None:
        """An env connection no launch took: closed."""
        parked = self._parked.pop((token, role), None)
        if parked is not None and parked.done():
            parked.result().close()

    async def _control(self, conn: socket.socket) -> None:
        """Serve the server's requests until it closes; then no env of it may live on."""
        reader, writer = await asyncio.open_connection(sock=conn)
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            while True:
                message = await wire.read(reader)
                match message:
                    case wire.Launch():
                        self._spawn(self._launch(message))
                    case wire.Kill(pid=pid):
                        self._kill(pid)
                    case wire.Measure(seq=seq, pids=pids):
                        self._spawn(self._measure(seq, pids))
                    case wire.Sweep():
                        assert self._backend is not None
                        self._backend.sweep()  # a few rmdirs, on the loop that releases cgroups too
        except (asyncio.IncompleteReadError, ConnectionError, OSError, wire.BadFrame) as exc:
            log.info("agent_server_gone reason=%r envs=%d", str(exc) or type(exc).__name__, len(self._live))
        finally:
            if self._writer is writer:
                self._writer = None
                for pid in list(self._live):
                    self._kill(pid)
            writer.close()

    def _send(self, message: wire.Message) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(wire.pack(message))

    # --- env processes ---

    async def _launch(self, launch: wire.Launch) -> None:
        backend = self._backend
        assert backend is not None
        loop = asyncio.get_running_loop()
        ends = [self._parked.setdefault((launch.token, role), loop.create_future()) for role in ("pipe", "output")]
        limits = None
        try:
            try:
                async with asyncio.timeout(launch.timeout):
                    pipe, output = await asyncio.gather(*ends)
            except TimeoutError:
                raise OSError("its connections did not arrive in time") from None
            for role in ("pipe", "output"):  # ours now: no timer may close them
                self._parked.pop((launch.token, role), None)
            for end in (pipe, output):
                end.setblocking(True)  # the env process reads and writes them as blocking files
            limits = backend.placed(launch.limits, launch.label)
            pid, ended = await backend.fork(pipe, output, launch.timeout)
        except Exception as exc:
            if limits is not None:
                backend.unplaced(limits, forked=False)
            self._send(wire.ForkFailed(launch.token, str(exc) or type(exc).__name__))
            return
        finally:
            for role, end in zip(("pipe", "output"), ends, strict=True):
                self._parked.pop((launch.token, role), None)
                if end.done() and not end.cancelled():
                    end.result().close()  # the env process holds its own copy
                else:
                    end.cancel()
        self._live[pid] = limits
        if self._writer is None:  # the server went away during the fork: nobody will use it
            self._kill(pid)
        self._send(wire.Forked(launch.token, pid, limits))
        ended.add_done_callback(lambda done: self._exited(pid, done.result()))

    def _exited(self, pid: int, ended: Ended) -> None:
        """Nothing of an ended env process outlives it; its cgroup and user are freed."""
        backend = self._backend
        assert backend is not None
        limits = self._live.pop(pid, None)
        if limits is not None:
            backend.kill(pid, limits.cgroup, reaped=True)
            backend.unplaced(limits, forked=True)
            backend.freed(limits)
        self._send(wire.Exited(pid, ended.code, ended.oom))

    def _kill(self, pid: int) -> None:
        limits = self._live.get(pid)
        if limits is not None and self._backend is not None:
            self._backend.kill(pid, limits.cgroup, reaped=False)

    async def _measure(self, seq: int, pids: list[int]) -> None:
        live = [pid in self._live for pid in pids]
        envs = [(pid, self._live[pid].cgroup, self._live[pid].memory_mb * 2**20) for pid in pids if pid in self._live]
        used = iter(await asyncio.get_running_loop().run_in_executor(None, usage_of_envs, envs))
        self._send(wire.Measured(seq, [next(used) if here else None for here in live]))


def _peer(conn: socket.socket) -> str:
    try:
        return str(conn.getpeername())
    except OSError:
        return "?"
