"""The server's end of the env forkserver (envproc/forkserver.py): start it, ask it for env
processes, and hear how each one ended."""

import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import TypeAlias

import msgspec

import envproc
from envproc.protocol import (
    Exited,
    ForkserverConfig,
    Ready,
    Reap,
    Reaped,
    Spawn,
    Spawned,
    SpawnFailed,
    decode_control,
    encode,
)
from supervisor.errors import ConfigError, ServerBusy

log = logging.getLogger("gym_supervisor.env")

START_TIMEOUT = 120.0  # seconds for the forkserver to import Gymnasium and the preloaded modules
MAX_MESSAGE = 1 << 16
# -P: no working directory on sys.path while the forkserver imports its own code and Gymnasium
# (it may run as root; the working directory may be writable by others); the env path comes later.
BOOT = "import sys; sys.path.insert(0, {root!r}); from envproc.forkserver import main; main()"

Exit: TypeAlias = "asyncio.Future[int | None]"  # an env process's exit code, when it ends


class Forkserver:
    """Owns the forkserver process, its control socket, and a future per env process it forked
    that gives the process's exit code (None if the forkserver ended first, taking it along)."""

    def __init__(self, env_path: tuple[str, ...], preload: tuple[str, ...], stdlib: bool = False) -> None:
        self.config = ForkserverConfig(env_path, preload, os.getpid(), stdlib)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._spawning: deque[asyncio.Future[tuple[int, Exit]]] = deque()
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._reaping: dict[int, list[asyncio.Future[None]]] = {}  # uid -> who waits for its reaping
        self._restarting: asyncio.Lock | None = None
        self._closed = False

    def start(self) -> None:
        """Start the forkserver and wait until it has imported everything (blocking: at start,
        from the main thread, which its parent-death signal watches)."""
        sock = self._launch()
        sock.settimeout(START_TIMEOUT)
        try:
            data = sock.recv(MAX_MESSAGE)
        except TimeoutError:
            data = b""
        self._ready(sock, data)

    def adopt(self) -> None:
        """Read the control socket on the running event loop."""
        assert self._sock is not None
        self._restarting = asyncio.Lock()
        asyncio.get_running_loop().add_reader(self._sock, self._on_readable, self._sock)

    async def spawn(self, pipe_end: socket.socket, output_end: socket.socket, timeout: float) -> tuple[int, Exit]:
        """Fork an env process that talks on `pipe_end` and writes to `output_end`: its pid and
        the future of its exit code."""
        if self._closed:
            raise ServerBusy("the server is shutting down and starts no new env")
        if self._sock is None:  # it ended (env code running as root may kill it): start a new one
            await asyncio.wait_for(self._restart(), timeout)
        assert self._sock is not None
        try:
            socket.send_fds(self._sock, [encode(Spawn())], [pipe_end.fileno(), output_end.fileno()])
        except BlockingIOError:
            raise ServerBusy("the env forkserver is not keeping up with creates; retry") from None
        except OSError:
            self._lost()
            raise ServerBusy("the env forkserver ended while starting this env; retry") from None
        fut: asyncio.Future[tuple[int, Exit]] = asyncio.get_running_loop().create_future()
        self._spawning.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:  # its late answer finds the future done and is dropped
            raise ServerBusy(f"the env forkserver did not fork within {timeout:g} s; retry") from None

    async def reap(self, uid: int) -> None:
        """Have every process of `uid` killed (the forkserver is root; the server may be in a
        thread-rich state no fork should start from). Returns once none is left, or at once if
        the forkserver is gone (its envs went with it)."""
        if self._sock is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reaping.setdefault(uid, []).append(fut)
        try:
            self._sock.send(encode(Reap(uid)))
        except OSError:
            self._reaping.pop(uid, None)
            return
        await fut

    def _launch(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = str(Path(envproc.__file__).resolve().parent.parent)
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-c", BOOT.format(root=root), msgspec.json.encode(self.config).decode(),
                 str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the server's terminal is the server's to handle
            )
        return ours

    def _ready(self, sock: socket.socket, data: bytes) -> None:
        """Take the forkserver's first word: ready, or why not (ConfigError: nothing is left)."""
        try:
            ready = decode_control(data) if data else Ready({"": "it exited or was silent at start"})
        except msgspec.DecodeError as exc:
            ready = Ready({"": f"it said something else at start: {exc}"})
        if not isinstance(ready, Ready) or ready.failed:
            sock.close()
            assert self._proc is not None
            self._proc.kill()
            self._proc.wait()
            failed = ready.failed if isinstance(ready, Ready) else {"": "it said something else at start"}
            searched = ", ".join(self.config.env_path)
            why = "; ".join(f"--preload {name}: {error}" if name else error for name, error in failed.items())
            raise ConfigError(f"the env forkserver could not import what it needs: {why} "
                              f"(searched the env path {searched} and the installed packages)")
        sock.setblocking(False)
        self._sock = sock

    async def _restart(self) -> None:
        """One new forkserver for all the creates that find the old one gone; launched from the
        event loop's thread, the main one, which its parent-death signal watches."""
        assert self._restarting is not None
        async with self._restarting:
            if self._sock is not None or self._closed:
                return
            sock = self._launch()
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, MAX_MESSAGE), START_TIMEOUT)
            except TimeoutError:
                data = b""
            except BaseException:
                sock.close()
                raise
            try:
                self._ready(sock, data)
            except ConfigError as exc:  # what imported at start no longer does (a module changed)
                raise ServerBusy(f"restarting the env forkserver failed: {exc}") from None
            self.adopt()
            log.warning("forkserver_restarted pid=%s", self._proc.pid if self._proc else None)

    def _on_readable(self, sock: socket.socket) -> None:
        if sock is not self._sock:  # a socket of an earlier forkserver, closed since
            return
        while True:
            try:
                data = sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            match decode_control(data):
                case Spawned(pid=pid):
                    exited = self._exits[pid] = asyncio.get_running_loop().create_future()
                    fut = self._spawning.popleft()
                    if not fut.done():
                        fut.set_result((pid, exited))
                case SpawnFailed(reason=reason):
                    fut = self._spawning.popleft()
                    if not fut.done():
                        fut.set_exception(ServerBusy(f"the env forkserver could not start this env ({reason}); retry"))
                case Reaped(uid=uid):
                    for waiter in self._reaping.pop(uid, []):
                        if not waiter.done():
                            waiter.set_result(None)
                case Exited(pid=pid, code=code):
                    done = self._exits.pop(pid, None)
                    if done is not None and not done.done():
                        done.set_result(code)

    def _lost(self) -> None:
        """The forkserver ended; its env processes die with it (their parent-death signal)."""
        log.error("forkserver_died pid=%s envs=%d", self._proc.pid if self._proc else None, len(self._exits))
        self._end()
        if self._proc is not None:
            self._proc.poll()  # reap it if it is gone; a new one starts at the next create

    def _end(self) -> None:
        """No more word from the forkserver: whoever waits for a fork or an exit is told now."""
        if self._sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._sock)
            except RuntimeError:
                pass  # no loop: never adopted
            self._sock.close()
            self._sock = None
        while self._spawning:
            fut = self._spawning.popleft()
            if not fut.done():
                fut.set_exception(ServerBusy("the env forkserver ended while starting this env; retry"))
        for fut in self._exits.values():
            if not fut.done():
                fut.set_result(None)
        self._exits.clear()
        for waiters in self._reaping.values():  # its processes go with it: nothing left to reap
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._reaping.clear()

    async def close(self) -> None:
        """End the forkserver for good: it sees its socket close and exits (its env processes
        are gone by now)."""
        self._closed = True
        self._end()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, proc.wait, 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            await loop.run_in_executor(None, proc.wait)
