"""Envs that fail on purpose, one failure each, for the server's tests.

Every env's reset returns its pid in info, so a test can check on (or kill) its process.
`signal_path`, where given, is a FIFO the env writes one byte to just before it misbehaves,
so a test can wait for the fault to be under way instead of sleeping.
"""

import ctypes
import importlib
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Base(gym.Env):
    observation_space = spaces.Discrete(3)
    action_space = spaces.Discrete(20)

    def __init__(self, signal_path: str | None = None) -> None:
        self.signal_path = signal_path

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return 0, {"pid": os.getpid()}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.announce()
        self.fault(action)
        return 1, 0.0, False, False, {}

    def announce(self) -> None:
        if self.signal_path:
            with open(self.signal_path, "w") as fifo:
                fifo.write("x")

    def fault(self, action: Any) -> None:
        pass


class Raises(Base):
    def fault(self, action: Any) -> None:
        raise ValueError(f"bad luck with action {action}")


class Segfaults(Base):
    def fault(self, action: Any) -> None:
        ctypes.string_at(0)


class Exits(Base):
    def fault(self, action: Any) -> None:
        os._exit(3)


class Spins(Base):
    def fault(self, action: Any) -> None:
        while True:
            pass


class IgnoresTerm(Base):
    def fault(self, action: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)


class Slow(Base):
    """Takes action/10 seconds to step, or `seconds` if given."""

    def __init__(self, signal_path: str | None = None, seconds: float | None = None) -> None:
        super().__init__(signal_path)
        self.seconds = seconds

    def fault(self, action: Any) -> None:
        time.sleep(int(action) / 10 if self.seconds is None else self.seconds)


class SpawnsHelpers(Base):
    """Starts a subprocess, a multiprocessing child and a bare fork at reset; their pids go in info.

    Its step faults by action: 1 segfaults, 2 spins, anything else is a plain step.
    """

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = super().reset(seed=seed)
        popen = subprocess.Popen(["sleep", "3600"])
        proc = multiprocessing.get_context("fork").Process(target=time.sleep, args=(3600,))
        proc.start()
        forked = os.fork()
        if forked == 0:
            time.sleep(3600)
            os._exit(0)
        info["helpers"] = [popen.pid, proc.pid, forked]
        return obs, info

    def fault(self, action: Any) -> None:
        if action == 1:
            ctypes.string_at(0)
        while action == 2:
            pass


class MemoryBomb(Base):
    """Allocates (and touches) 10 MB after 10 MB until something stops it."""

    def fault(self, action: Any) -> None:
        hoard = []
        while True:
            hoard.append(np.ones(10 * 2**20, np.uint8))


class HelperHog(Base):
    """Each of `action` helper processes holds 80 MB; the env itself stays small and waits."""

    def fault(self, action: Any) -> None:
        for _ in range(int(action)):
            if os.fork() == 0:
                held = np.ones(80 * 2**20, np.uint8)
                time.sleep(3600)
                os._exit(int(held[0]))
        time.sleep(3600)


class FileHog(Base):
    """Opens 10 x `action` files and keeps them."""

    def fault(self, action: Any) -> None:
        self.files = getattr(self, "files", [])
        for _ in range(10 * int(action)):
            self.files.append(open(os.devnull))


class ForkBomb(Base):
    """Forks until fork fails (at most 300 times); the children sleep. Info tells how many it got."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        forked = 0
        for _ in range(300):
            try:
                if os.fork() == 0:
                    time.sleep(3600)
                    os._exit(0)
            except OSError:
                break
            forked += 1
        return 1, 0.0, False, False, {"forked": forked}


class EscapesGroup(Base):
    """Spawns a helper that leaves the env's process group (setsid); its pid goes in reset's info."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = super().reset(seed=seed)
        info["helper"] = subprocess.Popen(["sleep", "3600"], start_new_session=True).pid
        return obs, info


