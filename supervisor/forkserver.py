"""The server's end of the env forkserver (envproc/forkserver.py): start it, ask it for env
processes, and hear how each one ended."""

import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections import deque

import msgspec

from envproc.protocol import (
    Exited,
    ForkserverConfig,
    Ready,
    Spawn,
    Spawned,
    decode_control,
    encode,
)
from supervisor.errors import ConfigError, ServerBusy

log = logging.getLogger("gym_supervisor.env")

START_TIMEOUT = 120.0  # seconds for the forkserver to import Gymnasium and the preloaded modules
MAX_MESSAGE = 1 << 16


class Forkserver:
    """Owns the forkserver process, its control socket, and a future per env process it forked
    that gives the process's exit code (None if the forkserver ended first, taking it along)."""

    def __init__(self, env_path: tuple[str, ...], preload: tuple[str, ...]) -> None:
        self.config = ForkserverConfig(env_path, preload)
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._spawning: deque[asyncio.Future[int]] = deque()
        self._exits: dict[int, asyncio.Future[int | None]] = {}

    def start(self) -> None:
        """Start the forkserver and wait until it has imported everything (blocking: at start)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "envproc.forkserver", msgspec.json.encode(self.config).decode(),
                 str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the server's terminal is the server's to handle
            )
        ours.settimeout(START_TIMEOUT)
        try:
            ready = decode_control(ours.recv(MAX_MESSAGE) or encode(Ready({"": "it exited at start"})))
        except (TimeoutError, msgspec.DecodeError) as exc:
            ready = Ready({"": f"it did not start: {exc}"})
        assert isinstance(ready, Ready)
        if ready.failed:
            ours.close()
            self._proc.kill()
            self._proc.wait()
            searched = ", ".join(self.config.env_path)
            why = "; ".join(f"--preload {name}: {error}" if name else error for name, error in ready.failed.items())
            raise ConfigError(f"the env forkserver could not import what it needs: {why} "
                              f"(searched the env path {searched} and the installed packages)")
        ours.setblocking(False)
        self._sock = ours

    def adopt(self) -> None:
        """Read the control socket on the running event loop."""
        assert self._sock is not None
        asyncio.get_running_loop().add_reader(self._sock, self._on_readable)

    async def spawn(self, pipe_end: socket.socket, output_end: socket.socket) -> int:
        """Fork an env process that talks on `pipe_end` and writes to `output_end`; its pid."""
        if self._sock is None:  # it ended (env code as root may kill it): start a new one
            await asyncio.get_running_loop().run_in_executor(None, self.start)
            self.adopt()
            log.warning("forkserver_restarted pid=%s", self._proc.pid if self._proc else None)
        assert self._sock is not None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawning.append(fut)
        socket.send_fds(self._sock, [encode(Spawn())], [pipe_end.fileno(), output_end.fileno()])
        return await fut

    def exit_of(self, pid: int) -> "asyncio.Future[int | None]":
        return self._exits[pid]

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            match decode_control(data):
                case Spawned(pid=pid):
                    self._exits[pid] = asyncio.get_running_loop().create_future()
                    fut = self._spawning.popleft()
                    if not fut.done():
                        fut.set_result(pid)
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
        self._close_socket()
        while self._spawning:
            fut = self._spawning.popleft()
            if not fut.done():
                fut.set_exception(ServerBusy("the env forkserver ended while starting this env; retry"))
        for fut in self._exits.values():
            if not fut.done():
                fut.set_result(None)
        self._exits.clear()

    def _close_socket(self) -> None:
        if self._sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._sock)
            except RuntimeError:
                pass  # no loop: never adopted
            self._sock.close()
            self._sock = None

    async def close(self) -> None:
        """End the forkserver: it sees its socket close and exits (its env processes are gone by now)."""
        self._end()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(None, proc.wait, 5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, 9)
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)
