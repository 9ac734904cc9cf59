"""What envs' process trees use, and other facts of the machine: read from /proc and the envs'
cgroups. Blocking reads: the watcher runs them in a thread of its own, once a round, for every
env at once; requests read the result, never /proc."""

import os
from collections import defaultdict

import msgspec

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Usage(msgspec.Struct, frozen=True):
    cpu_seconds: float  # user + system, the whole tree
    rss_bytes: int  # resident pages, counted in each process that maps them
    pss_bytes: int | None = None  # proportional (shared pages split): read only where rss passes the limit


def usage_of_envs(envs: list[tuple[int, str | None, int]]) -> list[Usage | None]:
    """The usage of each env's process tree, given its pid, its cgroup (None: none; then its
    tree is found from one scan of /proc, whose parent links are read once for all envs) and
    its memory limit in bytes (0: none).

    One read of /proc/<pid>/stat per process gives CPU and RSS. RSS counts a page shared by
    forked helpers once in each, so it can only overstate: the costly PSS (a walk of the page
    tables) is read only for a tree whose RSS passes its limit, to tell whether it really does.
    """
    children = _children() if any(cgroup is None for _, cgroup, _ in envs) else {}
    out = []
    for pid, cgroup, limit in envs:
        pids = _cgroup_pids(cgroup) if cgroup else _tree(pid, children)
        used = _usage(pids)
        if used is not None and limit and used.rss_bytes > limit:
            used = Usage(used.cpu_seconds, used.rss_bytes, _pss(pids))
        out.append(used)
    return out


def _cgroup_pids(cgroup: str) -> list[int]:
    """Every process in an env's cgroup: its helpers too, even those that left its process group."""
    try:
        with open(os.path.join(cgroup, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # it ended while we looked
            out[ppid].append(int(name))
    return out


def _tree(pid: int, children: dict[int, list[int]]) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def _usage(pids: list[int]) -> Usage | None:
    cpu, rss, seen = 0.0, 0, False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        seen = True
        cpu += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        rss += int(fields[21]) * _PAGE
    return Usage(round(cpu, 3), rss) if seen else None


def _pss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                for line in f:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue  # it ended while we looked
    return total


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (None: not told here)."""
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def default_memory_mb() -> int:
    """The memory limit an env gets unless the admin says otherwise: a quarter of the machine's."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4 // 2**20


def default_max_procs() -> int:
    """Processes and threads all envs together may have unless the admin says otherwise: half
    of the machine's pids, so that a swarm of fork bombs leaves the rest to everything else."""
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read()) // 2
    except (OSError, ValueError):
        return 16384
