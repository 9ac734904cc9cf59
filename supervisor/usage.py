"""What an env's process tree uses, read with psutil: blocking reads, so callers run them in a
thread, never on the event loop."""

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_pss(pid: int) -> int | None:
    """The memory a process tree holds, shared pages split among their sharers (PSS): forks of
    one env share most of their pages, which a sum of RSS would count once per process."""
    try:
        procs = _tree(pid)
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass  # it ended while we looked
    return total


def tree_usage(pid: int) -> tuple[float | None, int | None]:
    """CPU seconds (user + system) and resident memory of a process and all its descendants."""
    try:
        procs = _tree(pid)
    except psutil.Error:
        return None, None
    cpu, rss = 0.0, 0
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
        except psutil.Error:
            pass  # it ended while we looked
    return round(cpu, 3), rss


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
