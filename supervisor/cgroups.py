"""A pids cgroup per env where the machine offers one: a cap on its processes, and a list of
them all for the kill, helpers that left its process group included."""

import asyncio
import logging
import os
import signal
import threading
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

    def __init__(self, max_procs: int, max_procs_total: int = 0) -> None:
        self.max_procs = max_procs
        self.base: Path | None = None
        self._pending: set[str] = set()
        self._lock = threading.Lock()  # sweep runs in the watcher's thread; release on the loop
        root = _pids_root() if max_procs or max_procs_total else None
        if root is None:
            if max_procs or max_procs_total:
                log.warning("pids_limit_unavailable reason='no pids cgroup this process may use'")
            return
        _remove_stale(root)
        base = root / f"gym-supervisor-{os.getpid()}"
        try:
            base.mkdir(exist_ok=True)
            if root != V1_PIDS:  # cgroup v2: the env cgroups below get the pids controller only if asked
                (base / "cgroup.subtree_control").write_text("+pids")
            if max_procs_total:  # all envs together: the machine keeps pids for everything else
                (base / "pids.max").write_text(str(max_procs_total))
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
            if self.max_procs:
                (path / "pids.max").write_text(str(self.max_procs))
        except OSError as exc:
            log.warning("pids_limit_unavailable instance=%s reason=%r", instance_id, str(exc))
            return None
        return str(path)


    def release(self, path: str | None) -> None:
        """Remove an env's cgroup, now or, while its last processes are still being reaped, at a
        later sweep (the kernel refuses to remove a cgroup with members)."""
        if path is not None and not _rmdir(path):
            with self._lock:
                self._pending.add(path)

    def sweep(self) -> None:
        """Retry the removals the kernel refused so far."""
        with self._lock:
            pending = list(self._pending)
        removed = {p for p in pending if _rmdir(p)}
        with self._lock:
            self._pending -= removed

    async def close(self) -> None:
        """Remove this server's cgroups, retrying for a bounded while as the last members go."""
        if self.base is None:
            return
        base, self.base = self.base, None  # once: shutdown may close everything twice
        with self._lock:
            self._pending |= {str(p) for p in base.iterdir() if p.is_dir()}
        for _ in range(40):  # no event tells when a cgroup empties: look again, 2 s at most
            self.sweep()
            if not self._pending and _rmdir(str(base)):
                return
            await asyncio.sleep(0.05)
        log.warning("cgroups_left path=%s pending=%d", base, len(self._pending))


def _remove_stale(root: Path) -> None:
    """Remove the empty cgroups of servers that are gone (one killed with SIGKILL leaves its own)."""
    for base in root.glob("gym-supervisor-*"):
        pid = base.name.rsplit("-", 1)[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            for path in base.iterdir():
                if path.is_dir():
                    _rmdir(str(path))
            _rmdir(str(base))


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


def _rmdir(path: str) -> bool:
    """True if the cgroup is gone (removed now, or already)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