class KillsGuardian(EscapesGroup):
    """Its reset also kills its guardian (same uid: it may), so only the server can clean up after it."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = super().reset(seed=seed)
        me = os.getpid()
        with open(f"/proc/{me}/task/{me}/children") as f:
            guardians = [int(pid) for pid in f.read().split() if int(pid) != info["helper"]]
        for pid in guardians:
            os.kill(pid, signal.SIGKILL)
        info["guardians"] = guardians
        return obs, info


class ListsFds(Base):
    """Its reset's info lists the descriptors the env process holds, with what each points to."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = super().reset(seed=seed)
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                pass  # the directory listing's own descriptor, closed already
        info["fds"] = fds
        return obs, info


class Floods(Base):
    """Writes `action` x 10 MB to stdout and as much to stderr, then a last line, then steps."""

    def fault(self, action: Any) -> None:
        block = ("x" * 1023 + "\n") * 1024
        for _ in range(10 * int(action)):
            sys.stdout.write(block)
            sys.stderr.write(block)
        print(f"flooded {action}", flush=True)


class PrintsThenCrashes(Base):
    def fault(self, action: Any) -> None:
        for i in range(100):
            print(f"line {i}")
        print("about to crash", file=sys.stderr)
        ctypes.string_at(0)


class Probes(Base):
    """Reports, in reset's info, who it runs as and what it can reach (each check is optional)."""

    def __init__(self, read: str | None = None, signal_pid: int | None = None, connect_port: int | None = None,
                 setns_pid: int | None = None, module: str | None = None, write: str | None = None) -> None:
        self.read, self.signal_pid, self.connect_port, self.setns_pid = read, signal_pid, connect_port, setns_pid
        self.module, self.write = module, write

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = super().reset(seed=seed)
        info.update(uid=os.getuid(), gid=os.getgid(), groups=os.getgroups(),
                    interfaces=[name for _, name in socket.if_nameindex()])
        status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
        info["caps"] = {k: int(status[k], 16) for k in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb")}
        info["rlimit_as"] = resource.getrlimit(resource.RLIMIT_AS)[0]  # -1: none
        info["no_new_privs"] = int(status["NoNewPrivs"])
        info["read"] = _outcome(lambda: open(self.read).read()) if self.read else None
        info["import"] = _outcome(lambda: importlib.import_module(self.module)) if self.module else None
        if self.write:  # a file of its own, that only its user may read
            fd = os.open(self.write, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, b"mine")
            os.close(fd)
        if self.setns_pid:  # the escape: into another process's network namespace (CAP_SYS_ADMIN)
            def setns() -> None:
                try:
                    ns = open(f"/proc/{self.setns_pid}/ns/net")
                except OSError as exc:
                    raise LookupError("open") from exc  # not even the namespace's file: told apart
                with ns:
                    if ctypes.CDLL(None, use_errno=True).setns(ns.fileno(), 0x40000000) != 0:
                        raise PermissionError(ctypes.get_errno(), "setns")
            info["setns"] = _outcome(setns)
        info["signal"] = _outcome(lambda: os.kill(self.signal_pid, 0)) if self.signal_pid else None
        if self.connect_port:
            info["connect"] = _outcome(lambda: socket.create_connection(("127.0.0.1", self.connect_port), 2).close())
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            info["own_loopback"] = _outcome(lambda: socket.create_connection(server.getsockname(), 2).close())
        return obs, info


def _outcome(check: Any) -> str:
    try:
        check()
    except Exception as exc:
        return type(exc).__name__
    return "ok"


class SwapsDirs(Base):
    """An attacker inside the data dir: its reset forks a helper that, for `seconds`, swaps the
    directory `place`/x with a symbolic link to `victim` as fast as it can (renameat2 with
    RENAME_EXCHANGE), so that a server following paths would work on `victim` instead."""

    def __init__(self, place: str = "", victim: str = "", seconds: float = 20.0) -> None:
        super().__init__()
        self.place, self.victim, self.seconds = place, victim, seconds

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = super().reset(seed=seed)
        real, link = os.path.join(self.place, "x"), os.path.join(self.place, "link")
        os.makedirs(real, exist_ok=True)
        if not os.path.islink(link):
            os.symlink(self.victim, link)
        libc = ctypes.CDLL(None, use_errno=True)
        pid = os.fork()
        if pid == 0:
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                libc.renameat2(-100, real.encode(), -100, link.encode(), 2)  # AT_FDCWD, RENAME_EXCHANGE
            os._exit(0)
        info["swapper"] = pid
        return obs, info


class HugeReply(Base):
    """Its step's info carries `action` MB of text: a reply as big as the env likes."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return 1, 0.0, False, False, {"blob": "x" * (int(action) * 2**20)}


class ReportsModules(Base):
    """Its reset says which modules of the server side its process holds (it must hold none)."""

    SERVER_SIDE = {"api", "supervisor", "litestar", "uvicorn", "anyio", "click", "yaml", "httptools", "uvloop"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = super().reset(seed=seed)
        info["server_modules"] = sorted({m.split(".")[0] for m in sys.modules} & self.SERVER_SIDE)
        info["modules"] = len(sys.modules)
        info["main"] = getattr(sys.modules["__main__"], "__file__", None)
        return obs, info


class HangsInInit(Base):
    def __init__(self, signal_path: str | None = None) -> None:
        super().__init__(signal_path)
        self.announce()
        time.sleep(3600)


class SlowMake(Base):
    """Takes `delay` seconds to be made (every time: a restart's make too)."""

    def __init__(self, signal_path: str | None = None, delay: float = 1.0) -> None:
        super().__init__(signal_path)
        time.sleep(delay)


class RaisesInInit(Base):
    def __init__(self, signal_path: str | None = None) -> None:
        raise RuntimeError("this env cannot be built")


class Structured(gym.Env):
    """Dict, Tuple, MultiDiscrete, MultiBinary and Text spaces; it echoes the action back."""

    action_space = spaces.Dict(
        {
            "move": spaces.MultiDiscrete([3, 4]),
            "aim": spaces.Tuple((spaces.Discrete(5, start=-2), spaces.Box(-1.0, 1.0, (2, 2), np.float32))),
        }
    )
    observation_space = spaces.Dict(
        {
            "echo": action_space,
            "flags": spaces.MultiBinary(4),
            "note": spaces.Text(max_length=8, charset="abc"),
        }
    )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))  # deterministic after a seeded reset
        return self.observation_space.sample(), {"pid": os.getpid(), "arr": np.arange(3), "x": np.float32(0.5)}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs = {"echo": action, "flags": np.array([1, 0, 1, 0], np.int8), "note": "abc"}
        return obs, 1.0, False, False, {"n": np.int64(7)}


