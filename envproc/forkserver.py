"""The env forkserver: imports Gymnasium and the preloaded env modules once, then forks one env
process per request of the server and tells the server how each one ended.

The server starts it itself, whatever way the server was started, so an env process holds only
the env side: never the server's main module, nor Litestar (multiprocessing's own forkserver
imports the parent's main script in every child).
"""

import importlib
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from multiprocessing.connection import Connection

import msgspec

from envproc import guardian
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

# Every env process starts with these loaded, so creating one costs a fork, not an import.
BASE_PRELOAD = ("envproc.worker", "gymnasium.envs.classic_control", "gymnasium.envs.toy_text")
MAX_MESSAGE = 1 << 16
# Where env code runs as a user who cannot read the Python installation (say, under a home
# directory of mode 700), it can import only what is loaded before the fork: these then are.
STDLIB_FOR_ENVS = tuple("""
    encodings.idna encodings.utf_16 encodings.utf_32 encodings.latin_1 encodings.ascii encodings.cp1252
    encodings.utf_8_sig encodings.unicode_escape encodings.raw_unicode_escape encodings.punycode
    json socket ssl select selectors http.client urllib.request urllib.parse email.message email.parser
    csv pickle zlib gzip bz2 lzma tempfile shutil subprocess multiprocessing multiprocessing.pool
    multiprocessing.queues multiprocessing.synchronize multiprocessing.shared_memory threading queue
    concurrent.futures asyncio xml.etree.ElementTree decimal fractions statistics random hashlib hmac
    base64 binascii struct array copy inspect typing dataclasses enum functools itertools collections
    heapq bisect datetime calendar locale gettext logging logging.handlers traceback warnings weakref
    ctypes ctypes.util platform uuid glob fnmatch pathlib zipfile tarfile importlib.metadata
    importlib.resources pkgutil mmap operator string textwrap difflib pprint contextlib numbers cmath
    sqlite3 unicodedata codecs getpass argparse configparser tomllib secrets shlex
""".split())


def preload(modules: tuple[str, ...]) -> dict[str, str]:
    """Import each module; say why for each that failed (the server then refuses to start)."""
    failed = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # SystemExit too: a module's import must not end us
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _reap(sock: socket.socket, reapers: dict[int, int]) -> None:
    """Tell the server of every env process (or uid reaper) that has ended (SIGCHLD says only
    that some did)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in reapers:
            sock.send(encode(Reaped(reapers.pop(pid))))
        else:
            sock.send(encode(Exited(pid, os.waitstatus_to_exitcode(status))))


def _fork_env(fds: list[int], keep_out: list[int]) -> int:
    """Fork one env process on these two descriptors: its request pipe, and its output."""
    me = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        guardian.die_with_parent()  # we end with the server, and every env process with us
        if os.getppid() != me:  # we ended before prctl took effect
            os._exit(1)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in keep_out:
            os.close(fd)
        from envproc import worker

        worker.main(Connection(fds[0]), Connection(fds[1]))
        code = 0
    except SystemExit as exc:  # env code may call sys.exit(n): n is its exit code, as in any program
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _fork_reaper(uid: int, keep_out: list[int]) -> int:
    """Fork a process that becomes `uid` and kills every other process of it, until none is
    left: an env's own uid may then serve another env (its guardian does the same as the env
    ends, but env code can kill its guardian first)."""
    pid = os.fork()
    if pid:
        return pid
    try:
        signal.set_wakeup_fd(-1)
        for fd in keep_out:
            os.close(fd)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        guardian.die_with_parent()  # set after the change of user, which clears it
        for _ in range(1000):
            try:
                os.kill(-1, signal.SIGKILL)  # every process this uid may signal, but this one
            except ProcessLookupError:
                break
            time.sleep(0.01)
            if not _alive_as(uid):  # zombies count for kill(-1) until reaped, but do nothing
                break
    finally:
        os._exit(0)


def _alive_as(uid: int) -> bool:
    """Whether any process but this one runs as `uid` and is not a zombie."""
    me = str(os.getpid())
    for name in os.listdir("/proc"):
        if name.isdigit() and name != me:
            try:
                if os.stat(f"/proc/{name}").st_uid != uid:
                    continue
                with open(f"/proc/{name}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                        return True
            except (OSError, IndexError):
                continue
    return False


def _answer(data: bytes, fds: list[int], flags: int, keep_out: list[int],
            reapers: dict[int, int]) -> Spawned | SpawnFailed | None:
    """Fork for one Spawn message, or say why not (or start a reaper for a Reap: answered when
    it ends); the message's descriptors are ours to close."""
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            return SpawnFailed("the forkserver got a malformed request")
        try:
            request = decode_control(data)
        except msgspec.DecodeError:
            return SpawnFailed("the forkserver got a malformed request")
        if isinstance(request, Reap):
            reapers[_fork_reaper(request.uid, keep_out)] = request.uid
            return None
        if not isinstance(request, Spawn) or len(fds) != 2:
            return SpawnFailed("the forkserver got a request it does not know")
        try:
            return Spawned(_fork_env(fds, keep_out))
        except OSError as exc:  # no pid or memory left: this create fails, the others live on
            return SpawnFailed(f"fork failed: {exc.strerror or exc}")
    finally:
        for fd in fds:
            os.close(fd)


def serve(sock: socket.socket) -> None:
    """Fork an env process for each Spawn until the server closes its end (then we end, and the
    parent-death signal takes every env process with us)."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that SIGCHLD writes to wake_w
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        keep_out = [sock.fileno(), wake_r, wake_w, selector.fileno()]
        reapers: dict[int, int] = {}  # pid -> the uid it reaps
        while True:
            for key, _ in selector.select():
                if key.fileobj == wake_r:
                    _drain(wake_r)
                    _reap(sock, reapers)
                    continue
                data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, 2)
                if not data and not fds:
                    return
                if (answer := _answer(data, fds, flags, keep_out, reapers)) is not None:
                    sock.send(encode(answer))


def main() -> None:
    config = msgspec.json.decode(sys.argv[1], type=ForkserverConfig)
    guardian.die_with_parent()  # even stopped, we must not outlive the server
    if config.parent and os.getppid() != config.parent:
        return  # it ended before prctl took effect
    guardian.adopt_orphans()  # guardians and helpers that outlive their env are reaped here, not left as zombies
    sock = socket.socket(fileno=int(sys.argv[2]))
    sys.argv = sys.argv[:1]
    # before the env path: nothing there may stand in for these
    failed = preload(BASE_PRELOAD + (STDLIB_FOR_ENVS if config.stdlib else ()))
    from envproc import worker

    worker.ENV_PATH = config.env_path
    sys.path[:0] = config.env_path
    failed |= preload(config.preload)
    sock.send(encode(Ready(failed)))
    if not failed:
        try:
            serve(sock)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server is gone
