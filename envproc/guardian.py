"""A watcher process that takes an env's whole process group down when the env process ends,
however it ends: closed, crashed, killed with SIGKILL, or orphaned by a server that was."""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
# Loaded once, at import: a forked child must not dlopen (another thread may have held its lock).
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl_pdeathsig(sig: int) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, sig)


PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> None:
    """Make this process the parent of its descendants that lose theirs (Linux): the machine's
    init may not reap them, and a zombie would hold its env's uid."""
    try:
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError):
        pass


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux); a no-op where prctl is missing."""
    try:
        _prctl_pdeathsig(signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def start(own_uid: bool = False) -> int:
    """Fork the guardian; call it in the env process after setsid() and before any env code.
    `own_uid`: the env has a uid no other process has, so every process of that uid is its own
    and goes too, even one that left both the process group and the session."""
    env_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:  # the guardian: hold none of the env's descriptors, wait for the env's end, end the group
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        _prctl_pdeathsig(signal.SIGTERM)
        if os.getppid() == env_pid:  # else the env died before prctl took effect
            signal.sigwait({signal.SIGTERM})
        if own_uid:
            os.kill(-1, signal.SIGKILL)  # every process this uid may signal: its own, but us
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(0)