class Image(gym.Env):
    """A uint8 image observation (84x84x3 unless `shape` says otherwise), as Atari-like envs give,
    of noise as varied as a real frame's pixels; it renders that observation."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    action_space = spaces.Discrete(4)

    def __init__(self, render_mode: str | None = None, shape: tuple[int, ...] = (84, 84, 3)) -> None:
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, tuple(shape), np.uint8)
        self.frame = np.zeros(tuple(shape), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.frame = self.np_random.integers(0, 256, self.frame.shape, dtype=np.uint8)
        return self.frame, {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.frame = self.frame + np.uint8(int(action) * 60)  # wraps around: still noise, a new frame
        return self.frame, 0.0, False, False, {}

    def render(self) -> np.ndarray:
        return self.frame


for _cls in (Raises, Segfaults, Exits, Spins, IgnoresTerm, Slow, SpawnsHelpers, MemoryBomb, HelperHog, FileHog, ForkBomb, EscapesGroup,
             KillsGuardian, ListsFds, Floods, PrintsThenCrashes, Probes, SwapsDirs, HugeReply, ReportsModules, HangsInInit, SlowMake, RaisesInInit, Structured, Image):
    gym.register(id=f"{_cls.__name__}-v0", entry_point=_cls, disable_env_checker=True)
