"""A pids cgroup per env where the machine offers one: a cap on its processes, and a list of
them all for the kill, helpers that left its process group included."""

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("gym_supervisor.cgroups")

V1_PIDS = Path("/sys/fs/cgroup/pids")
V2_ROOT = Path("/sys/fs/cgroup")
KILL_ROUNDS = 50  # a fork bomb may fork between our reading its list and our signal


def _pids_root() -> Path | None:
    """Where this process may make pids cgroups: the v1 pids hierarchy, or a v2 one that delegates pids."""
    if (V1_PIDS / "cgroup.procs").exists():
        return V1_PIDS
    try:
        own = Path(open("/proc/self/cgroup").read().strip().split("::", 1)[1].lstrip("/"))
        if "pids" in (V2_ROOT / own / "cgroup.subtree_control").read_text().split():
            return V2_ROOT / own
    except (OSError, IndexError):
        pass
    return None


class PidsCgroups:
    """Owns this server's cgroup directory and one child directory per env."""

    def __init__(self, max_procs: int) -> None:
        self.max_procs = max_procs
        self.base: Path | None = None
        root = _pids_root() if max_procs else None
        if root is None:
            if max_procs:
                log.warning("pids_limit_unavailable reason='no pids cgroup this process may use'")
            return
        base = root / f"gym-supervisor-{os.getpid()}"
        try:
            base.mkdir(exist_ok=True)
        except OSError as exc:
            log.warning("pids_limit_unavailable reason=%r", str(exc))
            return
        self.base = base

    def make(self, instance_id: str) -> str | None:
        if self.base is None:
            return None
        path = self.base / instance_id
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(self.max_procs))
        except OSError as exc:
            log.warning("pids_limit_unavailable instance=%s reason=%r", instance_id, str(exc))
            return None
        return str(path)


    def close(self) -> None:
        """Remove what is left of this server's cgroups (only empty ones can go)."""
        if self.base is None:
            return
        base, self.base = self.base, None  # once: shutdown may close everything twice
        for path in base.iterdir():
            if path.is_dir():
                remove(str(path))
        remove(str(base))


def kill_all(path: str) -> None:
    """SIGKILL every process in the cgroup until it is empty (or a bounded number of rounds)."""
    procs = Path(path) / "cgroup.procs"
    for _ in range(KILL_ROUNDS):
        try:
            pids = [int(p) for p in procs.read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def remove(path: str) -> None:
    """Remove an env's cgroup once its processes are gone (the kernel refuses before)."""
    try:
        os.rmdir(path)
    except OSError:
        pass
